"""GPUs and MIG instances as plain data, and the pure rules over them.

A *unit* is what a container can hold: a whole GPU when MIG is off, else one MIG
instance.  Each unit has a `share` of its physical GPU (a 3g instance of a
7-slice GPU is 3/7), which is what GPU quotas count in.  Activity is a number or
None, and None (unknown) stays None all the way to the idle verdict and the
screen: "the hardware cannot tell" is not "idle".
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from ds01d.rules.gpu_request import GpuRequest


@dataclass(frozen=True)
class Unit:
    """One GPU or MIG instance containers can be given."""

    uuid: str
    index: str                 # "1" for GPU 1, "1:2" for MIG device 2 of GPU 1 (the --gpus notation)
    name: str
    gpu_uuid: str              # the physical GPU (itself for a whole GPU)
    gpu_index: int
    share: float               # fraction of the physical GPU
    memory_total: int
    profile: str | None = None  # MIG profile, e.g. "3g.40gb"
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None

    @property
    def is_mig(self) -> bool:
        return self.profile is not None

    @property
    def share_key(self) -> tuple[str, int | None]:
        """What a share is a share of: the MIG GPU instance (its compute instances split it, they do
        not add to it), or the whole GPU."""
        return (self.gpu_uuid, self.gpu_instance_id) if self.is_mig else (self.uuid, None)


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used_memory: int | None
    sm_util: float | None = None      # per-process utilization, where NVML gives it


@dataclass(frozen=True)
class UnitSample:
    """One unit at one sampling pass."""

    uuid: str
    memory_used: int | None
    activity: float | None            # percent; None = unknown
    activity_source: str | None       # UTILIZATION, GPM_BUSY, or None
    unknown_reason: str | None = None
    processes: tuple[GpuProcess, ...] = ()
    error: str | None = None
    process_gap: str | None = None    # why `processes` may miss some: then "no process of ours" is unknown
    shared_with: tuple[GpuProcess, ...] = ()   # processes elsewhere whose work `activity` includes (other
                                               # compute instances of the same GPU instance)


@dataclass(frozen=True)
class Inventory:
    """Every unit on the host, and the physical GPUs they belong to."""

    units: tuple[Unit, ...] = ()
    gpu_indexes: Mapping[str, int] = field(default_factory=dict)   # GPU uuid -> index
    driver: str | None = None

    def by_uuid(self) -> dict[str, Unit]:
        return _by_uuid(self.units)


@functools.lru_cache(maxsize=8)
def _by_uuid(units: tuple[Unit, ...]) -> dict[str, Unit]:
    return {u.uuid: u for u in units}


NO_PROCESS = "no GPU process of this container"
PER_PROCESS = "per-process SM utilization"
#: What `activity` measures, by source: the share of time a kernel ran, on whole GPUs and MIG instances alike.
UTILIZATION = "utilization.gpu"
GPM_BUSY = "GPM GRAPHICS_UTIL"

_CONTAINER_ID = re.compile(r"(?:docker-|/docker/|/)([0-9a-f]{64})(?:\.scope)?(?:/|$)")


def container_of_cgroup(text: str) -> str | None:
    """The Docker container id in a /proc/<pid>/cgroup file, on v1 or v2, systemd or cgroupfs driver."""
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        m = _CONTAINER_ID.search(path)
        if m:
            return m.group(1)
    return None


def units_of_gpu(inventory: Inventory, gpu_uuid: str) -> list[Unit]:
    return [u for u in inventory.units if u.gpu_uuid == gpu_uuid]


def resolve_request(request: GpuRequest, inventory: Inventory) -> tuple[list[Unit], list[str]]:
    """The units a container's GPU request names, and the ids that name nothing on this host.

    A whole GPU that is MIG-partitioned resolves to all of its instances: the
    container may use any of them, so it holds all of them.
    """
    if request.all_gpus:
        return list(inventory.units), []
    by_uuid = inventory.by_uuid()
    gpus_by_index = {str(i): uuid for uuid, i in inventory.gpu_indexes.items()}
    ids = list(request.device_ids) or [str(i) for i in range(request.count)]
    found: dict[str, Unit] = {}
    unknown: list[str] = []
    for ident in ids:
        units = _units_for(ident, inventory, by_uuid, gpus_by_index)
        if not units:
            unknown.append(ident)
        for unit in units:
            found[unit.uuid] = unit
    return list(found.values()), unknown


def _units_for(ident: str, inventory: Inventory, by_uuid: dict[str, Unit],
               gpus_by_index: dict[str, str]) -> list[Unit]:
    ident = ident.strip()
    if ident in by_uuid:
        return [by_uuid[ident]]
    if ident in inventory.gpu_indexes:                     # GPU-uuid of a MIG-partitioned GPU
        return units_of_gpu(inventory, ident)
    if ident in gpus_by_index:                              # "1"
        return units_of_gpu(inventory, gpus_by_index[ident])
    return [u for u in inventory.units if u.index == ident]  # "1:2"


def gpu_instances(units: Iterable[Unit]) -> dict[tuple[str, int | None], Unit]:
    """One unit per whole GPU or GPU instance (`share_key`), in the order first met: compute
    instances of one GPU instance are one share of the GPU (the largest, should they differ)."""
    found: dict[tuple[str, int | None], Unit] = {}
    for u in units:
        if u.share_key not in found or u.share > found[u.share_key].share:
            found[u.share_key] = u
    return found


def gpu_equivalents(units: Iterable[Unit]) -> float:
    """GPU-equivalents of distinct units; compute instances of one GPU instance count it once."""
    return round(sum(u.share for u in gpu_instances(units).values()), 6)


def attributable_activity(sample: UnitSample, container_pids: Sequence[int],
                          threshold: float | None = None) -> tuple[float | None, str]:
    """How busy a unit is because of one container, and how that was judged.

    No process of the container on the unit is 0 only where NVML's process lists were
    read in full.  The unit's own activity counts when the container is the only one
    computing on what that activity measures; shared with other containers, only
    per-process figures can tell, except that a whole under `threshold` bounds every part.
    """
    mine = [p for p in sample.processes if p.pid in container_pids]
    if not mine:
        if sample.process_gap:
            return None, f"process list incomplete ({sample.process_gap})"
        return 0.0, NO_PROCESS
    others = [p for p in sample.processes + sample.shared_with if p.pid not in container_pids]
    if not others:
        if sample.activity is None:
            return None, sample.unknown_reason or "activity not measurable"
        return sample.activity, sample.activity_source or "device"
    if all(p.sm_util is not None for p in mine):
        return float(sum(p.sm_util or 0.0 for p in mine)), PER_PROCESS
    if sample.activity is not None and threshold is not None and sample.activity < threshold:
        return sample.activity, f"{sample.activity_source or 'device'} of the shared whole, under the threshold"
    return None, "shared with other containers and NVML gives no per-process utilization"
