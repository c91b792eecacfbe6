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

`picture` is the one place that says what keeps a device from whom, containers nobody
owns included; the allocator chooses from it and the start check (`kept_from`) judges a
starting container against it, so a device the allocator hands out is never one the
start check stops a container for.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable, Sequence, TypeGuard

from ds01d.rules.gpu_units import Unit, gpu_equivalents


@dataclass(frozen=True)
class Claim:
    """What keeps a unit for one user: a configured reservation, a pending allocation, or
    a hold after that user's container stopped."""

    kind: str                       # "reserved" | "allocated" | "held", strongest first
    user: str
    until: float | None             # None: held until the stopped container is removed
    container: str = ""             # the stopped container a hold keeps the unit for
    note: str = ""                  # why a reservation was made

    def phrase(self) -> str:
        return f"{_VERBS[self.kind]} {self.user}"


_VERBS = {"reserved": "reserved for", "allocated": "allocated to", "held": "held for"}


@dataclass(frozen=True)
class Hold:
    """A stopped container whose devices are kept for its owner until `until`."""

    container: str
    owner: str | None
    name: str
    units: tuple[str, ...]
    until: float | None        # None: until the container is removed


@dataclass(frozen=True)
class Running:
    """A running container on its units, as the allocator sees it."""

    owner: str | None
    priority: int
    name: str
    units: tuple[str, ...]


@dataclass(frozen=True)
class UnitLoad:
    """One unit as the allocator sees it."""

    unit: Unit
    users: tuple[tuple[str, int], ...] = ()     # (user, priority) of containers running on it
    claims: tuple[Claim, ...] = ()              # strongest first
    unowned: tuple[str, ...] = ()               # names of running containers nobody owns

    @property
    def load(self) -> int:
        return len(self.users) + len(self.unowned)

    def taken_for(self, user: str | None) -> Claim | None:
        """What keeps this unit from `user` (None when nothing does)."""
        return next((c for c in self.claims if c.user != user), None)


def keeps_after_stop(owner: str | None) -> TypeGuard[str]:
    """Whether a stopped container's devices are held for it: a hold keeps a device for its
    owner's return, and a container nobody owns (root's and system accounts' included) has
    no one to keep it for, so its devices are free the moment it stops."""
    return owner is not None


def picture(units: Sequence[Unit], running: Iterable[Running], holds: Iterable[Hold],
            claims: Iterable[tuple[Iterable[str], Claim]]) -> list[UnitLoad]:
    """Every unit with what runs on it and what keeps it, by one rule for everyone:

    - a running container occupies its units until it has stopped (one ds01d is stopping
      too: the device is busy until the stop is done); one nobody owns occupies them for
      everyone (there is no owner or priority to share with), and the allocator names it;
    - a hold keeps the units for its owner only while `keeps_after_stop` says so;
    - reservations and pending allocations (`claims`) keep the units for their user.
    """
    users: dict[str, dict[str, int]] = {}
    unowned: dict[str, list[str]] = {}
    for run in running:
        for uuid in run.units:
            if run.owner is None:
                unowned.setdefault(uuid, []).append(run.name)
            else:
                users.setdefault(uuid, {}).setdefault(run.owner, run.priority)
    kept: dict[str, list[Claim]] = {}
    for uuids, claim in claims:
        for uuid in uuids:
            kept.setdefault(uuid, []).append(claim)
    for hold in holds:
        if keeps_after_stop(hold.owner):
            for uuid in hold.units:
                kept.setdefault(uuid, []).append(Claim("held", hold.owner, hold.until, hold.name))
    order = list(_VERBS)
    return [UnitLoad(u, tuple(users.get(u.uuid, {}).items()),
                     tuple(sorted(dict.fromkeys(kept.get(u.uuid, [])), key=lambda c: order.index(c.kind))),
                     tuple(unowned.get(u.uuid, ())))
            for u in units]


