"""What `ds01-gpu-status` and `ds01d status` show, as one JSON document: pure.

The daemon publishes a `StatusView` (plain data it already has: records, GPU
states, inventory, samples, upcoming deadlines, holds) after every pass and event
batch; the socket server turns it into JSON for each caller with `build`.  The
JSON schema is documented in docs/status-json.md; timestamps are ISO 8601 UTC.
Container environment, command lines and mounts are never part of it (ds01d does
not even keep them).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ds01d.rules.gpu_units import GPM_BUSY, UTILIZATION, Inventory, Unit, UnitSample
from ds01d.rules.lifecycle import Deadline
from ds01d.rules.placement import Hold
from ds01d.rules.privacy import NOBODY_HIDDEN, Redactor
from ds01d.rules.records import ContainerRecord, GpuState

SCHEMA = 1
HIDDEN_USER = "(another user)"
ACTIVITY_METRIC = f"% of time a kernel ran: {UTILIZATION} on whole GPUs, {GPM_BUSY} on MIG instances"


@dataclass(frozen=True)
class Caller:
    user: str
    uid: int
    admin: bool


@dataclass(frozen=True)
class StatusView:
    """A consistent snapshot, published by the main loop and only read afterwards."""

    now: float
    records: tuple[ContainerRecord, ...] = ()
    gpu_states: Mapping[str, GpuState] = field(default_factory=dict)
    inventory: Inventory = field(default_factory=Inventory)
    samples: Mapping[str, UnitSample] = field(default_factory=dict)
    upcoming: Mapping[str, Deadline] = field(default_factory=dict)
    holds: tuple[Hold, ...] = ()
    quotas: Mapping[str, tuple[float | None, float]] = field(default_factory=dict)  # owner -> (quota, used)
    quota_of: Callable[[str], float | None] = lambda user: None  # for callers without containers
    queue: tuple[Mapping[str, Any], ...] = ()                     # allocations waiting for a device
    recent: tuple[Mapping[str, Any], ...] = ()
    docker_connected: bool = False
    cpu_only: str | None = None
    sampling_interval: int = 10
    show_other_users: bool = True
    known_users: frozenset[str] = frozenset()    # every name ds01d might mention, for `reader`


def reader(view: StatusView, caller: Caller) -> Redactor:
    """What hides other users' names in text for this caller (nothing, for admins or when shown)."""
    if view.show_other_users or caller.admin:
        return NOBODY_HIDDEN
    return Redactor(view.known_users, caller.user, {r.name: r.owner for r in view.records})


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class _Namer:
    """Other users' names and container names, shown or hidden as the config says."""

    def __init__(self, view: StatusView, caller: Caller):
        self.hide = not view.show_other_users and not caller.admin
        self.me = caller.user

    def visible(self, owner: str | None) -> bool:
        return not self.hide or owner == self.me

    def user(self, owner: str | None) -> str | None:
        return owner if owner is None or self.visible(owner) else HIDDEN_USER


def _next(view: StatusView, rec: ContainerRecord, hold: Hold | None) -> dict[str, Any] | None:
    if rec.status == "running" and rec.id in view.upcoming:
        d = view.upcoming[rec.id]
        return {"action": "stop", "rule": d.rule, "at": iso(d.at), "in_s": max(0, round(d.at - view.now))}
    if hold is not None:
        return {"action": "release", "rule": "hold", "at": iso(hold.until),
                "in_s": None if hold.until is None else max(0, round(hold.until - view.now))}
    return None


def container_entry(view: StatusView, rec: ContainerRecord, names: _Namer,
                    holds: Mapping[str, Hold]) -> dict[str, Any]:
    state = view.gpu_states.get(rec.id) or GpuState(rec.id)
    shown = names.visible(rec.owner)
    idle_for = None if state.idle_since is None or rec.status != "running" else round(view.now - state.idle_since)
    return {
        "id": rec.id[:12] if shown else None,
        "name": rec.name if shown else None,
        "owner": names.user(rec.owner),
        "kind": rec.kind,
        "status": rec.status,
        "started_at": iso(rec.started_at),
        "age_s": None if rec.started_at is None or rec.status != "running" else round(view.now - rec.started_at),
        "stopped_at": iso(rec.finished_at) if rec.status != "running" else None,
        "verdict": state.verdict if rec.status == "running" else None,
        "activity_percent": state.activity if rec.status == "running" else None,
        "why": state.why if rec.status == "running" else None,
        "idle_since": iso(state.idle_since) if rec.status == "running" else None,
        "idle_for_s": idle_for,
        "next": _next(view, rec, holds.get(rec.id)),
        "flags": list(rec.flags) if shown else [],
    }


