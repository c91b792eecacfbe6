"""The arguments of the socket's actions, checked where they come in.

Any local user can send any JSON to the status socket.  Each action's body is turned
here into a small typed value, or refused with one sentence (HTTP 400), in the socket's
thread; the main loop only ever sees values that passed.  JSON gives floats, NaN,
booleans (which Python counts as ints), lists and huge numbers where a count is
expected: each is refused by name, never coerced.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Callable, Union

from ds01d.rules.usage_window import DATE, DEFAULT_SINCE_S, MAX_BACK_S, USAGE_KEYS, Point

MAX_COUNT = 64
MAX_WAIT_S = 24 * 3600             # an allocation request waits a day at most
MAX_EXTEND_S = 30 * 24 * 3600      # one extension pushes a stop by a month at most
MAX_USAGE_S = MAX_BACK_S           # ten years of usage at most
MAX_CONTAINER_REF = 128            # Docker names are far shorter; ids are 64 hex digits
#: Login names as useradd(8) allows them by default (and at most 32 characters).
USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,30}[a-z0-9_$-]?")
REASON = re.compile(r"[a-z0-9_]{1,48}")


class BadRequest(ValueError):
    """The request's body is not what the action takes; str(exc) is the one sentence."""


@dataclass(frozen=True)
class AllocateArgs:
    """`POST /v1/allocate`: for whom, how many units, a whole GPU or not, how long to wait."""

    user: str | None = None
    count: int = 1
    full: bool = False
    wait_s: int | None = None      # None: the config's allocation_wait
    #: Devices the container names (`--gpus device=...`): where they are this user's own
    #: pending allocation (`ds01 run` asked for it first), that allocation is the answer.
    devices: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReleaseArgs:
    """`POST /v1/release`: end the hold of a container (name or id prefix)."""

    container: str


@dataclass(frozen=True)
class ExtendArgs:
    """`POST /v1/extend`: push a container's next stop by `seconds`."""

    container: str
    seconds: int


@dataclass(frozen=True)
class UsageArgs:
    """`POST /v1/usage`: GPU time per user or group (`by`; non-admins: as shown) on the days
    from `since_s` seconds ago or the date `since`, up to `until_s` seconds ago or up to
    (not including) the date `until`; no until is now.  Each end comes one way only, so a
    body never says two things and has one of them quietly win."""

    since_s: int | None = None
    since: dt.date | None = None
    until_s: int | None = None
    until: dt.date | None = None
    by: str = "user"

    def __post_init__(self) -> None:
        for seconds, date, name in ((self.since_s, self.since, "since"), (self.until_s, self.until, "until")):
            if seconds is not None and date is not None:
                raise BadRequest(f"give {name}_s or {name}, not both")

    def since_point(self) -> Point:
        """The report's first day, as usage_window takes it (30 days back unless asked)."""
        if self.since is not None:
            return self.since
        return DEFAULT_SINCE_S if self.since_s is None else self.since_s

    def until_point(self) -> Point | None:
        """The report's end, as usage_window takes it (None: now)."""
        return self.until if self.until is not None else self.until_s


@dataclass(frozen=True)
class AdmitArgs:
    """`POST /v1/admit`: the gateway (root) asks what a caller's new container gets (`build`:
    a build's containers, which need the slice but are not counted as the caller's containers)."""

    uid: int
    build: bool = False


@dataclass(frozen=True)
class FreeArgs:
    """`POST /v1/free`: give back an allocation no container will claim (a create that failed)."""

    id: int


@dataclass(frozen=True)
class RefusedArgs:
    """`POST /v1/refused`: the gateway (root) counts a create it refused, by reason (the metrics)."""

    reason: str
    count: int = 1


@dataclass(frozen=True)
class ReloadArgs:
    """`POST /v1/reload`: read the config file again (root and admins; what ExecReload runs)."""


ActionArgs = Union[AllocateArgs, ReleaseArgs, ExtendArgs, ReloadArgs, UsageArgs, AdmitArgs, FreeArgs, RefusedArgs]


