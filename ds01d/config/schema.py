"""What each config key may hold: one parser per key, raising ValueError with a
sentence an admin can act on.

The parsers take the value YAML constructed (str, int, float, bool, None, date,
list) and return the value the model stores.  Keeping them in one table per
section is what makes "every unknown key is an error" cheap to enforce.
"""

from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import Any, Callable, TypeVar

from ds01d.config.quantities import parse_cpus, parse_duration, parse_size

from .model import ForeignDevicePolicy, GpusAllPolicy, OutsideSlicePolicy, UnownedPolicy

Parser = Callable[[Any], Any]
E = TypeVar("E", bound=Enum)


def duration(value: Any) -> int:
    """A duration written with a unit (`30m`); YAML may hand us an int for `0`."""
    if value == 0 and not isinstance(value, bool):
        return 0
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like 30m, 48h or 7d, not {value!r}")
    return parse_duration(value)


def positive_duration(value: Any) -> int:
    seconds = duration(value)
    if seconds <= 0:
        raise ValueError("must be longer than 0s")
    return seconds


def nullable(parser: Parser) -> Parser:
    """`parser`, with `null` meaning never / unlimited."""
    def parse(value: Any) -> Any:
        return None if value is None else parser(value)
    parse.__doc__ = parser.__doc__
    return parse


def size(value: Any) -> int:
    if isinstance(value, float):
        raise ValueError(f"expected a size like 512M or 32G, not {value!r}")
    return parse_size(value)


def integer(low: int, high: int | None = None) -> Parser:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number, not {value!r}")
        if value < low or (high is not None and value > high):
            span = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ValueError(f"must be {span}, not {value}")
        return value
    return parse


