"""The ds01d main loop: one thread that owns every state change.

Docker events (from the reader thread), results of stops (from the worker pool),
reload and stop requests (from signal handlers, as flags) all meet here.  The
loop never blocks for longer than a tick, so the systemd watchdog sees a ping
unless the loop itself is stuck, which is exactly what the watchdog is for.

Order on (re)connect: the events stream is opened first, from where the last
handled event left off, then the full listing is reconciled.  An event that
races the listing is seen twice, which is harmless because handling a container
is idempotent; no container can be missed.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import os
import queue
import signal
import syslog
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from ds01d.config import Config, ConfigError, load_config
from ds01d.config.checks import host_problems
from ds01d.rules.container_facts import build_record
from ds01d.host.decision_log import DecisionLog, JournalSend, journald_send
from ds01d.host.docker_engine import CONNECTION_ERRORS, DockerAdapter, DockerEvent, StreamEnded
from ds01d.rules.enforcement import (Action, excess_running, max_containers_reason, outside_slice_action,
                               unowned_action)
from ds01d.daemon.allocation_service import Allocations, Host
from ds01d.daemon.gpu_watch import GpuWatch
from ds01d.rules.gpu_units import gpu_equivalents
from ds01d.daemon.status_model import Caller, Hold, StatusView, iso
from ds01d.daemon.status_server import AdminRequest, StatusApp, StatusServer
from ds01d.rules.limits import EffectiveLimits, resolve, slice_properties
from ds01d.host.nvml import Nvml
from ds01d.host.sd_notify import Notifier
from ds01d.config.quantities import format_cpus, format_duration, format_size
from ds01d.host.state_db import Store
from ds01d.rules.records import ContainerRecord
from ds01d.host.slices import INFINITY, SliceError, SystemdSlices
from ds01d.host.messages import run_notify_command, tell_user
from ds01d.host.unix_groups import is_local_user, unix_group_members

TICK = 0.2
STATUS_EVERY = 1.0            # seconds between STATUS= refreshes (a query over every container)
MAX_BACKOFF = 30.0
UNIX_CACHE_SECONDS = 60.0
#: Event actions that say nothing about a container's owner, limits or state.
_QUIET_ACTIONS = frozenset({"exec_create", "exec_start", "exec_die", "exec_detach", "attach", "detach", "resize",
                            "top", "commit", "copy", "export", "archive-path", "extract-to-dir",
                            "health_status"})


@dataclass(frozen=True)
class WorkerError:
    """Something a worker thread could not do (a notify command that failed, say)."""

    message: str


@dataclass(frozen=True)
class StopDone:
    """A stop that ran on the worker pool, and its error if it failed."""

    container: str
    error: str | None
    removed: bool = False


def load_checked_config(path: str, today: dt.date) -> Config:
    """A config that both the file and the host accept (the same rule as `ds01d check-config`)."""
    config = load_config(path)
    unix = unix_group_members(g.unix_group for g in config.groups.values() if g.unix_group)
    errors = [p for p in host_problems(config, today, unix) if not p.warning]
    if errors:
        raise ConfigError(errors)
    return config


def event_cursor(event: dict[str, Any]) -> str | None:
    """The event's time as Docker's `since` takes it ("seconds.nanoseconds")."""
    nano = event.get("timeNano")
    if isinstance(nano, int):
        return f"{nano // 1_000_000_000}.{nano % 1_000_000_000:09d}"
    return str(event["time"]) if isinstance(event.get("time"), int) else None


class Daemon:
    """ds01d itself: construct with a valid config, then `run()` until SIGTERM."""

    def __init__(self, config: Config, *, docker_factory: Callable[[], DockerAdapter] = DockerAdapter,
                 slices_factory: Callable[[], SystemdSlices] = SystemdSlices,
                 notifier: Notifier | None = None, send: JournalSend = journald_send,
                 clock: Callable[[], float] = time.time, nvml_open: Callable[[], Nvml] = Nvml.open):
        self.config = config
        self.docker_factory = docker_factory
        self.slices_factory = slices_factory
        self.notifier = notifier or Notifier()
        self.clock = clock
        self.store = Store(f"{config.daemon.state_dir}/state.db")
        self.log = DecisionLog(self.store, send, clock)
        self.events: queue.Queue = queue.Queue()
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="docker-stop")
        self.docker: DockerAdapter | None = None
        self.slices: SystemdSlices | None = None
        self.generation = 0
        self.backoff = 0.5
        self.reconnect_at = 0.0
        self.ready = False
        self.stop_requested = False
        self.reload_requested = False
        self.last_error: str | None = None
        self.applied: dict[str, tuple[str, tuple[tuple[str, Any], ...]]] = {}
        self.pending_stops: set[str] = set()
        self.said: set[tuple[str, str, str]] = set()
        self._unix: tuple[float, dict[str, frozenset[str]]] | None = None
        self._limits: dict[str | None, EffectiveLimits] = {}
        self.gpus = GpuWatch(self.store, clock, nvml_open)
        self.allocations = Allocations(self.gpus.gpu, self.log)
        self.next_pass = 0.0
        self.next_status = 0.0
        self.next_publish = 0.0
        self.dirty = True
        self.status_app = StatusApp(self.events.put, config.daemon.admin_group)
        self.server: StatusServer | None = None
        self.last_alive = float(self.store.get_meta("last_alive") or 0.0)

    # --- the loop -----------------------------------------------------------

    def run(self) -> int:
        signal.signal(signal.SIGHUP, lambda *_: setattr(self, "reload_requested", True))
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stop_requested", True))
        signal.signal(signal.SIGINT, lambda *_: setattr(self, "stop_requested", True))
        self.notifier.status("starting: connecting to Docker")
        self.open_gpus()
        self.serve_status()
        try:
            while not self.stop_requested:
                self.notifier.watchdog()
                if self.docker is None and time.monotonic() >= self.reconnect_at:
                    self.connect()
                if self.reload_requested:
                    self.reload()
                if self.docker is not None and time.monotonic() >= self.next_pass:
                    self.sampling_pass()
                if self.allocations.waiters:
                    self.allocations.serve_waiters(self.host())
                    self.dirty = True
                if self.dirty and time.monotonic() >= self.next_publish:
                    self.publish_safely()
                if time.monotonic() >= self.next_status:
                    self.next_status = time.monotonic() + STATUS_EVERY
                    self.notifier.status(self.status_line())
                self.drain(TICK)
        finally:
            self.shutdown()
        return 0

    def drain(self, timeout: float) -> None:
        """Handle what arrives within `timeout`, then return so the loop can ping the watchdog."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0 and not self.stop_requested:
            try:
                item = self.events.get(timeout=left)
            except queue.Empty:
                return
            self.handle(item)

    def handle(self, item: object) -> None:
        self.dirty = True
        if isinstance(item, AdminRequest):
            self.admin_request(item)
        elif isinstance(item, DockerEvent):
            if item.generation == self.generation:
                self.on_event(item.event)
        elif isinstance(item, StreamEnded):
            if item.generation == self.generation and self.docker is not None:
                self.disconnected(item.error)
        elif isinstance(item, WorkerError):
            self.error(item.message)
        elif isinstance(item, StopDone):
            self.pending_stops.discard(item.container)
            if item.error:
                verb = "removing" if item.removed else "stopping"
                self.error(f"{verb} {item.container[:12]} failed: {item.error}")

    def shutdown(self) -> None:
        self.notifier.stopping()
        for waiter in self.allocations.waiters:  # nobody will serve them now: say so rather than time out
            waiter.reply.set_result((503, {"error": "ds01d is stopping; ask again in a moment"}))
        self.allocations.waiters.clear()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            try:
                os.unlink(self.config.daemon.socket_path)
            except OSError:
                pass
        if self.docker is not None:
            self.docker.stop_events()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.gpus.close()
        if self.slices is not None:
            self.slices.close()
        self.store.close()

    # --- Docker connection ----------------------------------------------------

    def connect(self) -> None:
        try:
            docker = self.docker_factory()
            docker.ping()
            self.generation += 1
            docker.start_events(self.store.get_meta("last_event"), self.events, self.generation)
            self.docker = docker
            started = time.monotonic()
            count = self.reconcile()
        except CONNECTION_ERRORS as exc:
            self.docker = None
            self.last_error = f"Docker: {exc}"
            self.reconnect_at = time.monotonic() + self.backoff
            self.backoff = min(self.backoff * 2, MAX_BACKOFF)
            self.notifier.status(f"waiting for Docker (retry in {self.backoff:.0f}s): {exc}")
            return
        self.backoff = 0.5
        self.log.record("docker-connected", f"reconciled {count} containers in "
                        f"{time.monotonic() - started:.2f}s")
        if not self.ready:
            self.ready = True
            self.notifier.ready()

    def disconnected(self, why: str) -> None:
        assert self.docker is not None
        self.docker.close()
        self.docker = None
        self.last_error = f"Docker: {why}"
        self.reconnect_at = time.monotonic() + self.backoff
        self.log.record("docker-disconnected", why, priority=syslog.LOG_WARNING)

    def reconcile(self) -> int:
        """Bring the database in line with Docker's full listing; enforce on what runs.

        Inspects run four at a time; the watchdog is fed as results come in, so a
        host with thousands of containers is not mistaken for a stuck loop.
        """
        assert self.docker is not None
        docker = self.docker
        ids = docker.container_ids()
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            for done, info in enumerate(pool.map(docker.inspect, ids), 1):
                if info is not None:
                    self.observe(info, "reconcile")
                self.notifier.watchdog()
                if done % 100 == 0:
                    self.notifier.status(f"reconciling with Docker: {done}/{len(ids)} containers")
        for gone in self.store.live_ids() - set(ids):
            self.store.mark_removed(gone)
        return len(ids)

    # --- events ----------------------------------------------------------------

    def on_event(self, event: dict[str, Any]) -> None:
        action = (event.get("Action") or event.get("status") or "").split(":")[0]
        container_id = event.get("id") or (event.get("Actor") or {}).get("ID")
        if container_id and action not in _QUIET_ACTIONS:
            if action == "destroy":
                self.store.mark_removed(container_id)
            else:
                info = self.docker.inspect(container_id) if self.docker else None
                if info is None:
                    self.store.mark_removed(container_id)
                else:
                    self.observe(info, action)
        cursor = event_cursor(event)
        if cursor:
            self.store.set_meta("last_event", cursor)

    def observe(self, info: dict[str, Any], trigger: str) -> None:
        """Record one container as Docker shows it now, then apply the rules to it."""
        record, limits = build_record(info, self.config, self.today(), self.unix_members(), is_local_user)
        previous = self.store.container(record.id)
        self.store.upsert_container(record, self.clock())
        if previous is None or (previous.owner, previous.kind, previous.flags) != \
                (record.owner, record.kind, record.flags):
            self.say_recorded(record, previous)
        elif previous.name != record.name:
            self.log.record("rename", f"renamed from {previous.name}", user=record.owner,
                            container=record.id, name=record.name)
        if limits is not None:
            self.ensure_slice(limits)
        if record.status == "running":
            self.enforce(record, limits, info, trigger)

    def say_recorded(self, record: ContainerRecord, previous: ContainerRecord | None) -> None:
        if record.owner:
            reason = f"owner {record.owner} by {record.owner_signal}, kind {record.kind}"
        else:
            reason = f"no owner found, kind {record.kind}"
        gpu = record.gpu_request
        if gpu.get("all_gpus") or gpu.get("device_ids") or gpu.get("count"):
            reason += f", GPU request via {gpu['source']}"
        if record.flags:
            reason += "; flagged: " + "; ".join(record.flags)
        self.log.record("record" if previous is None else "re-record", reason, user=record.owner,
                        container=record.id, name=record.name, group=record.group, slice_name=record.slice,
                        priority=syslog.LOG_WARNING if record.flags else syslog.LOG_INFO,
                        details={"claims": list(record.flags), "gpu_request": gpu})

    # --- slices ----------------------------------------------------------------

    def ensure_slice(self, limits: EffectiveLimits) -> None:
        """The owner's slice carries their current limits (set once per change, read back)."""
        props = slice_properties(limits)
        key = (limits.slice, tuple(sorted(props.items())))
        if self.applied.get(limits.user) == key:
            return
        try:
            if self.slices is None:
                self.slices = self.slices_factory()
            result = self.slices.apply(limits.slice, props, f"ds01 limits for {limits.user} "
                                                            f"(group {limits.group})")
        except (SliceError, OSError) as exc:
            self.slices = None
            self.error(f"slice {limits.slice}: {exc}", user=limits.user)
            return
        self.applied[limits.user] = key
        if result.mismatches:
            self.log.record("slice-mismatch", "; ".join(result.mismatches), user=limits.user,
                            group=limits.group, slice_name=limits.slice, priority=syslog.LOG_ERR)
            return
        ignored = f" ({', '.join(result.ignored)} not enforceable on cgroup v1)" if result.ignored else ""
        self.log.record("slice-limits", describe_limits(limits) + ignored, user=limits.user,
                        group=limits.group, slice_name=limits.slice,
                        details={k: v for k, v in result.actual.items()})

    # --- rules -------------------------------------------------------------------

    def enforce(self, record: ContainerRecord, limits: EffectiveLimits | None, info: dict[str, Any],
                trigger: str = "start") -> None:
        action = unowned_action(record, self.config.policies)
        if action is not None:
            self.carry_out(record, action, "unowned")
        if record.wants_gpu and self.just_started(record, trigger):
            verdict = self.gpus.check_start(record, limits or self.limits_for(record.owner), self.config.policies,
                                            self.store.live_containers(), self.limits_for)
            if verdict is None:
                verdict = self.allocations.on_start(self.host(), record, self.gpus.units_of(record)[0])
            if verdict is not None:
                self.carry_out(record, Action(verdict[0], verdict[1]), "gpu-start")
        if limits is None:
            return
        owned = [r for r in self.store.containers_of(limits.user) if r.id not in self.pending_stops]
        limit = limits["max_containers"]
        for extra in excess_running(owned, limit):
            running = sum(1 for r in owned if r.status == "running")
            self.carry_out(extra, Action("stop", max_containers_reason(record.owner or "", running, limit)),
                           "max-containers")
        action = outside_slice_action(record, limits, self.config.policies, info.get("HostConfig") or {})
        if action is not None:
            self.carry_out(record, action, "outside-slice")

    def just_started(self, record: ContainerRecord, trigger: str) -> bool:
        """A start event, or a container that started while ds01d was not watching."""
        if trigger == "start":
            return True
        # On the very first start there is no "before": what runs then is the baseline, not a violation.
        return trigger == "reconcile" and self.last_alive > 0 and (record.started_at or 0.0) > self.last_alive

    def carry_out(self, record: ContainerRecord, action: Action, rule: str) -> None:
        what = (record.id, rule, action.kind)
        fields = dict(user=record.owner, container=record.id, name=record.name, group=record.group,
                      slice_name=record.slice)
        if action.kind == "warn":
            if what not in self.said:
                self.said.add(what)
                self.log.record(f"warn-{rule}", action.reason, priority=syslog.LOG_WARNING, **fields)
        elif action.kind == "cap":
            self.cap(record, action, rule, fields)
        elif action.kind == "stop" and record.id not in self.pending_stops:
            self.pending_stops.add(record.id)
            self.log.record("stop", action.reason, priority=syslog.LOG_WARNING, details={"rule": rule}, **fields)
            self.tell(record, "stop", f"stopping {record.name}: {action.reason}", None)
            grace = self.config.policies.sigterm_grace
            self.pool.submit(self.docker_job, record.id, lambda d: d.stop(record.id, grace))

    def cap(self, record: ContainerRecord, action: Action, rule: str, fields: dict[str, Any]) -> None:
        assert self.docker is not None
        caps = " ".join(part for part in (
            f"--cpus={format_cpus(action.cpus)}" if action.cpus is not None else "",
            f"--memory={format_size(action.memory)}" if action.memory is not None else "") if part)
        try:
            self.docker.update_caps(record.id, action.cpus, action.memory)
        except CONNECTION_ERRORS as exc:
            self.error(f"capping {record.name}: {exc}", user=record.owner)
            return
        self.log.record("cap", f"{action.reason}; applied {caps}", details={"rule": rule}, **fields)

    # --- GPU passes and the Actuator the GPU watch calls back --------------------------

    def open_gpus(self) -> None:
        cpu_only = self.gpus.open()
        if cpu_only is not None:
            self.log.record("gpu-cpu-only", cpu_only, priority=syslog.LOG_WARNING)
            return
        inv = self.gpus.inventory
        mig = sum(1 for u in inv.units if u.is_mig)
        self.log.record("gpu-inventory", f"NVML driver {inv.driver}: {len(inv.gpu_indexes)} GPUs, "
                                         f"{len(inv.units) - mig} whole, {mig} MIG instances",
                        details={"units": [u.index for u in inv.units], "errors": self.gpus.nvml.errors
                                 if self.gpus.nvml else {}})

    def sampling_pass(self) -> None:
        interval = self.config.daemon.sampling_interval
        self.next_pass = time.monotonic() + interval
        self._limits.clear()  # Unix groups and override expiry may have moved since the last pass
        try:
            self.gpus.run_pass(self.store.live_containers(), self.limits_for, self.config.policies, interval, self)
            self.allocations.expire(self.clock())
        except Exception as exc:  # one bad pass must not take the daemon down; the journal says why
            self.error(f"sampling pass failed: {type(exc).__name__}: {exc}")
        self.last_alive = self.clock()
        self.store.set_meta("last_alive", repr(self.last_alive))
        self.dirty = True

    def limits_for(self, owner: str | None) -> EffectiveLimits:
        """The owner's limits (an unowned container gets the default group's), cached for one pass."""
        if owner not in self._limits:
            self._limits[owner] = resolve(self.config, owner or "", self.today(), self.unix_members())
        return self._limits[owner]

    def stop(self, record: ContainerRecord, reason: str, rule: str) -> None:
        self.carry_out(record, Action("stop", reason), rule)

    def warn(self, record: ContainerRecord, rule: str, reason: str, deadline: float | None) -> None:
        self.log.record(f"warn-{rule}", reason, priority=syslog.LOG_WARNING, user=record.owner,
                        container=record.id, name=record.name, group=record.group, slice_name=record.slice)
        self.tell(record, f"warn-{rule}", f"{record.name} {reason}", deadline)

    def release(self, record: ContainerRecord, reason: str) -> None:
        self.log.record("release", reason, user=record.owner, container=record.id, name=record.name,
                        group=record.group, slice_name=record.slice)

    def remove(self, record: ContainerRecord, reason: str) -> None:
        if record.id in self.pending_stops:
            return
        self.pending_stops.add(record.id)
        self.log.record("remove", f"{reason}; image {record.image}", priority=syslog.LOG_WARNING,
                        user=record.owner, container=record.id, name=record.name, group=record.group,
                        slice_name=record.slice, details={"image": record.image})
        self.pool.submit(self.docker_job, record.id, lambda d: d.remove(record.id), True)

    def tell(self, record: ContainerRecord, action: str, text: str, deadline: float | None) -> None:
        """The owner's terminals and the admin's notify command, off the main loop."""
        argv = self.config.policies.notify_command
        fields = {"DS01_USER": record.owner or "", "DS01_CONTAINER": record.id, "DS01_CONTAINER_NAME": record.name,
                  "DS01_ACTION": action, "DS01_REASON": text, "DS01_DEADLINE": "" if deadline is None else
                  dt.datetime.fromtimestamp(deadline, dt.timezone.utc).isoformat()}
        self.pool.submit(self.tell_worker, record.owner, text, argv, fields)

    def tell_worker(self, owner: str | None, text: str, argv: tuple[str, ...] | None, fields: dict[str, str]) -> None:
        if owner:
            tell_user(owner, text)
        if argv:
            error = run_notify_command(argv, fields)
            if error:
                self.events.put(WorkerError(error))

    def docker_job(self, container_id: str, job: Callable[[DockerAdapter], None], removed: bool = False) -> None:
        """Run a slow Docker call (stop with its grace, remove) on a worker with its own client,
        and report back to the loop."""
        error = None
        try:
            docker = self.docker_factory()
            try:
                job(docker)
            finally:
                docker.close()
        except Exception as exc:  # reported to the loop, which logs it
            error = f"{type(exc).__name__}: {exc}"
        self.events.put(StopDone(container_id, error, removed))

    # --- the status socket ----------------------------------------------------------------

    def serve_status(self) -> None:
        try:
            self.server = StatusServer(self.config.daemon.socket_path, self.status_app)
        except OSError as exc:
            self.error(f"status socket {self.config.daemon.socket_path}: {exc}; ds01-gpu-status will not work")
            return
        self.server.start()

    def publish_safely(self) -> None:
        try:
            self.publish()
        except Exception as exc:  # a broken status view must not take enforcement down with it
            self.error(f"status view failed: {type(exc).__name__}: {exc}")

    def publish(self) -> None:
        """A fresh StatusView for the socket's readers (at most twice a second)."""
        self.dirty = False
        self.next_publish = time.monotonic() + 0.5
        now = self.clock()
        records = tuple(self.store.live_containers())
        holds = tuple(Hold(r.id, r.owner, r.name, units, end)
                      for r, units, end in self.gpus.holds(records, self.limits_for, now))
        states = self.gpus.gpu.all()
        by_uuid = self.gpus.inventory.by_uuid()
        held: dict[str, set[str]] = {}
        for r in records:
            if r.owner and r.status == "running" and r.id in states:
                held.setdefault(r.owner, set()).update(states[r.id].units)
        for h in holds:
            if h.owner:
                held.setdefault(h.owner, set()).update(h.units)
        quotas = {owner: (self.limits_for(owner)["gpu_quota"],
                          gpu_equivalents(by_uuid[u] for u in held.get(owner, ()) if u in by_uuid))
                  for owner in {r.owner for r in records if r.owner}}
        recent = tuple({"at": iso(row["ts"]), "action": row["action"], "user": row["user"],
                        "container_name": row["container_name"], "reason": row["reason"]}
                       for row in self.store.audit(200) if row["action"] not in ("record", "slice-limits"))
        self.status_app.view = StatusView(
            now=now, records=records, gpu_states=states, inventory=self.gpus.inventory,
            samples=dict(self.gpus.samples), upcoming=dict(self.gpus.upcoming), holds=holds, quotas=quotas,
            recent=recent, docker_connected=self.docker is not None, cpu_only=self.gpus.cpu_only,
            sampling_interval=self.config.daemon.sampling_interval,
            show_other_users=self.config.daemon.show_other_users, quota_of=self.quota_function(),
            queue=tuple(self.allocations.queue(now)))

    def quota_function(self) -> Callable[[str], float | None]:
        """A caller's GPU quota, for the socket's threads: pure over this config and day."""
        config, today, unix = self.config, self.today(), self.unix_members()
        return lambda user: resolve(config, user, today, unix)["gpu_quota"]

    def host(self) -> Host:
        """The allocator's picture of the moment."""
        now = self.clock()
        records = self.store.live_containers()
        holds = [Hold(r.id, r.owner, r.name, units, end) for r, units, end in
                 self.gpus.holds(records, self.limits_for, now)]
        return Host(now, self.config, self.gpus.inventory, records, self.gpus.gpu.all(), holds, self.limits_for)

    def admin_request(self, request: AdminRequest) -> None:
        if request.action == "allocate":  # answered now or, for a waiter, when a device frees
            self.allocations.request(self.host(), request.args, request.caller, request.reply)
            self.dirty = True
            return
        try:
            handler = {"release": self.release_request, "extend": self.extend_request}[request.action]
            result = handler(request.args, request.caller)
        except Exception as exc:  # the caller gets the error; the daemon goes on
            result = (500, {"error": f"{type(exc).__name__}: {exc}"})
        request.reply.set_result(result)

    def find_container(self, ref: Any) -> ContainerRecord | None:
        if not isinstance(ref, str) or not ref:
            return None
        live = self.store.live_containers()
        return next((r for r in live if r.name == ref), None) or \
            next((r for r in live if len(ref) >= 6 and r.id.startswith(ref)), None)

    def release_request(self, args: dict[str, Any], caller: Caller) -> tuple[int, dict[str, Any]]:
        """End a hold now: for admins, and for the owner (who gives up their own reservation)."""
        rec = self.find_container(args.get("container"))
        if rec is None:
            return 404, {"error": f"no container {args.get('container')!r}"}
        if not caller.admin and caller.user != rec.owner:
            return 403, {"error": f"{caller.user} may not release {rec.name}: it is {rec.owner}'s; only its "
                                  f"owner, root and members of {self.config.daemon.admin_group} may"}
        hold = [h for h in self.gpus.holds([rec], self.limits_for, self.clock())]
        if not hold:
            return 409, {"error": f"{rec.name} holds no GPU (it is {rec.status}, or its hold has ended)"}
        state = self.gpus.gpu.get(rec.id)
        self.gpus.gpu.put(dataclasses.replace(state, released=self.clock()), self.clock())
        self.log.record("release", f"hold ended early by {caller.user}", user=rec.owner, container=rec.id,
                        name=rec.name, group=rec.group, slice_name=rec.slice, details={"by": caller.user})
        self.dirty = True
        return 200, {"released": rec.name, "by": caller.user}

    def extend_request(self, args: dict[str, Any], caller: Caller) -> tuple[int, dict[str, Any]]:
        """Push a running container's next stop; owners up to policies.max_extension in all."""
        rec = self.find_container(args.get("container"))
        seconds = args.get("seconds")
        if rec is None:
            return 404, {"error": f"no container {args.get('container')!r}"}
        if not isinstance(seconds, int) or seconds <= 0:
            return 400, {"error": "seconds must be a positive whole number"}
        if not caller.admin and caller.user != rec.owner:
            return 403, {"error": f"{caller.user} may not extend {rec.name}: it is {rec.owner}'s"}
        deadline = self.gpus.upcoming.get(rec.id)
        if rec.status != "running" or deadline is None:
            return 409, {"error": f"{rec.name} has no stop ahead to push"}
        granted = self.gpus.gpu.extensions().get((rec.id, deadline.rule), 0)
        cap = self.config.policies.max_extension
        if not caller.admin and (cap is None or granted + seconds > cap):
            left = 0 if cap is None else max(0, cap - granted)
            return 403, {"error": f"owners may extend by {format_duration(cap or 0)} in all "
                                  f"(max_extension); {format_duration(left)} left for {rec.name}"}
        now = self.clock()
        self.gpus.gpu.add_extension(rec.id, deadline.rule, seconds, caller.user, now)
        new_at = deadline.at + seconds
        self.gpus.upcoming[rec.id] = deadline.extend(seconds)
        self.log.record("extend", f"{deadline.rule} stop pushed by {format_duration(seconds)} to {iso(new_at)} "
                                  f"by {caller.user}", user=rec.owner, container=rec.id, name=rec.name,
                        group=rec.group, slice_name=rec.slice, details={"by": caller.user, "seconds": seconds})
        self.dirty = True
        return 200, {"container": rec.name, "rule": deadline.rule, "stop_at": iso(new_at), "by": caller.user}

    # --- reload --------------------------------------------------------------------

    def reload(self) -> None:
        self.reload_requested = False
        self.next_status = 0.0
        self.notifier.reloading()
        try:
            config = load_checked_config(self.config.path, self.today())
        except ConfigError as exc:
            reason = "; ".join(str(p) for p in exc.problems)
            self.log.record("reload-refused", f"kept the running config: {reason}", priority=syslog.LOG_ERR)
            self.last_error = f"reload refused: {exc.problems[0]}"
            self.notifier.ready()
            return
        if (config.daemon.state_dir, config.daemon.socket_path) != \
                (self.config.daemon.state_dir, self.config.daemon.socket_path):
            self.log.record("reload-partial", "state_dir and socket_path change only on restart",
                            priority=syslog.LOG_WARNING)
        self.config = config
        self._unix = None
        self._limits.clear()
        self.applied.clear()  # re-assert every slice, even one an admin changed by hand
        self.log.record("reload", f"applied {config.path}")
        if self.docker is not None:
            try:
                self.reconcile()
            except CONNECTION_ERRORS as exc:
                self.disconnected(str(exc))
        self.notifier.ready()

    # --- helpers ---------------------------------------------------------------------

    def today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self.clock(), dt.timezone.utc).date()

    def unix_members(self) -> dict[str, frozenset[str]]:
        now = time.monotonic()
        if self._unix is None or now - self._unix[0] > UNIX_CACHE_SECONDS:
            names = [g.unix_group for g in self.config.groups.values() if g.unix_group]
            self._unix = (now, unix_group_members(names))
        return self._unix[1]

    def error(self, message: str, user: str | None = None) -> None:
        self.last_error = message
        self.log.record("error", message, user=user, priority=syslog.LOG_ERR)

    def status_line(self) -> str:
        n = self.store.summary()
        docker = "connected" if self.docker is not None else "disconnected"
        return (f"{n['containers']} containers ({n['running']} running) of {n['users']} users; "
                f"{n['gpu_running']} running with GPUs; Docker {docker}; "
                f"last error: {self.last_error or 'none'}")


def describe_limits(limits: EffectiveLimits) -> str:
    """The slice limits as an admin reads them in `systemctl show`."""
    props = slice_properties(limits)
    def show(value: int | None, fmt: Callable[[int], str]) -> str:
        return "infinity" if value is None or value == INFINITY else fmt(value)
    return " ".join((
        f"CPUQuota={show(props['CPUQuotaPerSecUSec'], lambda v: f'{v / 10_000:g}%')}",
        f"MemoryMax={show(props['MemoryMax'], format_size)}",
        f"MemoryHigh={show(props['MemoryHigh'], format_size)}",
        f"TasksMax={show(props['TasksMax'], str)}",
    ))


def run_daemon(config_path: str) -> int:
    """`ds01d run`: exit 1 with file:line problems if the config is bad, else run until SIGTERM."""
    try:
        config = load_checked_config(config_path, dt.datetime.now(dt.timezone.utc).date())
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    return Daemon(config).run()
