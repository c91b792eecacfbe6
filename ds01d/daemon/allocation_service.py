"""Handing out devices: `ds01d allocate` requests, the wait queue, and allocations that
containers claim when they start.

The rules are in `ds01d.rules.placement`; this module keeps the state that goes with them
(allocations in the database, waiters in memory) and is driven by the main loop only.
A waiter's socket connection stays open until it is served or its wait runs out.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import syslog
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ds01d.rules.placement import Answer, Ask, Claim, Hold, Running, UnitLoad, choose, held_by, kept_from, picture
from ds01d.config import Config, ForeignDevicePolicy
from ds01d.host.decision_log import DecisionLog
from ds01d.rules.gpu_request import GpuRequest
from ds01d.rules.gpu_units import gpu_equivalents, Inventory, Unit, resolve_request
from ds01d.rules.limits import EffectiveLimits
from ds01d.config.quantities import format_duration
from ds01d.host.state_db import GpuStore
from ds01d.rules.records import ContainerRecord, GpuState
from ds01d.daemon.request_args import AllocateArgs
from ds01d.daemon.gpu_watch import utc
from ds01d.daemon.status_model import Caller, iso
from ds01d.daemon.status_server import deliver

#: Allocation requests one user may have waiting at once; each holds a connection open.
MAX_WAITING_PER_USER = 4


@dataclass(frozen=True)
class Host:
    """What the allocator reads of the daemon's world at one moment."""

    now: float
    config: Config
    inventory: Inventory
    records: Sequence[ContainerRecord]
    states: Mapping[str, GpuState]
    holds: Sequence[Hold]
    limits_for: Callable[[str | None], EffectiveLimits]


@dataclass(order=True)
class Waiter:
    sort_key: tuple[int, int]
    user: str = field(compare=False)
    ask_args: AllocateArgs = field(compare=False)
    deadline: float = field(compare=False)
    since: float = field(compare=False)
    reply: concurrent.futures.Future = field(compare=False)


