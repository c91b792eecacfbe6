"""Per-user GPU totals since ds01d began keeping them: the metrics' counters, pure.

Counted from the state database's `usage` table at start and added to with each pass's
figures, so the counters go on where the last daemon left them (a restart is not a
counter reset) and agree with `ds01d usage`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

STATES = ("busy", "idle", "unknown")


@dataclass
class UserTotal:
    group: str | None = None
    gpu_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STATES, 0.0))
    energy_joules: float = 0.0
    unmetered_seconds: float = 0.0


class UsageTotals:
    """user -> UserTotal."""

    def __init__(self) -> None:
        self.users: dict[str, UserTotal] = {}

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]]) -> "UsageTotals":
        """From `GpuStore.usage_totals()` rows."""
        totals = cls()
        for row in rows:
            user = totals.users.setdefault(row["user"], UserTotal(row["grp"]))
            for state in STATES:
                user.gpu_seconds[state] += float(row[f"{state}_s"] or 0)
            user.energy_joules += float(row["energy_j"] or 0)
            user.unmetered_seconds += float(row["unmetered_s"] or 0)
        return totals

    def add(self, user: str, group: str | None, state: str, gpu_seconds: float, joules: float,
            unmetered: float) -> None:
        total = self.users.setdefault(user, UserTotal(group))
        total.group = group or total.group
        key = state if state in STATES else "unknown"
        total.gpu_seconds[key] += gpu_seconds
        total.energy_joules += joules
        total.unmetered_seconds += unmetered
