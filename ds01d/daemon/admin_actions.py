"""The actions users and admins ask for over the status socket: allocate, release, extend.

The socket's threads only hand requests over; this module answers them on the
main loop's thread, the one writer, so an action and a sampling pass never race
on a hold or a deadline.  Every answer is an HTTP status and a JSON body; every
action taken is journalled with who asked.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol

from ds01d.config import Config
from ds01d.config.quantities import format_duration
from ds01d.daemon.allocation_service import Allocations, Host
from ds01d.daemon.gpu_watch import GpuWatch
from ds01d.daemon.status_model import Caller, iso
from ds01d.daemon.reload import ReloadOutcome
from ds01d.daemon.metrics_export import MetricsExport
from ds01d.daemon.request_args import AdmitArgs, ExtendArgs, FreeArgs, RefusedArgs, ReleaseArgs, ReloadArgs, \
    UsageArgs
from ds01d.daemon.status_server import AdminRequest, deliver
from ds01d.host.decision_log import DecisionLog
from ds01d.host.state_db import Store
from ds01d.rules.limits import EffectiveLimits
from ds01d.rules.records import ContainerRecord
from ds01d.rules.usage_window import window

Answer = tuple[int, dict[str, Any]]


class DaemonState(Protocol):
    """What the actions read and change of the daemon's world."""

    config: Config
    store: Store
    gpus: GpuWatch
    allocations: Allocations
    log: DecisionLog
    metrics: MetricsExport
    clock: Callable[[], float]

    def limits_for(self, owner: str | None) -> EffectiveLimits: ...
    def host(self) -> Host: ...
    def reload(self) -> ReloadOutcome: ...
    def admission(self, uid: int, build: bool = False) -> Answer: ...


