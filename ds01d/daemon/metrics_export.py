"""ds01d's metrics, written after every sampling pass for node_exporter's textfile collector.

The daemon feeds this module what only it sees happen: every decision it records (through
the decision log's hook, before any throttling, so a flood of refusals is counted even
where the journal summarises it), the gateway's refusals (`POST /v1/refused`, root only),
and its own timings.  `write` gathers the rest from the published status view and
renders `metrics_model.families` to `daemon.metrics_file`.  A file that cannot be written
is said once in the journal per distinct problem, never every pass.
"""

from __future__ import annotations

import re
import socket
import syslog
import time
from typing import Any, Mapping, Protocol

import ds01d
from ds01d.config import Config
from ds01d.daemon.gpu_watch import GpuWatch
from ds01d.daemon.metrics_model import Health, MetricsInput, SliceUsage, families
from ds01d.daemon.status_model import StatusView
from ds01d.host.decision_log import DecisionLog
from ds01d.host.metrics_file import exposition, write_atomically
from ds01d.host.slice_usage import slice_usage
from ds01d.rules.limits import EffectiveLimits
from ds01d.rules.usage_totals import UsageTotals

#: A reason or rule as a label value: short and plain (a hostile value cannot make new series
#: without end: there are at most MAX_LABELS of them per family).
LABEL_VALUE = re.compile(r"[a-z0-9_.-]{1,48}")
MAX_LABELS = 64


class Tally:
    """Counts of decisions since ds01d started: (family, rule/reason/outcome) -> n."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def decision(self, action: str, details: Mapping[str, Any] | None) -> None:
        """One decision the daemon recorded (`DecisionLog.record`'s action and details)."""
        rule = str((details or {}).get("rule") or "")
        if action.startswith("warn-"):
            self.count("ds01_warnings_total", action.removeprefix("warn-"))
        elif action == "stop":
            self.count("ds01_stops_total", rule or "other")
        elif action == "remove":
            self.count("ds01_removals_total", rule or "container_hold_after_stop")
        elif action in ("allocate", "allocate-timeout", "allocate-refused"):
            self.count("ds01_allocations_total", {"allocate": "served", "allocate-timeout": "timed_out",
                                                  "allocate-refused": "refused"}[action])

    def count(self, family: str, value: str, n: int = 1) -> bool:
        """Add `n`; False (not counted) for a value that is no label or one too many."""
        value = value.lower().replace("-", "_")
        if not LABEL_VALUE.fullmatch(value):
            return False
        key = (family, value)
        if key not in self.counts and sum(1 for f, _ in self.counts if f == family) >= MAX_LABELS:
            return False
        self.counts[key] = self.counts.get(key, 0) + n
        return True


class DaemonFacts(Protocol):
    """What the export reads of the daemon."""

    config: Config
    gpus: GpuWatch
    log: DecisionLog
    last_alive: float
    item_failures: int

    def limits_for(self, owner: str | None) -> EffectiveLimits: ...


class MetricsExport:
    def __init__(self, daemon: DaemonFacts):
        self.daemon = daemon
        self.tally = Tally()
        self.hostname = socket.gethostname()
        self.reconcile_seconds: float | None = None
        self.event_lag: float | None = None
        self.reload: tuple[bool, float] | None = None
        self._said: str | None = None

    def write(self, view: StatusView) -> None:
        path = self.daemon.config.daemon.metrics_file
        if path is None:
            return
        data = exposition(families(self.gather(view)))
        try:
            write_atomically(path, data, private=not self.daemon.config.daemon.show_other_users)
        except OSError as exc:
            problem = f"cannot write the metrics to {path}: {exc.strerror or exc}"
            if problem != self._said:
                self._said = problem
                self.daemon.log.record("metrics", problem + " (daemon.metrics_file; said once)",
                                       priority=syslog.LOG_WARNING)
            return
        self._said = None

    def gather(self, view: StatusView) -> MetricsInput:
        d = self.daemon
        owners = {r.owner for r in view.records if r.owner}
        limits = {owner: d.limits_for(owner) for owner in owners}
        slices = {owner: SliceUsage(*slice_usage(lim.slice)) for owner, lim in limits.items()}
        gpus = d.gpus
        health = Health(ds01d.__version__, d.last_alive or None, gpus.pass_seconds, self.reconcile_seconds,
                        self.event_lag, gpus.nvml is not None and gpus.nvml_answered,
                        None if self.reload is None else self.reload[0], None if self.reload is None else self.reload[1],
                        d.item_failures)
        now = time.time()
        reservations = sum(1 for o in d.config.overrides.values()
                           if o.reservation is not None and o.reservation.active(now))
        return MetricsInput(self.hostname, view, health, {o: lim.group for o, lim in limits.items()},
                            gpus.usage_totals if gpus.usage_totals is not None else UsageTotals(), slices,
                            dict(self.tally.counts),
                            {gpu: value is not None for gpu, value in gpus.energy_readings.items()}, reservations,
                            d.config.policies.idle_threshold)
