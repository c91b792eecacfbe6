"""Every decision ds01d takes, told twice: to journald with structured fields, and
to the audit table.

The fields (DS01_USER, DS01_CONTAINER, DS01_ACTION, DS01_REASON, DS01_GROUP,
DS01_SLICE) are what make `journalctl -u ds01d DS01_USER=alice` answer "what did
ds01d do to alice"; the audit table answers the same after the journal rotated.
"""

from __future__ import annotations

import sys
import syslog
import time
from typing import Any, Callable, Protocol

from ds01d.host.state_db import Store
from ds01d.rules.safe_text import printable

JournalSend = Callable[..., None]


def journald_send(message: str, **fields: Any) -> None:
    """systemd.journal.send, falling back to stderr where there is no journald."""
    try:
        from systemd import journal
        journal.send(message, SYSLOG_IDENTIFIER="ds01d", **fields)
    except (ImportError, OSError):
        print(message, file=sys.stderr, flush=True)


class Clock(Protocol):
    def __call__(self) -> float: ...


class Throttle:
    """At most `burst` entries per (action, user) in any `window` seconds.

    What a user provokes at will (allocation refusals, waits) must not flood the journal and
    the audit trail, which are everyone's: beyond the burst, entries are counted, and the next
    one let through says how many were left out."""

    def __init__(self, burst: int = 5, window: float = 60.0):
        self.burst, self.window = burst, window
        self.seen: dict[tuple[str, str | None], list[float]] = {}
        self.left_out: dict[tuple[str, str | None], int] = {}

    def admit(self, action: str, user: str | None, now: float) -> int | None:
        """None: leave this one out; else how many like it were left out before it."""
        key = (action, user)
        recent = [t for t in self.seen.get(key, ()) if t > now - self.window]
        if len(recent) >= self.burst:
            self.seen[key] = recent
            self.left_out[key] = self.left_out.get(key, 0) + 1
            return None
        self.seen[key] = recent + [now]
        if len(self.seen) > 10_000:   # forget quiet keys rather than grow without bound
            self.seen = {k: v for k, v in self.seen.items() if v and v[-1] > now - self.window}
        return self.left_out.pop(key, 0)


class DecisionLog:
    """Records decisions; one call is one journal entry and one audit row."""

    def __init__(self, store: Store, send: JournalSend = journald_send, clock: Clock = time.time):
        self.store = store
        self.send = send
        self.clock = clock
        self.throttle = Throttle()
        #: Told of every decision before throttling (the metrics count them all).
        self.on_record: Callable[[str, dict[str, Any] | None], None] = lambda action, details: None

    def record(self, action: str, reason: str, *, user: str | None = None, container: str | None = None,
               name: str | None = None, group: str | None = None, slice_name: str | None = None,
               priority: int = syslog.LOG_INFO, details: dict[str, Any] | None = None,
               throttled: bool = False) -> None:
        """Journal and audit one decision; `throttled` for what a user can provoke at will."""
        self.on_record(action, details)
        if throttled:
            left_out = self.throttle.admit(action, user, self.clock())
            if left_out is None:
                return
            if left_out:
                reason += f" (and {left_out} more like this before it, not recorded one by one)"
        subject = name or (container[:12] if container else None) or user or "ds01d"
        fields: dict[str, Any] = {"PRIORITY": priority, "DS01_ACTION": action, "DS01_REASON": reason}
        for key, value in (("DS01_USER", user), ("DS01_CONTAINER", container), ("DS01_CONTAINER_NAME", name),
                           ("DS01_GROUP", group), ("DS01_SLICE", slice_name)):
            if value:
                fields[key] = value
        # The journal is read on admins' terminals: no raw escape sequence from a name or label.
        shown = {k: printable(v) if isinstance(v, str) else v for k, v in fields.items()}
        self.send(printable(f"{action} {subject}: {reason}"), **shown)
        self.store.add_audit(self.clock(), action, reason, user=user, container=container, container_name=name,
                             group=group, slice_name=slice_name, details=details)
