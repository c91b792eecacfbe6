"""What to do about one container once its owner is known: pure rules, no I/O.

The daemon's loop gathers the facts (the record, the owner's limits, what else
the owner runs) and carries out what these functions return; keeping the rules
here lets each be tested as a table of cases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ds01d.config import OutsideSlicePolicy, Policies, UnownedPolicy
from ds01d.rules.limits import EffectiveLimits
from ds01d.rules.records import ContainerRecord


@dataclass(frozen=True)
class Action:
    """One thing to do: `kind` is stop, cap or warn; `reason` is what the owner will read."""

    kind: str
    reason: str
    cpus: float | None = None
    memory: int | None = None


def excess_running(records: Sequence[ContainerRecord], max_containers: int | None) -> list[ContainerRecord]:
    """An owner's running containers beyond `max_containers`: the most recently started ones."""
    running = sorted((r for r in records if r.status == "running"),
                     key=lambda r: (r.started_at or 0.0, r.id))
    if max_containers is None or len(running) <= max_containers:
        return []
    return running[max_containers:]


def max_containers_reason(owner: str, running: int, limit: int) -> str:
    return (f"{owner} has {running} running containers and may run {limit} at once "
            f"(max_containers); stop one before starting another")


def unowned_action(record: ContainerRecord, policies: Policies) -> Action | None:
    if record.owner is not None or record.status != "running":
        return None
    reason = "no owner signal (ds01.user label, AIME name, user slice, /home mount) identifies its user"
    return Action("stop" if policies.unowned is UnownedPolicy.STOP else "warn", reason)


def _current_caps(host_config: Mapping[str, Any]) -> tuple[float | None, int | None]:
    nano = host_config.get("NanoCpus") or 0
    quota, period = host_config.get("CpuQuota") or 0, host_config.get("CpuPeriod") or 0
    cpus = nano / 1e9 if nano else (quota / period if quota > 0 and period > 0 else None)
    return cpus, (host_config.get("Memory") or None)


def outside_slice_action(record: ContainerRecord, limits: EffectiveLimits, policies: Policies,
                         host_config: Mapping[str, Any]) -> Action | None:
    """For a running container not under its owner's slice: cap it (once) or warn."""
    if record.owner is None or record.status != "running" or record.cgroup_parent == limits.slice:
        return None
    where = f"cgroup parent {record.cgroup_parent!r}" if record.cgroup_parent else "Docker's default cgroup"
    reason = f"runs in {where}, outside its owner's slice {limits.slice}"
    if policies.outside_slice is OutsideSlicePolicy.WARN:
        return Action("warn", reason)
    want_cpus, want_mem = limits["container_cpus"], limits["container_memory"]
    have_cpus, have_mem = _current_caps(host_config)
    cpus = want_cpus if want_cpus is not None and (have_cpus is None or have_cpus > want_cpus + 1e-9) else None
    memory = want_mem if want_mem is not None and (have_mem is None or have_mem > want_mem) else None
    if cpus is None and memory is None:
        return None if (want_cpus, want_mem) != (None, None) else Action("warn", reason + "; no per-container "
                                                                          "caps are configured")
    return Action("cap", reason, cpus=cpus, memory=memory)