def number(low: float, high: float | None = None) -> Parser:
    def parse(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number, not {value!r}")
        if value < low or (high is not None and value > high):
            span = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
            raise ValueError(f"must be {span}, not {value}")
        return float(value)
    return parse


def cpus(value: Any) -> float:
    return parse_cpus(value)


def text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, not {value!r}")
    return value


def name(value: Any) -> str:
    """A user or group name; YAML turns `1234` or `yes` into non-strings, so say so."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"names must be strings (quote {value!r})")
    if any(ch in value for ch in "/\0\n"):
        raise ValueError(f"name {value!r} contains '/', a newline or NUL")
    return value


def abs_path(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"expected an absolute path, not {value!r}")
    return value


def date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"expected a date like 2026-12-31, not {value!r}")


def command(value: Any) -> tuple[str, ...]:
    """An argv list whose first word is an absolute path (no shell, no PATH lookup)."""
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"expected a command as a list of strings, like [/usr/local/bin/notify, --to, admins], "
                         f"not {value!r}")
    abs_path(value[0])
    return tuple(value)


def choice(enum: type[E]) -> Callable[[Any], E]:
    def parse(value: Any) -> E:
        try:
            return enum(value)
        except ValueError:
            options = ", ".join(m.value for m in enum)  # type: ignore[attr-defined]
            raise ValueError(f"must be one of {options}, not {value!r}") from None
    return parse


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, not {value!r}")
    return value


def timestamp(value: Any) -> dt.datetime:
    """A date and time like 2026-11-01T09:00:00 (UTC unless it says otherwise)."""
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"expected a date and time like 2026-11-01T09:00:00, not {value!r}") from None
    else:
        raise ValueError(f"expected a date and time like 2026-11-01T09:00:00, not {value!r}")
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def device_list(value: Any) -> tuple[str, ...]:
    """GPU devices as --gpus names them: 0, "1:2", GPU-... or MIG-... UUIDs."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"expected a list of devices like [0, \"1:2\"], not {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, str)) or str(v).strip() == "":
            raise ValueError(f"a device is an index like 0, \"1:2\" or a UUID, not {v!r}")
        out.append(str(v))
    return tuple(out)


def duration_list(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise ValueError(f"expected a list of durations like [15m, 5m], not {value!r}")
    return tuple(sorted((positive_duration(v) for v in value), reverse=True))


def string_list(value: Any, item: Parser, example: str) -> tuple[str, ...]:
    """A list of strings, each checked by `item`; `[]` is a list too (nothing allowed)."""
    if not isinstance(value, list):
        raise ValueError(f"expected a list like {example}, not {value!r}")
    return tuple(item(v) for v in value)


def bind_root(value: Any) -> str:
    """`~` (the user's own home) or an absolute path, either with `:ro` (binds made read-only).
    A bare `~` is YAML's null: in this list it can only mean the home, so it is read so."""
    if value is None:
        return "~"
    if not isinstance(value, str):
        raise ValueError(f"a bind root is ~ or an absolute path, optionally with :ro, not {value!r}")
    path, sep, mode = value.partition(":")
    if sep and mode != "ro":
        raise ValueError(f"a bind root ends in :ro or nothing, not :{mode} ({value!r})")
    if path != "~":
        abs_path(path)
    return value


def capability(value: Any) -> str:
    """A Linux capability name, as `--cap-add` takes it (`SYS_PTRACE` or `CAP_SYS_PTRACE`)."""
    if not isinstance(value, str) or not value.replace("_", "").isalnum() or value.upper() == "ALL":
        raise ValueError(f"expected a capability name like SYS_PTRACE (ALL is not one), not {value!r}")
    return value.upper()


#: Keys of `defaults`, of each group and of each user override (besides their own keys).
SCALAR_PARSERS: dict[str, Parser] = {
    "cpus": nullable(cpus),
    "memory_max": nullable(size),
    "memory_high": nullable(size),
    "tasks_max": nullable(integer(1)),
    "container_cpus": nullable(cpus),
    "container_memory": nullable(size),
    "container_shm_size": nullable(size),
    "container_gpu_memory": nullable(size),
    "gpu_quota": nullable(number(0)),
    "max_containers": nullable(integer(0)),
    "priority": integer(0, 100),
    "allow_full_gpu": boolean,
    "allow_privileged": boolean,
    "allow_host_namespaces": boolean,
    "allow_host_network": boolean,
    "bind_roots": lambda value: string_list(value, bind_root, "[~, /data/shared:ro]"),
    "volume_drivers": lambda value: string_list(value, name, "[local]"),
    "allowed_devices": lambda value: string_list(value, abs_path, "[/dev/fuse]"),
    "cap_add": lambda value: string_list(value, capability, "[SYS_PTRACE]"),
    "allow_unconfined": boolean,
    "allow_unsafe_sysctls": boolean,
    "allow_low_ports": boolean,
    "log_drivers": lambda value: string_list(value, text, "[json-file, local, journald, none]"),
}

#: Lifecycle keys: a duration (for every kind) or a mapping kind -> duration.
LIFECYCLE_PARSER: Parser = nullable(duration)

DAEMON_PARSERS: dict[str, Parser] = {
    "sampling_interval": positive_duration,
    "state_dir": abs_path,
    "socket_path": abs_path,
    "admin_group": nullable(name),
    "show_other_users": boolean,
    "audit_retention": nullable(positive_duration),
    "metrics_file": nullable(abs_path),
}

POLICY_PARSERS: dict[str, Parser] = {
    "idle_threshold": number(0, 100),
    "idle_window": positive_duration,
    "grace_after_start": duration,
    "warning_lead_times": duration_list,
    "keep_alive_file": nullable(abs_path),
    "keep_alive_max_age": positive_duration,
    "gpus_all": choice(GpusAllPolicy),
    "unowned": choice(UnownedPolicy),
    "outside_slice": choice(OutsideSlicePolicy),
    "sigterm_grace": duration,
    "notify_command": nullable(command),
    "notify_timeout": positive_duration,
    "max_extension": nullable(duration),
    "allocation_timeout": positive_duration,
    "allocation_wait": duration,
    "allow_sharing": boolean,
    "foreign_device": choice(ForeignDevicePolicy),
}

GROUP_OWN_KEYS = ("members", "unix_group")
OVERRIDE_OWN_KEYS = ("reason", "expires", "group", "reserved_gpus", "reservation_start", "reservation_end")
TOP_LEVEL_KEYS = ("daemon", "policies", "defaults", "default_group", "groups", "user_overrides")
