"""Durations, sizes and CPU counts as admins write them in the config.

The seeds' lab writes `30m`, `48h`, `7d`, `32g`; Docker writes `512m`, systemd
`32G`.  One parser for each keeps the meaning the same everywhere, and the
formatters give back the shortest text that parses to the same value, so what
`ds01d limits` prints can be pasted into the config.
"""

from __future__ import annotations

import re

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_PART = re.compile(r"(\d+)([smhdw])")
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)


def parse_duration(text: str) -> int:
    """Seconds in `text` such as `90s`, `30m`, `1h30m`, `7d`.

    A bare number is refused: `30` could mean seconds or minutes, and guessing
    wrong stops someone's training run 60 times too early.
    """
    s = text.strip().lower()
    if not s:
        raise ValueError("empty duration; write it like 30m, 48h or 7d")
    pos, total = 0, 0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s):
        if s.lstrip("-").replace(".", "", 1).isdigit():
            raise ValueError(f"duration {text!r} has no unit; write it like 30m, 48h or 7d")
        raise ValueError(f"bad duration {text!r}; write it like 90s, 30m, 48h, 7d or 1h30m")
    return total


def format_duration(seconds: int) -> str:
    """The shortest `parse_duration` text for `seconds` (0 is `0s`)."""
    if seconds == 0:
        return "0s"
    parts = []
    rest = seconds
    for unit in ("d", "h", "m", "s"):  # 7d reads better than 1w
        size = _DURATION_UNITS[unit]
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts)


def parse_size(text: str | int) -> int:
    """Bytes in `text` such as `32G`, `32g`, `512M`, `1.5G` or a plain byte count.

    Units are binary (G = GiB) as in Docker and systemd.
    """
    if isinstance(text, bool):
        raise ValueError("a size must be a number of bytes or like 32G, not true/false")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"size {text} is negative")
        return text
    s = str(text).strip()
    if s.startswith("-"):
        raise ValueError(f"size {text!r} is negative")
    m = _SIZE.fullmatch(s)
    if not m:
        raise ValueError(f"bad size {text!r}; write it like 512M, 32G or 1T")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def format_size(n: int) -> str:
    """The largest whole unit for `n` bytes: 34359738368 -> `32G`."""
    for unit in ("T", "G", "M", "K"):
        size = _SIZE_UNITS[unit.lower()]
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def parse_cpus(value: object) -> float:
    """A positive CPU count (`8`, `0.5`); strings are refused so typos stay visible."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"CPUs must be a number like 8 or 0.5, not {value!r}")
    if value <= 0:
        raise ValueError(f"CPUs must be more than 0, not {value}")
    return float(value)


def format_cpus(cpus: float) -> str:
    """`8.0` -> `8`, `0.5` -> `0.5`."""
    return f"{cpus:g}"
