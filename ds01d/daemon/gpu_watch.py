"""GPU truth and the lifecycle timers, run by the daemon's main loop.

Each sampling pass reads NVML once, attributes GPU processes to containers
through /proc/<pid>/cgroup, judges every running GPU container (busy, idle or
unknown), moves its idle clock, and fires what is due: warnings, idle and
runtime stops, hold releases and removals.  A GPU container is one that asked
for GPUs or one NVML shows computing on a unit (CDI devices, --privileged,
-v /dev:/dev, an image's own NVIDIA_VISIBLE_DEVICES): its units are what it asked
for and what NVML showed it on during this run, so quota, idle stop and holds
apply to it, and the allocator sees those units taken.  The decisions come from
`ds01d.rules.lifecycle`; this module gathers the facts and persists what the next
pass (or the next daemon) needs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Callable, Iterable, Protocol, TypeVar

from ds01d.config import GpusAllPolicy, Policies
from ds01d.rules.energy import EnergyShare, energy_deltas, share_energy
from ds01d.rules.gpu_request import GpuRequest
from ds01d.rules.gpu_units import Inventory, Unit, UnitSample, container_of_cgroup, gpu_equivalents, resolve_request
from ds01d.rules.lifecycle import (UNKNOWN, Deadline, IdleState, Verdict, hold_end, idle_deadline, quota_check,
                             removal_at, runtime_deadline, track_idle, verdict, warning_due)
from ds01d.rules.limits import EffectiveLimits
from ds01d.rules.placement import keeps_after_stop
from ds01d.host.container_files import regular_file_mtime
from ds01d.host.nvml import Nvml, NvmlHung, NvmlUnavailable
from ds01d.config.quantities import format_duration, format_size
from ds01d.host.state_db import GpuStore, Store
from ds01d.rules.records import ContainerRecord, GpuState
from ds01d.rules.usage_totals import UsageTotals

T = TypeVar("T")
INVENTORY_EVERY = 30          # passes between inventory refreshes (MIG layouts change rarely)
STOPPED = ("exited", "dead")


class Actuator(Protocol):
    """What the daemon does on this module's behalf."""

    def stop(self, record: ContainerRecord, reason: str, rule: str) -> None: ...
    def remove(self, record: ContainerRecord, reason: str) -> None: ...
    def warn(self, record: ContainerRecord, rule: str, reason: str, deadline: float | None) -> None: ...
    def release(self, record: ContainerRecord, reason: str) -> None: ...
    def note(self, record: ContainerRecord, action: str, reason: str) -> None: ...


def utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def request_of(record: ContainerRecord) -> GpuRequest:
    r = record.gpu_request
    return GpuRequest(bool(r.get("all_gpus")), tuple(r.get("device_ids") or ()), int(r.get("count") or 0),
                      r.get("source"))


