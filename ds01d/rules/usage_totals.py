"""Per-user GPU totals since ds01d began keeping them: the metrics' counters, pure.

Counted from the state database's `usage` table at start and added to with each pass's
figures, so the counters go on where the last daemon left them (a restart is not a
counter reset) and agree with `ds01d usage`.  A sum of the same figures in another order
can come out a rounding error lower, which Prometheus would take for a reset and count the
whole total again: so the totals last exported are kept too (`as_json`, in the same
transaction as the figures) and the counters start from the higher of the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import json
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

    def as_json(self) -> str:
        return json.dumps({user: [t.gpu_seconds[s] for s in STATES] + [t.energy_joules, t.unmetered_seconds]
                           for user, t in self.users.items()}, separators=(",", ":"))

    def raise_to(self, saved: str | None) -> "UsageTotals":
        """Each total at least what `as_json` saved (unreadable: ignored, the sums stand)."""
        try:
            rows = json.loads(saved or "{}")
        except ValueError:
            return self
        for user, values in rows.items() if isinstance(rows, dict) else ():
            if not (isinstance(values, list) and len(values) == 5 and all(isinstance(v, (int, float)) for v in values)):
                continue
            total = self.users.setdefault(str(user), UserTotal())
            for state, value in zip(STATES, values):
                total.gpu_seconds[state] = max(total.gpu_seconds[state], float(value))
            total.energy_joules = max(total.energy_joules, float(values[3]))
            total.unmetered_seconds = max(total.unmetered_seconds, float(values[4]))
        return self

    def add(self, user: str, group: str | None, state: str, gpu_seconds: float, joules: float,
            unmetered: float) -> None:
        total = self.users.setdefault(user, UserTotal(group))
        total.group = group or total.group
        key = state if state in STATES else "unknown"
        total.gpu_seconds[key] += gpu_seconds
        total.energy_joules += joules
        total.unmetered_seconds += unmetered
