"""Which free device a new container gets: the lab's allocation rules as pure functions.

The seeds' rules, in order:
- MIG instances first for users who may not have whole GPUs; whole GPUs (or a GPU
  whose MIG instances are all free) for users who may.  A GPU without MIG is handed
  out whole.
- Least-loaded device first.
- Sharing a device (when the config allows it at all) only between users of the same
  priority, so a higher-priority user is never put beside lower-priority load and
  lower-priority users share only among themselves.
- Never a device reserved for, allocated to or held for someone else; never past the
  user's GPU quota (a whole GPU counts as all its MIG instances).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable, Sequence

from ds01d.rules.gpu_units import Unit, gpu_equivalents


@dataclass(frozen=True)
class UnitLoad:
    """One unit as the allocator sees it."""

    unit: Unit
    users: tuple[tuple[str, int], ...] = ()     # (user, priority) of containers running on it
    claimed_by: str | None = None               # a hold or a pending allocation keeps it for this user
    claimed_until: float | None = None
    reserved_for: str | None = None             # a configured reservation, active now
    reserved_until: float | None = None

    @property
    def load(self) -> int:
        return len(self.users)

    def taken_for(self, user: str) -> str | None:
        """Why `user` may not have this unit (or None when they may)."""
        if self.reserved_for is not None and self.reserved_for != user:
            return f"reserved for {self.reserved_for}"
        if self.claimed_by is not None and self.claimed_by != user:
            return f"held for {self.claimed_by}"
        return None


@dataclass(frozen=True)
class Ask:
    """What a user asks for and what they may have."""

    user: str
    priority: int
    count: int = 1                 # units wanted (ignored with full)
    full: bool = False             # one whole physical GPU
    quota: float | None = None     # GPU-equivalents; None = unlimited
    used: float = 0.0              # GPU-equivalents already held (running, on hold, allocated)
    may_full_gpu: bool = False
    allow_sharing: bool = False


@dataclass(frozen=True)
class Answer:
    """`units` on success; else `wait` (something may free up) or a refusal, with the reason."""

    units: tuple[Unit, ...] = ()
    wait: bool = False
    reason: str = ""

    @property
    def granted(self) -> bool:
        return bool(self.units)


def usable(load: UnitLoad, ask: Ask) -> bool:
    """Free for this user, or shareable with users of exactly their priority."""
    if load.taken_for(ask.user) is not None:
        return False
    if not load.users:
        return True
    return ask.allow_sharing and all(p == ask.priority for _, p in load.users) and \
        all(u != ask.user for u, _ in load.users)


def _order(load: UnitLoad) -> tuple:
    return (load.load, load.unit.share, load.unit.gpu_index, load.unit.index)


def choose(ask: Ask, loads: Sequence[UnitLoad]) -> Answer:
    """The units to give, following the rules above; or why not."""
    if ask.full and not ask.may_full_gpu:
        return Answer(reason=f"{ask.user} may not have whole GPUs (allow_full_gpu); ask for MIG instances")
    options = _whole_gpus(ask, loads) if ask.full else _units(ask, loads)
    if not options:
        return Answer(wait=True, reason=_why_none(ask, loads))
    for units in options:
        if ask.quota is None or ask.used + gpu_equivalents(units) <= ask.quota + 1e-6:
            return Answer(tuple(units))
    smallest = min(gpu_equivalents(units) for units in options)
    return Answer(reason=f"{ask.user} holds {ask.used:g} GPU-equivalents; {smallest:g} more would pass the "
                         f"quota of {ask.quota:g}")


def _units(ask: Ask, loads: Sequence[UnitLoad]) -> list[list[Unit]]:
    """Candidate sets of `count` units, best first: MIG instances first for users without
    whole GPUs, whole GPUs first for those with them; least loaded, then smallest."""
    fits = sorted((l for l in loads if usable(l, ask)), key=_order)
    mig = [l.unit for l in fits if l.unit.is_mig]
    whole = [l.unit for l in fits if not l.unit.is_mig]
    groups = (whole, mig) if ask.may_full_gpu else (mig, whole)
    options = [g[:ask.count] for g in groups if len(g) >= ask.count]
    mixed = (groups[0] + groups[1])[:ask.count]
    if not options and len(mixed) == ask.count:
        options.append(mixed)
    return options


def _whole_gpus(ask: Ask, loads: Sequence[UnitLoad]) -> list[list[Unit]]:
    """Whole physical GPUs: a GPU without MIG, or every instance of a MIG GPU, all free."""
    by_gpu: dict[str, list[UnitLoad]] = {}
    for load in loads:
        by_gpu.setdefault(load.unit.gpu_uuid, []).append(load)
    free = [[l.unit for l in group] for group in by_gpu.values()
            if all(not l.users and l.taken_for(ask.user) is None for l in group)]
    return sorted(free, key=lambda units: (len(units) > 1, units[0].gpu_index))


def _why_none(ask: Ask, loads: Sequence[UnitLoad]) -> str:
    """What holds the devices: the seeds' helpful message."""
    if not loads:
        return "this host has no GPUs"
    busy = []
    for load in loads:
        taken = load.taken_for(ask.user)
        if taken is not None:
            until = load.reserved_until if load.reserved_for else load.claimed_until
            busy.append(f"{load.unit.index} {taken}" + (f" until {_hm(until)}" if until else ""))
        elif load.users:
            busy.append(f"{load.unit.index} in use by {', '.join(u for u, _ in load.users)}")
    return "no device fits: " + "; ".join(busy)


def _hm(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%H:%M UTC")


def used_by(user: str, loads: Iterable[UnitLoad]) -> float:
    """GPU-equivalents a user already has: units they run on, hold or were allocated."""
    return gpu_equivalents(l.unit for l in loads
                           if any(u == user for u, _ in l.users) or l.claimed_by == user)