def whole_number(name: str, low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequest(f"{name} must be a whole number from {low} to {high}, not {_kind(value)}")
        if not low <= value <= high:
            shown = value if abs(value) < 10**12 else "a number that large"
            raise BadRequest(f"{name} must be a whole number from {low} to {high}, not {shown}")
        return value
    return check


def flag(name: str) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        if not isinstance(value, bool):
            raise BadRequest(f"{name} must be true or false, not {_kind(value)}")
        return value
    return check


def reason_name(value: Any) -> str:
    if not isinstance(value, str) or not REASON.fullmatch(value):
        raise BadRequest("reason must be a rule's name (lower-case letters, digits and '_', at most 48 characters)")
    return value


def utc_date(name: str) -> Callable[[Any], dt.date]:
    def check(value: Any) -> dt.date:
        if not isinstance(value, str):
            raise BadRequest(f"{name} must be a UTC date written like 2026-10-01, not {_kind(value)}")
        if not DATE.fullmatch(value):
            raise BadRequest(f"{name} must be a UTC date written like 2026-10-01")
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise BadRequest(f"{name} must be a UTC date written like 2026-10-01, and {value} is no day") from None
    return check


def one_of(name: str, choices: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            said = "" if isinstance(value, str) else f", not {_kind(value)}"   # never echo the text
            raise BadRequest(f"{name} must be {' or '.join(repr(c) for c in choices)}{said}")
        return value
    return check


def user_name(value: Any) -> str:
    if not isinstance(value, str) or not USER_NAME.fullmatch(value):
        raise BadRequest("user must be a login name (lower-case letters, digits, '_' and '-', "
                         "at most 32 characters)")
    return value


def container_ref(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise BadRequest(f"container must be a container's name or id, not {_kind(value)}")
    if len(value) > MAX_CONTAINER_REF or not value.isprintable():
        raise BadRequest("container must be a container's name or id (printable, at most "
                         f"{MAX_CONTAINER_REF} characters)")
    return value


def device_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_COUNT or \
            not all(isinstance(v, str) and 0 < len(v) <= MAX_CONTAINER_REF and v.isprintable() for v in value):
        raise BadRequest(f"devices must be a list of at most {MAX_COUNT} device indexes or UUIDs")
    return tuple(value)


# action -> (the value's type, its fields: name -> (check, required))
_ACTIONS: dict[str, tuple[type, dict[str, tuple[Callable[[Any], Any], bool]]]] = {
    "allocate": (AllocateArgs, {"user": (user_name, False),
                                "count": (whole_number("count", 1, MAX_COUNT), False),
                                "full": (flag("full"), False),
                                "wait_s": (whole_number("wait_s", 0, MAX_WAIT_S), False),
                                "devices": (device_list, False)}),
    "release": (ReleaseArgs, {"container": (container_ref, True)}),
    "extend": (ExtendArgs, {"container": (container_ref, True),
                            "seconds": (whole_number("seconds", 1, MAX_EXTEND_S), True)}),
    "reload": (ReloadArgs, {}),
    "admit": (AdmitArgs, {"uid": (whole_number("uid", 0, 2**32 - 2), True), "build": (flag("build"), False)}),
    "free": (FreeArgs, {"id": (whole_number("id", 1, 2**62), True)}),
    "refused": (RefusedArgs, {"reason": (reason_name, True), "count": (whole_number("count", 1, 1_000_000), False)}),
    "usage": (UsageArgs, {"since_s": (whole_number("since_s", 0, MAX_USAGE_S), False),
                          "since": (utc_date("since"), False),
                          "until_s": (whole_number("until_s", 0, MAX_USAGE_S), False),
                          "until": (utc_date("until"), False),
                          "by": (one_of("by", USAGE_KEYS), False)}),
}
ACTIONS = tuple(_ACTIONS)


def parse_args(action: str, body: Any) -> ActionArgs:
    """The checked arguments of `action` from a decoded JSON body; BadRequest if not."""
    kind, fields = _ACTIONS[action]
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object, not {_kind(body)}")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        takes = ", ".join(sorted(fields)) or "no arguments"
        raise BadRequest(f"{action} takes {takes}; not {unknown[0]!r}"[:200])
    values = {}
    for name, (check, required) in fields.items():
        if body.get(name) is None:
            if required:
                raise BadRequest(f"{action} needs {name}")
            continue
        values[name] = check(body[name])
    return kind(**values)


def _kind(value: Any) -> str:
    """What a JSON value is, in words (never the value itself: it may be huge or hostile)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return "a fraction" if value == value and abs(value) != float("inf") else "NaN or infinity"
    return {int: "a number", str: "a string", list: "a list", dict: "an object"}.get(type(value), "a value")
