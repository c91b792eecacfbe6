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


class DecisionLog:
    """Records decisions; one call is one journal entry and one audit row."""

    def __init__(self, store: Store, send: JournalSend = journald_send, clock: Clock = time.time):
        self.store = store
        self.send = send
        self.clock = clock

    def record(self, action: str, reason: str, *, user: str | None = None, container: str | None = None,
               name: str | None = None, group: str | None = None, slice_name: str | None = None,
               priority: int = syslog.LOG_INFO, details: dict[str, Any] | None = None) -> None:
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
