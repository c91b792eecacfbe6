"""A container and its GPU state as ds01d keeps them: plain, immutable data.

The rules judge these and the state database stores them; they live here, below
both, so that a rule never has to import the database to name what it judges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ContainerRecord:
    """One container as ds01d last saw and judged it."""

    id: str
    name: str
    image: str
    owner: str | None
    owner_signal: str | None
    kind: str
    group: str | None
    slice: str | None
    cgroup_parent: str
    gpu_request: dict[str, Any]
    flags: tuple[str, ...]
    status: str
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    pid: int | None = None
    protected: bool = False

    @property
    def wants_gpu(self) -> bool:
        return bool(self.gpu_request.get("source"))


@dataclass(frozen=True)
class GpuState:
    """What ds01d measured and decided about one container's GPUs."""

    container: str
    units: tuple[str, ...] = ()
    idle_since: float | None = None
    verdict: str | None = None
    why: str | None = None
    activity: float | None = None
    released: float | None = None
