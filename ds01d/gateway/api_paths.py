"""A request target read the way dockerd 20.10 routes it, so that the rules judge what
the engine will execute.

dockerd's router (gorilla/mux) matches the percent-decoded path (`%2F` is a `/` there)
against each route twice, as `/v{version:[0-9.]+}<route>` and as `<route>`.  A path that
is not clean (`//`, `.` or `..` segments) is not routed at all: mux answers 301 to the
cleaned path, which the client may follow with a request of its own.  The version is
compared numerically part by part (`1.041` is `1.41`; a missing part is 0).

Here the decoded path must already be clean and its version prefix exactly `<n>.<n>`;
anything else (a bad escape, a control character, bytes that are not UTF-8, an
unclean path, `/v1.41.0/`, `/v./`) is refused rather than guessed at, since no Docker
client sends it.  Forms that dockerd does not route (`/V1.41/...`, `/v1.41` alone) are
passed through as plain paths: dockerd answers them 404 itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PREFIX = re.compile(r"/v([0-9.]+)(/.*)", re.DOTALL)   # dockerd's versionMatcher, then a route
_VERSION = re.compile(r"([0-9]+)\.([0-9]+)")
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BadTarget(ValueError):
    """The target cannot be read unambiguously; the message is one sentence for the client."""


@dataclass(frozen=True)
class Target:
    """What dockerd routes: the decoded clean path without its version prefix."""

    path: str
    query: str
    api_version: str | None


def parse_target(target: str) -> Target:
    """Split and decode a request target (origin form) as dockerd's router reads it."""
    if not target.startswith("/"):
        raise BadTarget(f"the request target {target[:80]!r} is not a path")
    raw_path, _, query = target.partition("?")
    path = decode_path(raw_path)
    if clean_path(path) != path:
        raise BadTarget(f"the path {path[:200]!r} is not in canonical form "
                        f"(dockerd would redirect it to {clean_path(path)[:200]!r})")
    match = _PREFIX.fullmatch(path)
    if match is None:
        return Target(path, query, None)
    return Target(match.group(2), query, api_version(match.group(1)))


def decode_path(raw: str) -> str:
    """Percent-decode strictly (every `%` followed by two hex digits, as Go requires), then
    refuse what a Python string cannot hold faithfully or a route name should never have."""
    data = raw.encode("utf-8", "surrogateescape")
    if data.count(b"%") != len(_ESCAPE.findall(data)):
        raise BadTarget(f"the path {raw[:200]!r} has a malformed percent escape")
    decoded = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), data)
    try:
        path = decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise BadTarget(f"the path {raw[:200]!r} does not decode to UTF-8") from None
    if _CONTROL.search(path):
        raise BadTarget(f"the path {raw[:200]!r} contains a control character")
    return path


def clean_path(path: str) -> str:
    """Go's path.Clean as gorilla/mux applies it: one `/` between segments, no `.`, `..`
    resolved (never above the root), a trailing `/` kept."""
    out: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    cleaned = "/" + "/".join(out)
    if path.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned


def api_version(text: str) -> str:
    """`1.41` from the prefix; dockerd compares the parts as numbers, so leading zeros go."""
    match = _VERSION.fullmatch(text)
    if match is None:
        raise BadTarget(f"the API version {text!r} is not of the form 1.41")
    return f"{int(match.group(1))}.{int(match.group(2))}"
