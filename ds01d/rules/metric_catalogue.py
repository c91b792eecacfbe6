"""Every metric ds01d exports: name, type, labels and help, in one place.

The exporter (`metrics_model`), the shipped alert rules and Grafana dashboard
(`monitoring/`), and the tests that check those reference only series that exist all
read this table, so a rename cannot leave an alert watching nothing.

Names follow Prometheus's rules: base units (`_seconds`, `_bytes`, `_joules`), `_ratio`
for 0-1 fractions, `_total` only on counters, `_info` for a constant 1 that carries
labels.  Label names are DCGM exporter's where they mean the same thing (`gpu`, `UUID`,
`GPU_I_ID`, `GPU_I_PROFILE`, `Hostname`), so `* on(Hostname, gpu, GPU_I_ID)
group_left(user)` joins ds01d's series to DCGM's.  `UUID` is the physical GPU's, as in
DCGM (a MIG instance is told apart by `GPU_I_ID`); whole GPUs have no `GPU_I_*` labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["gauge", "counter", "info"]

#: The labels that place a series on a GPU or MIG instance, DCGM's names.
UNIT_LABELS = ("Hostname", "gpu", "UUID", "GPU_I_ID", "GPU_I_PROFILE")
#: Who a series is about.
USER_LABELS = ("Hostname", "user", "group")
CONTAINER_LABELS = ("user", "group", "container", "container_id", "kind")


@dataclass(frozen=True)
class Spec:
    """One metric family: its name as exposed (counters with `_total`), kind, labels, help."""

    name: str
    kind: Kind
    labels: tuple[str, ...]
    help: str


CATALOGUE: tuple[Spec, ...] = (
    # -- GPUs and MIG instances ---------------------------------------------------------------
    Spec("ds01_gpu_container_info", "info", UNIT_LABELS + CONTAINER_LABELS + ("state",),
         "A container on a GPU or MIG instance: 1 while it holds it; state is running, or held "
         "(stopped, the unit kept for it until its hold ends)."),
    Spec("ds01_gpu_container_since_seconds", "gauge", UNIT_LABELS + CONTAINER_LABELS + ("state",),
         "Unix time since when the container has held the unit in this state (started, or stopped)."),
    Spec("ds01_gpu_activity_ratio", "gauge", UNIT_LABELS,
         "Share of the last sampling interval in which a kernel ran on the unit, 0 to 1 (utilization.gpu "
         "on whole GPUs, GPM graphics activity on MIG instances); absent where NVML cannot tell."),
    Spec("ds01_gpu_activity_known", "gauge", UNIT_LABELS,
         "1 where the unit's activity was measured this interval, 0 where it is unknown (not idle)."),
    Spec("ds01_gpu_unit_share_ratio", "gauge", UNIT_LABELS,
         "The unit's share of its physical GPU, 0 to 1 (1 for a whole GPU, 3/7 for a 3-slice MIG instance): "
         "summed, the host's GPU-equivalents."),
    Spec("ds01_gpu_memory_used_bytes", "gauge", UNIT_LABELS,
         "Memory in use on the unit; absent where NVML cannot tell."),
    Spec("ds01_gpu_energy_metered", "gauge", ("Hostname", "gpu", "UUID"),
         "1 where the GPU has NVML's total-energy reading (energy is shared out from it), else 0: unknown."),
    # -- users ------------------------------------------------------------------------------
    Spec("ds01_user_gpus_in_use", "gauge", USER_LABELS,
         "GPU-equivalents held by the user's running containers (a MIG instance counts its share)."),
    Spec("ds01_user_gpus_held", "gauge", USER_LABELS,
         "GPU-equivalents held for the user's stopped containers, until their holds end."),
    Spec("ds01_user_gpu_quota", "gauge", USER_LABELS,
         "The user's GPU quota in GPU-equivalents; absent where unlimited."),
    Spec("ds01_user_containers", "gauge", USER_LABELS + ("kind", "state"),
         "The user's containers by kind (docker, compose, devcontainer, ds01) and state (running, stopped)."),
    Spec("ds01_user_cpu_seconds_total", "counter", USER_LABELS,
         "CPU time used in the user's slice, read from its cgroup (resets when the slice is re-created)."),
    Spec("ds01_user_memory_bytes", "gauge", USER_LABELS,
         "Memory in use in the user's slice, read from its cgroup."),
    Spec("ds01_user_gpu_seconds_total", "counter", USER_LABELS + ("state",),
         "GPU-equivalent seconds held by the user's running containers, by what the GPU did: busy, idle, "
         "or unknown (NVML could not tell)."),
    Spec("ds01_user_gpu_energy_joules_total", "counter", USER_LABELS,
         "GPU energy shared out to the user's containers: each GPU's total-energy counter, by MIG share and "
         "by container time on shared whole GPUs."),
    Spec("ds01_user_gpu_unmetered_seconds_total", "counter", USER_LABELS,
         "GPU-equivalent seconds on GPUs without an energy counter: their energy is unknown, not 0."),
    # -- decisions ----------------------------------------------------------------------------
    Spec("ds01_warnings_total", "counter", ("Hostname", "rule"),
         "Warnings sent to owners before a stop, by rule (idle_timeout, max_runtime...)."),
    Spec("ds01_stops_total", "counter", ("Hostname", "rule"), "Containers stopped by ds01d, by rule."),
    Spec("ds01_removals_total", "counter", ("Hostname", "rule"), "Containers removed by ds01d, by rule."),
    Spec("ds01_creates_refused_total", "counter", ("Hostname", "reason"),
         "Container creates refused at the gateway, by reason (a rule's setting, gpu_quota, max_containers...)."),
    Spec("ds01_allocations_total", "counter", ("Hostname", "outcome"),
         "GPU allocation requests by outcome: served, timed_out (waited allocation_wait in the queue), refused."),
    Spec("ds01_queue_length", "gauge", ("Hostname",), "Allocation requests waiting for a GPU."),
    Spec("ds01_queue_oldest_wait_seconds", "gauge", ("Hostname",),
         "How long the oldest waiting allocation request has waited (0 when none waits)."),
    Spec("ds01_reservations_active", "gauge", ("Hostname",), "GPU reservations in force now."),
    # -- ds01d itself ---------------------------------------------------------------------------
    Spec("ds01_build_info", "info", ("Hostname", "version"), "ds01d's version: 1."),
    Spec("ds01_last_sample_time_seconds", "gauge", ("Hostname",),
         "Unix time of ds01d's last sampling pass (an old value: ds01d is not sampling)."),
    Spec("ds01_sampling_interval_seconds", "gauge", ("Hostname",), "The configured sampling interval."),
    Spec("ds01_idle_threshold_ratio", "gauge", ("Hostname",),
         "policies.idle_threshold as a 0-1 ratio: activity below it counts as idle."),
    Spec("ds01_sampling_pass_duration_seconds", "gauge", ("Hostname",), "How long the last sampling pass took."),
    Spec("ds01_reconcile_duration_seconds", "gauge", ("Hostname",),
         "How long the last full reconcile with Docker's container list took."),
    Spec("ds01_event_lag_seconds", "gauge", ("Hostname",),
         "From Docker's time of the last container event to ds01d handling it."),
    Spec("ds01_docker_connected", "gauge", ("Hostname",), "1 while ds01d follows Docker's events, else 0."),
    Spec("ds01_errors_total", "counter", ("Hostname",),
         "Failures of ds01d's own steps (a pass, an event's handling, a write), each one in the journal."),
    Spec("ds01_nvml_up", "gauge", ("Hostname",),
         "1 while NVML answers; 0 where it is missing (CPU-only) or stopped answering (GPU activity unknown)."),
    Spec("ds01_config_last_reload_success", "gauge", ("Hostname",),
         "1 if the last config reload was applied, 0 if the file was refused (the old config stays)."),
    Spec("ds01_config_last_reload_time_seconds", "gauge", ("Hostname",), "Unix time of the last reload attempt."),
)

BY_NAME = {spec.name: spec for spec in CATALOGUE}


@dataclass(frozen=True)
class Family:
    """One family's samples as computed: (labels, value) pairs; a missing label is empty."""

    spec: Spec
    samples: tuple[tuple[dict[str, str], float], ...]


def exposed_names() -> set[str]:
    """Every series name a scrape can show (an info family's samples carry its name as is)."""
    return {spec.name for spec in CATALOGUE}