def unit_entry(view: StatusView, unit: Unit, users: Sequence[ContainerRecord], hold: Hold | None,
               names: _Namer, holds: Mapping[str, Hold]) -> dict[str, Any]:
    sample = view.samples.get(unit.uuid)
    if users:
        state = "in use"
    elif hold is not None:
        state = "held"
    else:
        state = "free"
    return {
        "index": unit.index, "uuid": unit.uuid, "name": unit.name, "profile": unit.profile,
        "share": unit.share,
        "activity_percent": sample.activity if sample else None,
        "activity_source": sample.activity_source if sample else None,
        "unknown_reason": (sample.unknown_reason or sample.error) if sample and sample.activity is None
        else (None if sample else "not sampled yet"),
        "memory_used_bytes": sample.memory_used if sample else None,
        "memory_total_bytes": unit.memory_total,
        "state": state,
        "held_for": None if hold is None else {"user": names.user(hold.owner), "until": iso(hold.until),
                                              "container": hold.name if names.visible(hold.owner) else None},
        "containers": [container_entry(view, r, names, holds) for r in users],
    }


def build(view: StatusView, caller: Caller, mine: bool = False) -> dict[str, Any]:
    """The status document for `caller`; `mine` keeps only devices the caller uses or holds."""
    names = _Namer(view, caller)
    holds = {h.container: h for h in view.holds}
    hold_of_unit = {u: h for h in view.holds for u in h.units}
    running = [r for r in view.records if r.status == "running" and _uses_gpus(view, r)]
    users_of: dict[str, list[ContainerRecord]] = {}
    for rec in running:
        for uuid in (view.gpu_states.get(rec.id) or GpuState(rec.id)).units:
            users_of.setdefault(uuid, []).append(rec)
    gpus = []
    for gpu_uuid, index in sorted(view.inventory.gpu_indexes.items(), key=lambda kv: kv[1]):
        units = [u for u in view.inventory.units if u.gpu_uuid == gpu_uuid]
        entries = [unit_entry(view, u, users_of.get(u.uuid, []), hold_of_unit.get(u.uuid), names, holds)
                   for u in units]
        if mine:
            entries = [e for e in entries if _touches(e, caller.user)]
            if not entries:
                continue
        first = units[0] if units else None
        gpus.append({"index": str(index), "uuid": gpu_uuid,
                     "name": (first.name.split(" MIG ")[0] if first else ""),
                     "mig": bool(first and first.is_mig), "units": entries})
    quota, used = view.quotas.get(caller.user) or (view.quota_of(caller.user), 0.0)
    mine_records = [r for r in view.records if r.owner == caller.user and _uses_gpus(view, r)]
    return {
        "schema": SCHEMA,
        "generated_at": iso(view.now),
        "caller": {"user": caller.user, "uid": caller.uid, "admin": caller.admin},
        "daemon": {"docker_connected": view.docker_connected, "driver": view.inventory.driver,
                   "cpu_only": view.cpu_only, "sampling_interval_s": view.sampling_interval,
                   "activity_metric": ACTIVITY_METRIC},
        "gpus": gpus,
        "me": {"gpu_quota": quota, "gpu_used": round(used, 6),
               "containers": [container_entry(view, r, names, holds) for r in mine_records]},
        "recent": [dict(e) for e in view.recent if e.get("user") == caller.user][:10],
        "queue": [dict(w) | {"user": names.user(w["user"])} for w in view.queue],
    }


def _uses_gpus(view: StatusView, rec: ContainerRecord) -> bool:
    """Asked for GPUs, or was found computing on one (no --gpus: CDI, --privileged, /dev mounted)."""
    state = view.gpu_states.get(rec.id)
    return rec.wants_gpu or bool(state and state.units)


def _touches(unit: Mapping[str, Any], user: str) -> bool:
    held = unit["held_for"]
    return any(c["owner"] == user for c in unit["containers"]) or bool(held and held["user"] == user)


def build_admin(view: StatusView, caller: Caller) -> dict[str, Any]:
    """Everything: the user document plus every container (unowned and flagged ones too) and the audit trail."""
    doc = build(view, caller)
    names = _Namer(view, caller)
    holds = {h.container: h for h in view.holds}
    doc["containers"] = [container_entry(view, r, names, holds) | {"owner_signal": r.owner_signal,
                                                                   "gpu_request": r.gpu_request}
                         for r in view.records]
    doc["audit"] = [dict(e) for e in view.recent]
    return doc