class GpuWatch:
    """NVML session, inventory and idle clocks; one instance per daemon."""

    def __init__(self, store: Store, clock: Callable[[], float], nvml_open: Callable[[], Nvml] = Nvml.open,
                 proc: str = "/proc", nvml_call: Callable[[Callable[[], T]], T] = lambda read: read()):
        self.store = store
        self.gpu = GpuStore(store)
        self.clock = clock
        self.nvml_open = nvml_open
        self.nvml_call = nvml_call     # how a pass's NVML read is run (the daemon: off its loop, bounded)
        self.proc = proc
        self.nvml: Nvml | None = None
        self.cpu_only: str | None = None
        self.inventory = Inventory()
        self.idle: dict[str, IdleState] = {}
        self.samples: dict[str, UnitSample] = {}
        self._states: dict[str, GpuState] = {}
        self._extensions: dict[tuple[str, str], int] = {}
        self.upcoming: dict[str, Deadline] = {}     # the next stop of each running GPU container
        self.passes = 0
        self.last_pass: float | None = None
        self.news: list[str] = []                    # NVML's re-initialisations, for the journal
        self._seen_on: dict[str, set[str]] = {}     # container -> units NVML shows it on this pass
        self.found: list[str] = []                   # containers first found on units this pass
        self.energy_readings: dict[str, int | None] = {}    # GPU uuid -> NVML's energy counter (mJ), last pass
        self.nvml_answered = True                            # False: NVML's last read did not come back
        self.energy_joules: dict[str, float | None] = {}    # GPU uuid -> joules over the last interval
        self._energy: dict[str, EnergyShare] = {}           # container -> its share of them
        self.usage_totals: UsageTotals | None = None        # per user since ds01d began (the metrics' counters)
        self.pass_seconds: float | None = None               # how long the last pass took

    # --- NVML ---------------------------------------------------------------------

    def open(self) -> str | None:
        """Start NVML; the reason when the host is CPU-only (said once by the caller)."""
        try:
            self.nvml = self.nvml_open()
            self.inventory = self.nvml.inventory()
        except NvmlUnavailable as exc:
            self.nvml, self.cpu_only = None, f"{exc}; running CPU-only (no GPU activity, quotas or holds)"
        return self.cpu_only

    def close(self) -> None:
        if self.nvml is not None:
            self.nvml.close()

    def units_of(self, record: ContainerRecord) -> tuple[list[Unit], list[str]]:
        """The units a container holds: those it asked for and those NVML showed it computing on
        during this run (kept in its GPU state), and the ids it asked for that name nothing now."""
        units, missing = resolve_request(request_of(record), self.inventory)
        by_uuid = self.inventory.by_uuid()
        state = self._states.get(record.id)
        seen = set(self._seen_on.get(record.id, ())) | set(state.units if state and state.released is None else ())
        seen -= {u.uuid for u in units}
        return units + [by_uuid[u] for u in sorted(seen) if u in by_uuid], missing

    def _sample(self) -> dict[str, UnitSample]:
        """One NVML read of the pass, through `nvml_call` (off the main loop, bounded): NVML that
        does not answer makes every unit unknown for the pass, never idle."""
        nvml = self.nvml
        if nvml is None:
            return {}
        due = self.passes % INVENTORY_EVERY == 0

        def read() -> tuple[Inventory, list[UnitSample], dict[str, int | None]]:
            inventory = nvml.refresh(self.inventory, due=due)
            return inventory, nvml.sample(inventory), nvml.energy(inventory)
        try:
            self.inventory, samples, energy = self.nvml_call(read)
        except NvmlHung as exc:
            self.energy_joules, self.energy_readings, self.nvml_answered = {}, {}, False
            return {u.uuid: UnitSample(u.uuid, None, None, None, unknown_reason=str(exc), process_gap=str(exc))
                    for u in self.inventory.units}
        finally:
            self.news.extend(nvml.events)
            nvml.events.clear()
        self.nvml_answered = True
        self.energy_joules = energy_deltas(self.energy_readings, energy)
        self.energy_readings = energy
        return {s.uuid: s for s in samples}

    def _container_of_pid(self, pid: int) -> str | None:
        try:
            with open(f"{self.proc}/{pid}/cgroup", encoding="utf-8") as f:
                return container_of_cgroup(f.read())
        except OSError:
            return None

    def _pids_by_container(self) -> dict[str, list[int]]:
        """Container -> its GPU processes; and, in `_seen_on`, the units each one computes on."""
        out: dict[str, list[int]] = {}
        self._seen_on = {}
        for sample in self.samples.values():
            for p in sample.processes:
                cid = self._container_of_pid(p.pid)
                if cid:
                    out.setdefault(cid, []).append(p.pid)
                    self._seen_on.setdefault(cid, set()).add(sample.uuid)
        return out

    # --- at start -------------------------------------------------------------------

    def holds(self, records: Iterable[ContainerRecord], limits_for: Callable[[str | None], EffectiveLimits],
              now: float) -> list[tuple[ContainerRecord, tuple[str, ...], float | None]]:
        """(stopped container, its unit uuids, hold end or None for "until removed") of every live hold."""
        states = self.gpu.all()
        out = []
        for rec in records:
            st = states.get(rec.id)
            if rec.status not in STOPPED or st is None or not st.units or st.released is not None:
                continue
            end = self._hold_end(rec, limits_for(rec.owner))
            if end is None or now < end:
                out.append((rec, st.units, end))
        return out

    @staticmethod
    def _hold_end(rec: ContainerRecord, limits: EffectiveLimits) -> float | None:
        """When a stopped container's devices are free again: at once for one nobody owns
        (`placement.keeps_after_stop`), else after its owner's gpu_hold_after_stop."""
        if not keeps_after_stop(rec.owner):
            return rec.finished_at or 0.0
        return hold_end(rec.finished_at, limits.lifecycle("gpu_hold_after_stop", rec.kind))

    def judged(self, record: ContainerRecord) -> bool:
        """Whether this run of the container was judged already: Docker replays the last event
        handled before a restart (`since` is inclusive), and a reconcile sees starts it may have handled."""
        return record.started_at is not None and self.gpu.judged_run(record.id) == record.started_at

    def started(self, record: ContainerRecord) -> list[Unit]:
        """Record the units of a container that just started; its previous run's extensions end."""
        units, _ = self.units_of(record)
        self.gpu.put(GpuState(record.id, tuple(u.uuid for u in units)), self.clock())
        self.gpu.clear_extensions(record.id)
        return units

    def forfeit(self, record: ContainerRecord) -> None:
        """A container stopped at its start for its devices never held them: no hold after its stop
        (else it would keep, for its owner, a device that is someone else's)."""
        state = self.gpu.get(record.id)
        if state is not None and state.released is None:
            self.gpu.put(dataclasses.replace(state, released=self.clock()), self.clock())

    @staticmethod
    def gpus_all_check(record: ContainerRecord, policies: Policies) -> tuple[str, str] | None:
        """("stop" or "warn", reason) for a container started with --gpus all, as policies say."""
        if not record.gpu_request.get("all_gpus") or policies.gpus_all is GpusAllPolicy.ALLOW:
            return None
        reason = ("started with --gpus all; ask for devices instead (--gpus device=N, or `ds01 run`), "
                  "so that others can use the rest")
        return ("stop" if policies.gpus_all is GpusAllPolicy.STOP else "warn"), reason

    def check_start(self, record: ContainerRecord, units: list[Unit], limits: EffectiveLimits,
                    others: list[ContainerRecord], limits_for: Callable[[str | None], EffectiveLimits]
                    ) -> tuple[str, str] | None:
        """("stop" or "warn", reason) for a GPU container that just started over its owner's quota
        or on devices this host does not have; None when it may run."""
        held_units = self._held_by(record, others, limits_for, self.clock())
        check = quota_check(limits["gpu_quota"], held_units, units)
        if check.over:
            return "stop", check.reason(record.owner or "this user")
        _, unknown = self.units_of(record)
        if unknown:
            return "warn", f"asks for GPU {', '.join(unknown)}, which this host does not have"
        return None

    def _held_by(self, record: ContainerRecord, others: list[ContainerRecord],
                 limits_for: Callable[[str | None], EffectiveLimits], now: float) -> list[Unit]:
        """Units the owner holds through their other containers: running ones and stopped ones on hold."""
        by_uuid = self.inventory.by_uuid()
        states = self.gpu.all()
        held: list[str] = []
        for rec in others:
            if rec.owner != record.owner or rec.id == record.id:
                continue
            if rec.status == "running" and rec.id in states:
                held.extend(states[rec.id].units)
        held.extend(u for rec, units, _ in self.holds(others, limits_for, now)
                    if rec.owner == record.owner and rec.id != record.id for u in units)
        return [by_uuid[u] for u in dict.fromkeys(held) if u in by_uuid]

    # --- each pass --------------------------------------------------------------------

    def run_pass(self, records: list[ContainerRecord], limits_for: Callable[[str | None], EffectiveLimits],
                 policies: Policies, interval: int, act: Actuator) -> None:
        now = self.clock()
        self.found = []
        self.samples = self._sample()
        self.passes += 1
        gap = now - self.last_pass if self.last_pass else 0.0
        elapsed = min(gap, 2 * interval)
        self.last_pass = now
        pids = self._pids_by_container()
        self._states = self.gpu.all()
        self._extensions = self.gpu.extensions()
        if self.usage_totals is None:
            self.usage_totals = UsageTotals.from_rows(self.gpu.usage_totals()).raise_to(
                self.store.get_meta("usage_totals"))
        if gap > 2 * interval:
            # a gap (Docker away, a stall): whose containers ran meanwhile is not known, so its
            # energy is nobody's, as its GPU time is (elapsed is capped the same way)
            self.energy_joules = dict.fromkeys(self.energy_joules)
        held = {r.id: self.units_of(r) for r in records if r.status == "running" and self._is_gpu_container(r)}
        self._energy = share_energy({cid: units for cid, (units, _) in held.items()}, self.energy_joules)
        running = set()
        with self.store.transaction():  # one commit per pass, not one per container
            for rec in records:
                if not self._is_gpu_container(rec):
                    continue
                limits = limits_for(rec.owner)
                if rec.status == "running":
                    running.add(rec.id)
                    if self._over_quota_found(rec, limits, records, limits_for, act):
                        continue
                    self._running(rec, held[rec.id], limits, policies, pids.get(rec.id, []), now, elapsed, act)
                elif rec.status in STOPPED:
                    self._stopped(rec, limits, now, act)
            if self.usage_totals.users:     # committed with the figures they were counted from
                self.store.set_meta("usage_totals", self.usage_totals.as_json())
        for cid in set(self.idle) - running:
            del self.idle[cid]
        for cid in set(self.upcoming) - running:
            del self.upcoming[cid]

    def _is_gpu_container(self, rec: ContainerRecord) -> bool:
        """One that asked for GPUs, one NVML shows on a unit now, or one it showed there before."""
        state = self._states.get(rec.id)
        return rec.wants_gpu or rec.id in self._seen_on or bool(state and state.units)

    def _over_quota_found(self, rec: ContainerRecord, limits: EffectiveLimits, records: list[ContainerRecord],
                          limits_for: Callable[[str | None], EffectiveLimits], act: Actuator) -> bool:
        """A running container found computing on units it did not ask for is judged as if it had
        started on them: over its owner's quota, it is stopped (True)."""
        state = self._states.get(rec.id)
        known = set(state.units if state and state.released is None else ())
        asked = {u.uuid for u in resolve_request(request_of(rec), self.inventory)[0]}
        found = self._seen_on.get(rec.id, set()) - known - asked
        if not found or not rec.owner:
            return False
        units, _ = self.units_of(rec)
        check = quota_check(limits["gpu_quota"], self._held_by(rec, records, limits_for, self.clock()), units)
        if not check.over:
            self.found.append(rec.id)   # the daemon judges its units against holds and reservations
            return False
        shown = ", ".join(u.index for u in units if u.uuid in found)
        now = self.clock()  # stopped for its devices: it leaves no hold after it (as `forfeit`)
        self.gpu.put(GpuState(rec.id, tuple(u.uuid for u in units), verdict="unknown",
                              why=f"found on GPU {shown} without asking for it", released=now), now)
        act.stop(rec, f"found computing on GPU {shown} without asking for it (no --gpus); "
                      + check.reason(rec.owner), "gpu-quota")
        return True

    def _running(self, rec: ContainerRecord, held: tuple[list[Unit], list[str]], limits: EffectiveLimits,
                 policies: Policies, pids: list[int], now: float, elapsed: float, act: Actuator) -> None:
        """`held`: the units it holds this pass and the ids it asked for that name nothing (`units_of`)."""
        units, missing = held
        previous = self._states.get(rec.id) or GpuState(rec.id)
        if self.nvml is None:
            v = Verdict(UNKNOWN, None, self.cpu_only or "no NVML")
        else:
            v = verdict(units, self.samples, pids, policies.idle_threshold, missing)
        state = self.idle.get(rec.id) or IdleState(previous.idle_since)
        state = track_idle(state, v, now, policies.idle_window, policies.idle_threshold)
        self.idle[rec.id] = state
        self.gpu.put(GpuState(rec.id, tuple(u.uuid for u in units), state.idle_since, v.state, v.why, v.activity,
                              previous.released), now)
        if v.state == UNKNOWN and previous.verdict != UNKNOWN and self.nvml is not None:
            act.note(rec, "gpu-unknown", f"GPU activity unknown, idle clock paused: {v.why}")
        if rec.owner and elapsed:
            day = dt.datetime.fromtimestamp(now, dt.timezone.utc).date().isoformat()
            share = self._energy.get(rec.id, EnergyShare())
            gpu_seconds, unmetered = elapsed * gpu_equivalents(units), elapsed * share.unmetered
            self.gpu.add_usage(day, rec.owner, rec.id, v.state, gpu_seconds, share.joules, unmetered, rec.group)
            assert self.usage_totals is not None
            self.usage_totals.add(rec.owner, rec.group, v.state, gpu_seconds, share.joules, unmetered)
        # While its activity is unknown, no idle stop is due: the clock is paused, not run out.
        deadlines = self.deadlines(rec, limits, policies, None if v.state == UNKNOWN else state.idle_since, now)
        if deadlines:
            self.upcoming[rec.id] = deadlines[0]
        else:
            self.upcoming.pop(rec.id, None)
        for d in deadlines:
            if now >= d.at:
                act.stop(rec, d.reason, d.rule)
                return
            lead = warning_due(d, policies.warning_lead_times, now, self.gpu.warned(rec.id, d.rule, d.at))
            if lead is not None:
                self.gpu.add_warning(rec.id, d.rule, d.at, lead, now)
                act.warn(rec, d.rule, f"will be stopped at {utc(d.at)} (in {format_duration(math.ceil(d.at - now))}): "
                                      f"{d.reason}", d.at)
        self._gpu_memory(rec, limits, units, pids, policies, now, act)

    def deadlines(self, rec: ContainerRecord, limits: EffectiveLimits, policies: Policies,
                  idle_since: float | None, now: float) -> list[Deadline]:
        """The stops ahead of a running GPU container, earliest first."""
        found = [
            idle_deadline(idle_since, rec.started_at, limits.lifecycle("idle_timeout", rec.kind),
                          policies.grace_after_start, self._keepalive_mtime(rec, policies),
                          policies.keep_alive_max_age, now),
            runtime_deadline(rec.started_at, limits.lifecycle("max_runtime", rec.kind)),
        ]
        return sorted((d.extend(self._extensions.get((rec.id, d.rule), 0)) for d in found if d is not None),
                      key=lambda d: d.at)

    def _keepalive_mtime(self, rec: ContainerRecord, policies: Policies) -> float | None:
        """mtime of the keep-alive file, resolved inside the container's root (never on the host:
        the container's owner controls its symlinks); None when it is missing or not a regular file."""
        if policies.keep_alive_file is None or not rec.pid:
            return None
        return regular_file_mtime(f"{self.proc}/{rec.pid}/root", policies.keep_alive_file)

    def _gpu_memory(self, rec: ContainerRecord, limits: EffectiveLimits, units: list[Unit], pids: list[int],
                    policies: Policies, now: float, act: Actuator) -> None:
        """On shared whole GPUs: over `container_gpu_memory` is warned, and stopped if still over
        after the shortest warning lead time."""
        cap = limits["container_gpu_memory"]
        if cap is None:
            return
        used = sum(p.used_memory or 0 for u in units if not u.is_mig and u.uuid in self.samples
                   for p in self.samples[u.uuid].processes if p.pid in pids)
        if used <= cap:
            return
        first = self.gpu.first_warned(rec.id, "gpu-memory")
        reason = f"uses {format_size(used)} of GPU memory; container_gpu_memory is {format_size(cap)}"
        grace = min(policies.warning_lead_times, default=0)
        if first is None:
            self.gpu.add_warning(rec.id, "gpu-memory", 0, 0, now)
            act.warn(rec, "gpu-memory", f"{reason}; it will be stopped if still over in {format_duration(grace)}",
                     now + grace)
        elif now >= first + grace:
            act.stop(rec, reason, "gpu-memory")

    def _stopped(self, rec: ContainerRecord, limits: EffectiveLimits, now: float, act: Actuator) -> None:
        state = self._states.get(rec.id) or GpuState(rec.id)
        end = self._hold_end(rec, limits)
        if state.units and state.released is None and end is not None and now >= end:
            self.gpu.put(dataclasses.replace(state, released=now), now)
            held = "GPU hold ended" if keeps_after_stop(rec.owner) else "no owner to hold its GPUs for"
            act.release(rec, f"{held} (stopped at {utc(rec.finished_at or now)}); its devices are free for others")
        remove = removal_at(rec.finished_at, limits.lifecycle("container_hold_after_stop", rec.kind), rec.protected)
        if remove is not None and now >= remove:
            act.remove(rec, f"stopped since {utc(rec.finished_at or now)}, longer than container_hold_after_stop "
                            f"({format_duration(int(remove - (rec.finished_at or remove)))})")
