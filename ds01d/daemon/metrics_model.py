"""What ds01d's metrics say, from what the daemon already knows: pure.

Input is the `StatusView` the daemon publishes after each pass (containers, their GPU
states, holds, samples, the queue) plus what only the metrics need (usage totals since
ds01d began, the slices' cgroup figures, the decision counts, ds01d's own health).
Output is one `Family` per entry of `rules.metric_catalogue.CATALOGUE`, in its order,
with plain (labels, value) samples; `host.metrics_file` renders them through
prometheus_client.  Unknown is never written as 0: a unit whose activity NVML could not
read has no `ds01_gpu_activity_ratio` sample, and `ds01_gpu_activity_known` 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from ds01d.daemon.status_model import StatusView
from ds01d.rules.gpu_units import Unit, gpu_equivalents, gpu_instances
from ds01d.rules.metric_catalogue import CATALOGUE, Family
from ds01d.rules.records import ContainerRecord
from ds01d.rules.usage_totals import STATES, UsageTotals

Labels = dict[str, str]
#: A compute instance's profile names its GPU instance's after "Nc." ("1c.3g.40gb"): DCGM's
#: GPU_I_PROFILE is the GPU instance's, one per GPU_I_ID.
_COMPUTE_PREFIX = re.compile(r"^\d+c\.")


@dataclass(frozen=True)
class SliceUsage:
    cpu_seconds: float | None
    memory_bytes: int | None


@dataclass(frozen=True)
class Health:
    """ds01d's own figures (None: not measured yet)."""

    version: str
    last_sample: float | None = None
    pass_seconds: float | None = None
    reconcile_seconds: float | None = None
    event_lag_seconds: float | None = None
    nvml_up: bool = False
    reload_ok: bool | None = None
    reload_at: float | None = None
    errors: int = 0                   # failures of ds01d's own steps (each one is in the journal)


@dataclass(frozen=True)
class MetricsInput:
    hostname: str
    view: StatusView
    health: Health
    groups: Mapping[str, str] = field(default_factory=dict)          # user -> group
    usage: UsageTotals = field(default_factory=UsageTotals)
    slices: Mapping[str, SliceUsage] = field(default_factory=dict)  # user -> their slice's figures
    counts: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (family, label value) -> n
    energy_known: Mapping[str, bool] = field(default_factory=dict)  # GPU uuid -> has the counter
    reservations: int = 0
    idle_threshold: float | None = None     # policies.idle_threshold, percent


#: Which label a decision family's counts carry.
COUNTED = {"ds01_warnings_total": "rule", "ds01_stops_total": "rule", "ds01_removals_total": "rule",
           "ds01_creates_refused_total": "reason", "ds01_allocations_total": "outcome"}


def families(m: MetricsInput) -> list[Family]:
    """Every family of the catalogue, in its order (a family without samples is still listed)."""
    samples: dict[str, list[tuple[Labels, float]]] = {spec.name: [] for spec in CATALOGUE}
    host = {"Hostname": m.hostname}
    _units(m, host, samples)
    _containers_on_units(m, host, samples)
    _users(m, host, samples)
    _usage(m, host, samples)
    for (name, value), count in sorted(m.counts.items()):
        samples[name].append(({**host, COUNTED[name]: value}, float(count)))
    _queue(m, host, samples)
    _health(m, host, samples)
    return [Family(spec, tuple(samples[spec.name])) for spec in CATALOGUE]


def unit_labels(unit: Unit, host: Labels) -> Labels:
    """DCGM's labels for a unit: the physical GPU's index and UUID, and the GPU instance of a MIG unit."""
    return {**host, "gpu": str(unit.gpu_index), "UUID": unit.gpu_uuid,
            "GPU_I_ID": "" if unit.gpu_instance_id is None else str(unit.gpu_instance_id),
            "GPU_I_PROFILE": _COMPUTE_PREFIX.sub("", unit.profile or "")}


def _units(m: MetricsInput, host: Labels, out: dict[str, list[tuple[Labels, float]]]) -> None:
    for unit in gpu_instances(m.view.inventory.units).values():   # compute instances: DCGM's one series
        labels = unit_labels(unit, host)
        sample = m.view.samples.get(unit.uuid)
        activity = sample.activity if sample is not None else None
        out["ds01_gpu_unit_share_ratio"].append((labels, unit.share))
        out["ds01_gpu_activity_known"].append((labels, 0.0 if activity is None else 1.0))
        if activity is not None:
            out["ds01_gpu_activity_ratio"].append((labels, min(max(activity / 100, 0.0), 1.0)))
        if sample is not None and sample.memory_used is not None:
            out["ds01_gpu_memory_used_bytes"].append((labels, float(sample.memory_used)))
    for gpu_uuid, known in sorted(m.energy_known.items()):
        index = m.view.inventory.gpu_indexes.get(gpu_uuid)
        if index is not None:
            out["ds01_gpu_energy_metered"].append(({**host, "gpu": str(index), "UUID": gpu_uuid},
                                                         1.0 if known else 0.0))