def kept_from(user: str | None, uuids: Iterable[str], loads: Sequence[UnitLoad]) -> list[tuple[Unit, Claim]]:
    """The units of a starting container of `user` that something keeps for someone else: the
    very test (`UnitLoad.taken_for`) the allocator applies before handing a unit out."""
    by_uuid = {load.unit.uuid: load for load in loads}
    found = []
    for uuid in dict.fromkeys(uuids):
        load = by_uuid.get(uuid)
        claim = load.taken_for(user) if load is not None else None
        if load is not None and claim is not None:
            found.append((load.unit, claim))
    return found


@dataclass(frozen=True)
class Ask:
    """What a user asks for and what they may have."""

    user: str
    priority: int
    count: int = 1                 # units wanted (ignored with full)
    full: bool = False             # one whole physical GPU
    quota: float | None = None     # GPU-equivalents; None = unlimited
    used: float = 0.0              # GPU-equivalents already held (running, on hold, allocated)
    held: tuple[Unit, ...] = ()    # those units, where known: a new compute instance of a GPU
                                   # instance the user already holds adds nothing to the quota
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
    if not load.load:
        return True
    return ask.allow_sharing and not load.unowned and all(p == ask.priority for _, p in load.users) and \
        all(u != ask.user for u, _ in load.users)


def _order(load: UnitLoad) -> tuple:
    return (load.load, load.unit.share, load.unit.gpu_index, load.unit.index)


def choose(ask: Ask, loads: Sequence[UnitLoad]) -> Answer:
    """The units to give, following the rules above; or why not."""
    if ask.full and not ask.may_full_gpu:
        return Answer(reason=f"{ask.user} may not have whole GPUs (allow_full_gpu); ask for MIG instances")
    options = _whole_gpus(ask, loads) if ask.full else _units(ask, loads)
    if not options and ask.quota is not None and ask.used >= ask.quota - 1e-6:
        # A device freeing up would still be over the quota: waiting would only waste the caller's minutes.
        return Answer(reason=f"{ask.user} holds {ask.used:g} GPU-equivalents, all of the quota of {ask.quota:g}; "
                             "stop or remove a GPU container of yours first (ds01-gpu-status shows them)")
    if not options:
        return Answer(wait=True, reason=_why_none(ask, loads))
    for units in options:
        if ask.quota is None or _with(ask, units) <= ask.quota + 1e-6:
            return Answer(tuple(units))
    smallest = min(gpu_equivalents(units) for units in options)
    return Answer(reason=f"{ask.user} holds {ask.used:g} GPU-equivalents; {smallest:g} more would pass the "
                         f"quota of {ask.quota:g}")


def _with(ask: Ask, units: Sequence[Unit]) -> float:
    """GPU-equivalents the user would hold with `units` (distinct GPU instances counted once)."""
    if ask.held:
        return gpu_equivalents((*ask.held, *units))
    return ask.used + gpu_equivalents(units)


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
            if all(not l.load and l.taken_for(ask.user) is None for l in group)]
    return sorted(free, key=lambda units: (len(units) > 1, units[0].gpu_index))


def _why_none(ask: Ask, loads: Sequence[UnitLoad]) -> str:
    """What holds the devices: the seeds' helpful message."""
    if not loads:
        return "this host has no GPUs"
    busy = []
    for load in loads:
        taken = load.taken_for(ask.user)
        if taken is not None:
            busy.append(f"{load.unit.index} {taken.phrase()}" + (f" until {_hm(taken.until)}" if taken.until else ""))
        elif load.load:
            who = [u for u, _ in load.users] + [f"an unowned container {name}" for name in load.unowned]
            busy.append(f"{load.unit.index} in use by {', '.join(who)}")
    return "no device fits: " + "; ".join(busy)


def _hm(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%H:%M UTC")


def held_by(user: str, loads: Iterable[UnitLoad]) -> tuple[Unit, ...]:
    """The units a user already has: those they run on, hold or were allocated."""
    return tuple(l.unit for l in loads if any(u == user for u, _ in l.users) or
                 any(c.user == user and c.kind != "reserved" for c in l.claims))


def used_by(user: str, loads: Iterable[UnitLoad]) -> float:
    """GPU-equivalents a user already has (`held_by`, distinct GPU instances counted once)."""
    return gpu_equivalents(held_by(user, loads))
