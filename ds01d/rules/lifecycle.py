"""When a GPU container is warned, stopped, released or removed: pure rules with an injected clock.

The daemon feeds these functions what it measured and what it persisted
(idle_since, stop times from Docker's State.FinishedAt, warnings already sent)
and carries out the answer.  Because every deadline is computed from persisted
timestamps, a restarted daemon arrives at the same deadlines as the one it
replaced.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Iterable, Mapping, Sequence

from ds01d.rules.gpu_units import Unit, UnitSample, attributable_activity, gpu_equivalents
from ds01d.config.quantities import format_duration

BUSY, IDLE, UNKNOWN = "busy", "idle", "unknown"


@dataclass(frozen=True)
class Verdict:
    """How one container uses its GPUs at one pass."""

    state: str                 # busy, idle or unknown
    activity: float | None     # highest attributable activity over its units
    why: str


def verdict(units: Sequence[Unit], samples: Mapping[str, UnitSample], pids: Iterable[int],
            threshold: float, missing: Sequence[str] = ()) -> Verdict:
    """Busy if any unit shows activity at or above `threshold` that is this container's;
    unknown if some unit it may compute on cannot be measured, or a device it asked for
    is not in NVML's inventory now (`missing`); idle otherwise."""
    pids = list(pids)
    readings = [(None, f"{ident}: not in NVML's inventory now") for ident in missing]
    for unit in units:
        sample = samples.get(unit.uuid)
        if sample is None:
            readings.append((None, f"{unit.index}: not sampled"))
            continue
        activity, how = attributable_activity(sample, pids, threshold)
        readings.append((activity, f"{unit.index}: {how}"))
    known = [a for a, _ in readings if a is not None]
    if known and max(known) >= threshold:
        return Verdict(BUSY, max(known), "; ".join(w for a, w in readings if a is not None and a >= threshold))
    unknown = [w for a, w in readings if a is None]
    if unknown:
        return Verdict(UNKNOWN, None, "; ".join(unknown))
    return Verdict(IDLE, max(known) if known else 0.0, "; ".join(w for _, w in readings) or "no GPU units")


@dataclass(frozen=True)
class IdleState:
    """Per container: since when it has been idle (moved on by the time it was unknown), the
    recent activity the average runs over, and when it was last judged."""

    idle_since: float | None = None
    recent: tuple[tuple[float, float], ...] = ()
    judged_at: float | None = None


def track_idle(state: IdleState, v: Verdict, now: float, window: int, threshold: float) -> IdleState:
    """The idle clock runs while activity averaged over `window` stays below `threshold`.

    Averaging keeps a single busy sample from resetting a long idle spell and a
    single quiet sample from starting one.  Unknown activity pauses the clock: the
    time it lasts counts neither as idle nor as busy, so an idle container whose
    activity is unknown now and then (the first GPM sample after every restart) still
    reaches its timeout, and one whose activity cannot be known is never stopped for it.
    """
    if v.state == UNKNOWN:
        paused = now - state.judged_at if state.judged_at is not None else 0.0
        idle_since = None if state.idle_since is None else state.idle_since + paused
        return IdleState(idle_since, state.recent, now)
    recent = tuple((t, a) for t, a in state.recent if t > now - window) + ((now, v.activity or 0.0),)
    mean = sum(a for _, a in recent) / len(recent)
    if mean >= threshold:
        return IdleState(None, recent, now)
    return IdleState(state.idle_since if state.idle_since is not None else now, recent, now)


@dataclass(frozen=True)
class Deadline:
    """A stop ds01d will carry out at `at` (epoch seconds, UTC), and why.

    The reason is written out only when asked for: most passes compute every
    deadline and need none of the sentences.
    """

    rule: str                  # idle or runtime
    at: float
    since: float               # idle since, or running since
    limit: int                 # the timeout that applies
    keepalive_until: float | None = None
    extended: int = 0          # seconds granted with `ds01d extend`

    @property
    def reason(self) -> str:
        if self.rule == "idle":
            text = f"GPU idle since {_hm(self.since)} (idle_timeout {_dur(self.limit)})"
            if self.keepalive_until is not None:
                text += f"; keep-alive file honoured until {_hm(self.keepalive_until)}"
        else:
            text = f"running since {_hm(self.since)} (max_runtime {_dur(self.limit)})"
        return text + (f"; extended by {_dur(self.extended)}" if self.extended else "")

    def extend(self, seconds: int) -> "Deadline":
        return replace(self, at=self.at + seconds, extended=self.extended + seconds) if seconds else self


def idle_deadline(idle_since: float | None, started_at: float | None, timeout: int | None, grace: int,
                  keepalive_mtime: float | None, keepalive_max_age: int, now: float) -> Deadline | None:
    """When an idle container is stopped: timeout after idle_since, never inside the grace
    after start, and not while a keep-alive file younger than its maximum age exists."""
    if timeout is None or idle_since is None:
        return None
    at = max(idle_since + timeout, (started_at or idle_since) + grace)
    keepalive_until = None
    if keepalive_mtime is not None and now - keepalive_mtime <= keepalive_max_age:
        keepalive_until = keepalive_mtime + keepalive_max_age
        at = max(at, keepalive_until)
    return Deadline("idle", at, idle_since, timeout, keepalive_until)


def runtime_deadline(started_at: float | None, max_runtime: int | None) -> Deadline | None:
    if started_at is None or max_runtime is None:
        return None
    return Deadline("runtime", started_at + max_runtime, started_at, max_runtime)


def warning_due(deadline: Deadline, lead_times: Sequence[int], now: float, sent: set[int]) -> int | None:
    """The lead time to warn for now, if any: the most urgent one reached and not yet sent.

    Lead times already overtaken (a deadline closer than the longest lead) are not
    sent late one after another: one warning says how long is left.
    """
    if now >= deadline.at:
        return None
    reached = [lead for lead in lead_times if now >= deadline.at - lead]
    if not reached:
        return None
    most_urgent = min(reached)
    return None if most_urgent in sent else most_urgent


def hold_end(finished_at: float | None, hold: int | None) -> float | None:
    """When a stopped container's GPUs are released; None = held until the container is removed."""
    if finished_at is None or hold is None:
        return None
    return finished_at + hold


def removal_at(finished_at: float | None, hold: int | None, protected: bool) -> float | None:
    if finished_at is None or hold is None or protected:
        return None
    return finished_at + hold


@dataclass(frozen=True)
class QuotaCheck:
    used: float                # GPU-equivalents the user holds without this container
    total: float               # with it
    quota: float | None

    @property
    def over(self) -> bool:
        return self.quota is not None and self.total > self.quota + 1e-6

    def reason(self, user: str) -> str:
        return (f"{user} would hold {self.total:g} GPU-equivalents with this container "
                f"({self.used:g} already held) and the quota is {self.quota:g}; "
                "stop or remove a GPU container first")


def quota_check(quota: float | None, held: Iterable[Unit], wanted: Iterable[Unit]) -> QuotaCheck:
    """GPU-equivalents of the distinct units a user holds (running or on hold), with and without
    a new container's units."""
    held_by_uuid = {u.uuid: u for u in held}
    with_new = {**held_by_uuid, **{u.uuid: u for u in wanted}}
    return QuotaCheck(gpu_equivalents(held_by_uuid.values()), gpu_equivalents(with_new.values()), quota)


def _hm(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _dur(seconds: int) -> str:
    return format_duration(seconds)
