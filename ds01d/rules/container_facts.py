"""A container's record, built from `docker inspect` data and the config: pure.

Joins the owner rules, the GPU request rules and limit resolution into the one
`ContainerRecord` the state database keeps, so the daemon's loop only does I/O.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict
from typing import Any, Callable, Mapping

from ds01d.config import Config
from ds01d.rules.gpu_request import gpu_request
from ds01d.rules.limits import EffectiveLimits, UnixMembers, resolve
from ds01d.rules.owners import resolve_owner
from ds01d.rules.records import ContainerRecord

_DOCKER_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def docker_time(text: str | None) -> float | None:
    """Epoch seconds of a Docker timestamp (nanosecond precision, `Z`); None for Docker's zero time."""
    m = _DOCKER_TIME.match(text or "")
    if not m or m.group(1).startswith("0001-"):
        return None
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    base = dt.datetime.fromisoformat(m.group(1) + zone).timestamp()
    return base + (float("0." + m.group(2)) if m.group(2) else 0.0)


def build_record(inspect: Mapping[str, Any], config: Config, today: dt.date, unix: UnixMembers,
                 known_user: Callable[[str], bool] | None = None,
                 system_user: Callable[[str], bool] = lambda user: user == "root",
                 admitted: Callable[[Mapping[str, str]], str | None] = lambda labels: None,
                 ) -> tuple[ContainerRecord, EffectiveLimits | None]:
    """The record of one container and, when it has an owner, the owner's limits."""
    ownership = resolve_owner(inspect, known_user, system_user, admitted)
    limits = resolve(config, ownership.owner, today, unix) if ownership.owner else None
    state = inspect.get("State") or {}
    record = ContainerRecord(
        id=inspect["Id"],
        name=(inspect.get("Name") or "").lstrip("/"),
        image=(inspect.get("Config") or {}).get("Image") or "",
        owner=ownership.owner,
        owner_signal=ownership.signal,
        kind=ownership.kind,
        group=limits.group if limits else None,
        slice=limits.slice if limits else None,
        cgroup_parent=(inspect.get("HostConfig") or {}).get("CgroupParent") or "",
        gpu_request=asdict(gpu_request(inspect)),
        flags=ownership.flags,
        status=state.get("Status") or "unknown",
        created_at=docker_time(inspect.get("Created")),
        started_at=docker_time(state.get("StartedAt")),
        finished_at=docker_time(state.get("FinishedAt")),
        pid=state.get("Pid") or None,
        protected=((inspect.get("Config") or {}).get("Labels") or {}).get("ds01.protected") == "true",
    )
    return record, limits