def _containers_on_units(m: MetricsInput, host: Labels, out: dict[str, list[tuple[Labels, float]]]) -> None:
    by_uuid = m.view.inventory.by_uuid()
    records = {r.id: r for r in m.view.records}
    rows: list[tuple[ContainerRecord, str, float | None, Iterable[str]]] = []
    for rec in m.view.records:
        state = m.view.gpu_states.get(rec.id)
        if rec.status == "running" and state is not None and state.units and state.released is None:
            rows.append((rec, "running", rec.started_at, state.units))
    for hold in m.view.holds:
        rec = records.get(hold.container)
        if rec is not None:
            rows.append((rec, "held", rec.finished_at, hold.units))
    for rec, state_name, since, uuids in rows:
        who = _container_labels(rec, m.groups)
        for unit in gpu_instances(by_uuid[u] for u in uuids if u in by_uuid).values():
            labels = {**unit_labels(unit, host), **who, "state": state_name}
            out["ds01_gpu_container_info"].append((labels, 1.0))
            if since is not None:
                out["ds01_gpu_container_since_seconds"].append((labels, float(since)))


def _container_labels(rec: ContainerRecord, groups: Mapping[str, str]) -> Labels:
    owner = rec.owner or ""
    return {"user": owner, "group": rec.group or groups.get(owner, ""), "container": rec.name,
            "container_id": rec.id, "kind": rec.kind}


def _users(m: MetricsInput, host: Labels, out: dict[str, list[tuple[Labels, float]]]) -> None:
    by_uuid = m.view.inventory.by_uuid()
    in_use: dict[str, set[str]] = {}
    held: dict[str, set[str]] = {}
    kinds: dict[tuple[str, str, str], int] = {}
    for rec in m.view.records:
        if not rec.owner:
            continue
        running = rec.status == "running"
        key = (rec.owner, rec.kind, "running" if running else "stopped")
        kinds[key] = kinds.get(key, 0) + 1
        state = m.view.gpu_states.get(rec.id)
        if running and state is not None and state.released is None:
            in_use.setdefault(rec.owner, set()).update(state.units)
    for hold in m.view.holds:
        if hold.owner:
            held.setdefault(hold.owner, set()).update(hold.units)
    owners = sorted({r.owner for r in m.view.records if r.owner})
    for user in owners:
        labels = {**host, "user": user, "group": m.groups.get(user, "")}
        using = in_use.get(user, set())       # a unit held for a stopped container and used again by a
        out["ds01_user_gpus_in_use"].append((labels, _equivalents(using, by_uuid)))   # running one counts once
        out["ds01_user_gpus_held"].append((labels, _equivalents(held.get(user, set()) - using, by_uuid)))
        quota = m.view.quotas.get(user, (None, 0.0))[0]
        if quota is not None:
            out["ds01_user_gpu_quota"].append((labels, float(quota)))
        figures = m.slices.get(user)
        if figures is not None and figures.cpu_seconds is not None:
            out["ds01_user_cpu_seconds_total"].append((labels, figures.cpu_seconds))
        if figures is not None and figures.memory_bytes is not None:
            out["ds01_user_memory_bytes"].append((labels, float(figures.memory_bytes)))
    for (user, kind, state_name), count in sorted(kinds.items()):
        out["ds01_user_containers"].append(({**host, "user": user, "group": m.groups.get(user, ""), "kind": kind,
                                             "state": state_name}, float(count)))


def _equivalents(uuids: Iterable[str], by_uuid: Mapping[str, Unit]) -> float:
    return gpu_equivalents(by_uuid[u] for u in uuids if u in by_uuid)


def _usage(m: MetricsInput, host: Labels, out: dict[str, list[tuple[Labels, float]]]) -> None:
    for user, total in sorted(m.usage.users.items()):
        labels = {**host, "user": user, "group": total.group or m.groups.get(user, "")}
        for state in STATES:
            out["ds01_user_gpu_seconds_total"].append(({**labels, "state": state}, total.gpu_seconds[state]))
        out["ds01_user_gpu_energy_joules_total"].append((labels, total.energy_joules))
        out["ds01_user_gpu_unmetered_seconds_total"].append((labels, total.unmetered_seconds))


def _queue(m: MetricsInput, host: Labels, out: dict[str, list[tuple[Labels, float]]]) -> None:
    waits = [float(w.get("waiting_s") or 0) for w in m.view.queue]
    out["ds01_queue_length"].append((host, float(len(waits))))
    out["ds01_queue_oldest_wait_seconds"].append((host, max(waits, default=0.0)))
    out["ds01_reservations_active"].append((host, float(m.reservations)))


def _health(m: MetricsInput, host: Labels, out: dict[str, list[tuple[Labels, float]]]) -> None:
    h = m.health
    out["ds01_build_info"].append(({**host, "version": h.version}, 1.0))
    out["ds01_sampling_interval_seconds"].append((host, float(m.view.sampling_interval)))
    if m.idle_threshold is not None:
        out["ds01_idle_threshold_ratio"].append((host, m.idle_threshold / 100))
    out["ds01_docker_connected"].append((host, 1.0 if m.view.docker_connected else 0.0))
    out["ds01_errors_total"].append((host, float(h.errors)))
    out["ds01_nvml_up"].append((host, 1.0 if h.nvml_up else 0.0))
    for name, value in (("ds01_last_sample_time_seconds", h.last_sample),
                        ("ds01_sampling_pass_duration_seconds", h.pass_seconds),
                        ("ds01_reconcile_duration_seconds", h.reconcile_seconds),
                        ("ds01_event_lag_seconds", h.event_lag_seconds),
                        ("ds01_config_last_reload_time_seconds", h.reload_at)):
        if value is not None:
            out[name].append((host, float(value)))
    if h.reload_ok is not None:
        out["ds01_config_last_reload_success"].append((host, 1.0 if h.reload_ok else 0.0))