class AdminActions:
    def __init__(self, daemon: DaemonState):
        self.daemon = daemon

    def answer(self, request: AdminRequest) -> None:
        """Reply to `request` now or, for an allocation that waits, when a device frees."""
        d = self.daemon
        if request.reply.done():
            return  # its client left while it was queued
        if request.action == "allocate":
            d.allocations.request(d.host(), request.args, request.caller, request.reply)
            return
        try:
            if isinstance(request.args, ReleaseArgs):
                result = self.release(request.args, request.caller)
            elif isinstance(request.args, ExtendArgs):
                result = self.extend(request.args, request.caller)
            elif isinstance(request.args, ReloadArgs):
                result = self.reload(request.caller)
            elif isinstance(request.args, UsageArgs):
                result = self.usage(request.args, request.caller)
            elif isinstance(request.args, AdmitArgs):
                result = self.admit(request.args, request.caller)
            elif isinstance(request.args, FreeArgs):
                result = d.allocations.free(request.args.id, request.caller)
            elif isinstance(request.args, RefusedArgs):
                result = self.refused(request.args, request.caller)
            else:
                result = (404, {"error": f"no such action {request.action}"})
        except Exception as exc:  # the caller gets the error; the daemon goes on
            result = (500, {"error": f"{type(exc).__name__}: {exc}"})
        deliver(request.reply, result)

    def find_container(self, ref: str, caller: Caller) -> ContainerRecord | None:
        """A live container by name, or by an id prefix of at least 6 characters.  Where other
        users are not shown, a non-admin finds only their own (another user's container is
        "no container", not "not yours": its existence is not theirs to learn)."""
        live = self.daemon.store.live_containers()
        if not (self.daemon.config.daemon.show_other_users or caller.admin):
            live = [r for r in live if r.owner == caller.user]
        return next((r for r in live if r.name == ref), None) or \
            next((r for r in live if len(ref) >= 6 and r.id.startswith(ref)), None)

    def release(self, args: ReleaseArgs, caller: Caller) -> Answer:
        """End a hold now: for admins, and for the owner (who gives up their own reservation)."""
        d = self.daemon
        rec = self.find_container(args.container, caller)
        if rec is None:
            return 404, {"error": f"no container {args.container!r}"}
        if not caller.admin and caller.user != rec.owner:
            return 403, {"error": f"{caller.user} may not release {rec.name}: {whose(rec)}; only its "
                                  f"owner, root and members of {d.config.daemon.admin_group} may"}
        if not d.gpus.holds([rec], d.limits_for, d.clock()):
            return 409, {"error": f"{rec.name} holds no GPU (it is {rec.status}, or its hold has ended)"}
        state = d.gpus.gpu.get(rec.id)
        d.gpus.gpu.put(dataclasses.replace(state, released=d.clock()), d.clock())
        d.log.record("release", f"hold ended early by {caller.user}", user=rec.owner, container=rec.id,
                     name=rec.name, group=rec.group, slice_name=rec.slice, details={"by": caller.user})
        return 200, {"released": rec.name, "by": caller.user}

    def extend(self, args: ExtendArgs, caller: Caller) -> Answer:
        """Push a running container's next stop; owners up to policies.max_extension in all."""
        d = self.daemon
        rec = self.find_container(args.container, caller)
        seconds = args.seconds
        if rec is None:
            return 404, {"error": f"no container {args.container!r}"}
        if not caller.admin and caller.user != rec.owner:
            return 403, {"error": f"{caller.user} may not extend {rec.name}: {whose(rec)}"}
        deadline = d.gpus.upcoming.get(rec.id)
        if rec.status != "running" or deadline is None:
            return 409, {"error": f"{rec.name} has no stop ahead to push"}
        granted = d.gpus.gpu.extensions().get((rec.id, deadline.rule), 0)
        cap = d.config.policies.max_extension
        if not caller.admin and (cap is None or granted + seconds > cap):
            left = 0 if cap is None else max(0, cap - granted)
            return 403, {"error": f"owners may extend by {format_duration(cap or 0)} in all "
                                  f"(max_extension); {format_duration(left)} left for {rec.name}"}
        now = d.clock()
        d.gpus.gpu.add_extension(rec.id, deadline.rule, seconds, caller.user, now)
        new_at = deadline.at + seconds
        d.gpus.upcoming[rec.id] = deadline.extend(seconds)
        d.log.record("extend", f"{deadline.rule} stop pushed by {format_duration(seconds)} to {iso(new_at)} "
                               f"by {caller.user}", user=rec.owner, container=rec.id, name=rec.name,
                     group=rec.group, slice_name=rec.slice, details={"by": caller.user, "seconds": seconds})
        return 200, {"container": rec.name, "rule": deadline.rule, "stop_at": iso(new_at), "by": caller.user}

    def reload(self, caller: Caller) -> Answer:
        """Apply the config file now and say how it went: what `systemctl reload` runs
        (ExecReload), so a refused file fails the command the admin typed."""
        d = self.daemon
        if not caller.admin:
            return 403, {"error": f"{caller.user} may not reload ds01d; root and members of "
                                  f"{d.config.daemon.admin_group or 'no admin group'} may"}
        outcome = d.reload()
        if outcome.config is None:
            return 409, {"error": f"{outcome.refused}; the running config stays in force"}
        return 200, {"applied": outcome.config.path, "restart_needed": list(outcome.restart_needed)}

    def usage(self, args: UsageArgs, caller: Caller) -> Answer:
        """GPU time and energy per user or group on a window of days: everyone's for admins and
        where other users are shown, else the caller's own (the state file itself is root-only).

        Per group only where other users are shown (or for admins): a group's total is its
        members' use, and with one other member it is that person's, name or no name."""
        d = self.daemon
        hidden = not (caller.admin or d.config.daemon.show_other_users)
        if hidden and args.by == "group":
            return 403, {"error": "usage per group is for admins on this host, where other users "
                                  "are not shown (daemon.show_other_users is false)"}
        try:
            since, until = window(args.since_point(), args.until_point(), d.clock())
        except ValueError as exc:
            return 400, {"error": str(exc)}
        rows = d.gpus.gpu.usage_summary(since.isoformat(), until.isoformat(), args.by)
        if hidden:
            rows = [r for r in rows if r["user"] == caller.user]
        return 200, {"since": since.isoformat(), "until": until.isoformat(), "by": args.by, f"{args.by}s": rows}

    def admit(self, args: AdmitArgs, caller: Caller) -> Answer:
        """For the gateway only (root: it vouches for the uid it read from the kernel)."""
        if caller.uid != 0:
            return 403, {"error": "only the Docker gateway (root) asks for admissions"}
        return self.daemon.admission(args.uid, args.build)


    def refused(self, args: RefusedArgs, caller: Caller) -> Answer:
        """For the gateway only: one create it refused, counted by reason for the metrics."""
        if caller.uid != 0:
            return 403, {"error": "only the Docker gateway (root) reports refusals"}
        return 200, {"counted": self.daemon.metrics.tally.count("ds01_creates_refused_total", args.reason, args.count)}


def whose(rec: ContainerRecord) -> str:
    """Whose a container is, in words (never "None's")."""
    return f"it is {rec.owner}'s" if rec.owner else "it has no owner"
