"""sd_notify for the daemon: READY, WATCHDOG, STATUS, RELOADING, STOPPING.

A no-op outside systemd (no NOTIFY_SOCKET), so the daemon runs the same under a
test harness or in a terminal.
"""

from __future__ import annotations

import os
import time

import sdnotify


class Notifier:
    """Rate-limits watchdog pings to a quarter of WatchdogSec, and STATUS to changes."""

    def __init__(self) -> None:
        self._sd = sdnotify.SystemdNotifier()
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        self.watchdog_interval = usec / 4e6 if usec else None
        self._last_ping = 0.0
        self._last_status = ""

    def ready(self) -> None:
        self._sd.notify("READY=1")

    def reloading(self) -> None:
        self._sd.notify("RELOADING=1")

    def stopping(self) -> None:
        self._sd.notify("STOPPING=1")

    def status(self, text: str) -> None:
        if text != self._last_status:
            self._last_status = text
            self._sd.notify(f"STATUS={text}")

    def watchdog(self) -> None:
        now = time.monotonic()
        if self.watchdog_interval is not None and now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self._sd.notify("WATCHDOG=1")