class Allocations:
    def __init__(self, gpu: GpuStore, log: DecisionLog, is_system_user: Callable[[str], bool]):
        self.gpu = gpu
        self.log = log
        self.is_system_user = is_system_user
        self.waiters: list[Waiter] = []
        self._arrivals = itertools.count()

    # --- the picture --------------------------------------------------------------------

    def reservations(self, host: Host) -> dict[str, tuple[str, float, str]]:
        """unit uuid -> (user, until, reason) for configured reservations active now."""
        out: dict[str, tuple[str, float, str]] = {}
        for override in host.config.overrides.values():
            r = override.reservation
            if r is None or not r.active(host.now):
                continue
            units, _ = resolve_request(GpuRequest(device_ids=r.devices), host.inventory)
            for unit in units:
                out[unit.uuid] = (r.user, r.end.timestamp(), r.reason)
        return out

    def loads(self, host: Host) -> list[UnitLoad]:
        """Every unit with what runs on it and what keeps it (`placement.picture`)."""
        running = [Running(r.owner, host.limits_for(r.owner)["priority"], r.name, host.states[r.id].units)
                   for r in host.records if r.status == "running" and r.id in host.states]
        claims = [(units, Claim("allocated", user, expires))
                  for _, user, units, expires in self.gpu.pending_allocations()]
        claims += [((uuid,), Claim("reserved", user, until, note=reason))
                   for uuid, (user, until, reason) in self.reservations(host).items()]
        return picture(host.inventory.units, running, host.holds, claims)

    def ask(self, host: Host, user: str, args: AllocateArgs, loads: list[UnitLoad]) -> Ask:
        limits = host.limits_for(user)
        held = held_by(user, loads)
        return Ask(user, limits["priority"], count=args.count, full=args.full, quota=limits["gpu_quota"],
                   used=gpu_equivalents(held), held=held, may_full_gpu=bool(limits["allow_full_gpu"]),
                   allow_sharing=host.config.policies.allow_sharing)

    # --- requests -----------------------------------------------------------------------------

    def request(self, host: Host, args: AllocateArgs, caller: Caller,
                reply: concurrent.futures.Future) -> None:
        """Answer now, or queue the caller until a device fits or the wait runs out."""
        user = args.user or caller.user
        if user != caller.user and not caller.admin:
            deliver(reply, (403, {"error": f"{caller.user} may allocate only for themselves"}))
            return
        if self.is_system_user(user):
            # A system account owns no container (its label is flagged and ignored), so its
            # allocation could never be claimed: it would only keep a device from everyone.
            deliver(reply, (403, {"error": f"{user} is a system account and owns no containers under ds01d; "
                                           "allocate for the person who will run the container "
                                           "(ds01d allocate --user NAME), or run ds01 run as them"}))
            return
        reused = self.own_pending(host, user, args.devices)
        if reused is not None:
            deliver(reply, reused)
            return
        wait = host.config.policies.allocation_wait if args.wait_s is None else args.wait_s
        loads = self.loads(host)
        answer = choose(self.ask(host, user, args, loads), loads)
        if answer.granted:
            self.hand_over(host, user, answer, caller, reply)
        elif not answer.wait or wait <= 0:
            self.log.record("allocate-refused", answer.reason, user=user, priority=syslog.LOG_WARNING,
                            throttled=True)
            deliver(reply, (409, {"error": answer.reason}))
        elif sum(1 for w in self.waiters if w.user == user) >= MAX_WAITING_PER_USER:
            deliver(reply, (429, {"error": f"{user} already has {MAX_WAITING_PER_USER} allocation requests "
                                           "waiting; wait for one of them to be served or cancel it (Ctrl-C)"}))
        else:
            priority = host.limits_for(user)["priority"]
            self.waiters.append(Waiter((-priority, next(self._arrivals)), user, args, host.now + wait,
                                       host.now, reply))
            self.waiters.sort()
            self.log.record("allocate-wait", f"waiting up to {format_duration(wait)}: {answer.reason}", user=user,
                            throttled=True)

    def own_pending(self, host: Host, user: str, devices: Sequence[str]) -> tuple[int, dict[str, Any]] | None:
        """The user's own pending allocation when `devices` name units of it (a container made
        with what `ds01 run` or `ds01d allocate` handed out): those units again, no new grant."""
        if not devices:
            return None
        units, _ = resolve_request(GpuRequest(device_ids=tuple(devices)), host.inventory)
        wanted = {u.uuid for u in units}
        if not units or len(units) != len(devices):
            return None
        for allocation_id, owner, allocated, expires in self.gpu.pending_allocations():
            if owner == user and wanted <= set(allocated):
                return 200, {"id": allocation_id, "user": user, "expires_at": iso(expires), "reused": True,
                             "units": [self.unit_doc(u) for u in units]}
        return None

    @staticmethod
    def unit_doc(unit: Unit) -> dict[str, Any]:
        return {"uuid": unit.uuid, "index": unit.index, "profile": unit.profile, "share": unit.share}

    def free(self, allocation_id: int, caller: Caller) -> tuple[int, dict[str, Any]]:
        """Give back a pending allocation (its user, root or an admin): a create that failed."""
        mine = [user for aid, user, _, _ in self.gpu.pending_allocations() if aid == allocation_id]
        if not mine or not (caller.admin or caller.user == mine[0]):
            return 404, {"error": f"no pending allocation {allocation_id} of {caller.user}'s"}
        self.gpu.close_allocation(allocation_id, "freed")
        self.log.record("allocate-freed", f"given back by {caller.user}: no container will use it",
                        user=mine[0], details={"id": allocation_id}, throttled=True)
        return 200, {"freed": allocation_id}

    def grant(self, host: Host, user: str, answer: Answer, caller: Caller) -> tuple[int, dict[str, Any]]:
        timeout = host.config.policies.allocation_timeout
        expires = host.now + timeout
        uuids = [u.uuid for u in answer.units]
        allocation_id = self.gpu.add_allocation(user, uuids, host.now, expires)
        names = ", ".join(f"{u.index}" + (f" ({u.profile})" if u.profile else "") for u in answer.units)
        by = "" if caller.user == user else f" by {caller.user}"
        self.log.record("allocate", f"GPU {names} allocated{by}, kept until {iso(expires)} for a container to "
                                    "start on it", user=user, details={"units": uuids, "id": allocation_id})
        limits = host.limits_for(user)
        gpus = f"device={','.join(uuids)}"
        return 200, {
            "id": allocation_id, "user": user, "expires_at": iso(expires),
            "units": [self.unit_doc(u) for u in answer.units],
            "gpus": gpus, "slice": limits.slice,
            "docker_args": ["--gpus", f'"{gpus}"' if len(uuids) > 1 else gpus, f"--cgroup-parent={limits.slice}",
                            f"--label=ds01.user={user}", "--label=ds01.container_type=ds01"],
        }

    def hand_over(self, host: Host, user: str, answer: Answer, caller: Caller,
                  reply: concurrent.futures.Future) -> None:
        """Grant, and take the devices back at once if the client has already gone."""
        result = self.grant(host, user, answer, caller)
        if not deliver(reply, result):
            self.abandoned(result[1]["id"], user)

    def abandoned(self, allocation_id: int, user: str) -> None:
        """Nobody will read this grant: the devices go back to everyone now, not at expiry."""
        if self.gpu.close_allocation(allocation_id, "client gone"):
            self.log.record("allocate-abandoned", "the client left before reading its allocation; released",
                            user=user, details={"id": allocation_id}, throttled=True)

    def serve_waiters(self, host: Host) -> None:
        """Highest priority first, then first come; each gets whatever fits now."""
        still: list[Waiter] = []
        for waiter in self.waiters:
            if waiter.reply.done():
                continue  # its client left (the request was cancelled)
            loads = self.loads(host)
            answer = choose(self.ask(host, waiter.user, waiter.ask_args, loads), loads)
            if answer.granted:
                self.hand_over(host, waiter.user, answer, Caller(waiter.user, -1, False), waiter.reply)
            elif not answer.wait:
                deliver(waiter.reply, (409, {"error": answer.reason}))
            elif host.now >= waiter.deadline:
                deliver(waiter.reply, (408, {"error": self.timeout_message(waiter, answer)}))
                self.log.record("allocate-timeout", answer.reason, user=waiter.user, priority=syslog.LOG_WARNING)
            else:
                still.append(waiter)
        self.waiters = still

    @staticmethod
    def timeout_message(waiter: Waiter, answer: Answer) -> str:
        waited = format_duration(int(waiter.deadline - waiter.since))
        return (f"GPU allocation failed after {waited}: {answer.reason}.\n\nSuggestions:\n"
                "  1. Stop an idle container of yours: docker stop <name>\n"
                "  2. Wait for a hold to end or for idle containers to be stopped, and try again\n"
                "  3. See who holds what: ds01-gpu-status")

    def queue(self, now: float) -> list[dict[str, Any]]:
        return [{"user": w.user, "count": w.ask_args.count, "full": w.ask_args.full,
                 "priority": -w.sort_key[0], "waiting_s": round(now - w.since),
                 "gives_up_in_s": max(0, round(w.deadline - now))} for w in self.waiters]

    # --- containers --------------------------------------------------------------------------

    def expire(self, now: float) -> None:
        for allocation_id, user, units, expires in self.gpu.pending_allocations():
            if now >= expires:
                self.gpu.close_allocation(allocation_id, "expired")
                self.log.record("allocate-expired", f"no container started on it by {iso(expires)}; released",
                                user=user, details={"units": list(units)})

    def conflict(self, host: Host, record: ContainerRecord, units: Sequence[Unit]) -> tuple[str, str] | None:
        """("stop"/"warn", reason) when a unit of this starting container is kept for someone else:
        judged on the allocator's own picture, so what `ds01d allocate` hands out always passes."""
        found = kept_from(record.owner, [u.uuid for u in units], self.loads(host))
        if not found:
            return None
        claim = found[0][1]
        names = ", ".join(sorted(unit.index for unit, c in found if c == claim))
        if claim.kind == "held":
            until = utc(claim.until) if claim.until is not None else "its container is removed"
            return "stop", (f"GPU {names} is held for {claim.user} until {until} (stopped container "
                            f"{claim.container}); pick a free device (ds01-gpu-status)")
        why = f" ({claim.note})" if claim.note else ""
        return self._foreign(host, f"GPU {names} is {claim.phrase()} until {iso(claim.until)}{why}")

    def claim(self, record: ContainerRecord, units: Sequence[Unit]) -> None:
        """The owner's pending allocations on these units are used by this container now."""
        mine = {u.uuid for u in units}
        for allocation_id, user, allocated, _ in self.gpu.pending_allocations():
            if user == record.owner and mine & set(allocated):
                self.gpu.close_allocation(allocation_id, "claimed", record.id)

    @staticmethod
    def _foreign(host: Host, reason: str) -> tuple[str, str]:
        kind = "stop" if host.config.policies.foreign_device is ForeignDevicePolicy.STOP else "warn"
        return kind, reason + "; ask for a device with `ds01d allocate` or `ds01 run`"
