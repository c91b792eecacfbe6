"""The ds01d main loop: one thread that owns every state change.

Docker events (from the reader thread), results of stops (from the worker pool),
reload and stop requests (from signal handlers, as flags) all meet here.  The
loop never blocks for longer than a tick, so the systemd watchdog sees a ping
unless the loop itself is stuck, which is exactly what the watchdog is for.

Nothing another party does may end it: a client hanging up (SIGPIPE is ignored), a
request with any body (checked at the socket), Docker restarting or hanging (connecting
is done on a thread of its own; every call has a timeout, and an error while handling an
event means reconnect and reconcile).  An unexpected exception while handling one item
is journalled with the item and counted, and the loop goes on; only a broken loop ends
the process, with exit status 1 so that systemd restarts it.

Order on (re)connect: the events stream is opened first, from where the last
handled event left off, then the full listing is reconciled.  An event that
races the listing is seen twice, which is harmless because handling a container
is idempotent; no container can be missed.

What the loop drives lives beside it: the rules decide (`ds01d.rules`), the
actuator carries out stops and warnings, the slice keeper puts limits on slices,
the GPU watch runs the sampling pass, the allocation service keeps the wait
queue, admin actions answer the socket, and reload swaps the config.  This
module only orders them.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import os
import pwd
import queue
import secrets
import traceback
import signal
import syslog
import sys
import time
from typing import Any, Callable, Mapping

from ds01d.config import Config, ConfigError
from ds01d.config.quantities import format_duration
from ds01d.daemon.actuator import Actuator, StopDone, WorkerError
from ds01d.daemon.admin_actions import AdminActions
from ds01d.daemon.allocation_service import Allocations, Host
from ds01d.daemon.docker_connector import Connected, DockerConnector, Unreachable
from ds01d.daemon.inbox import EVENTS, REQUESTS, RESULTS, Inbox
from ds01d.daemon.gpu_watch import GpuWatch
from ds01d.daemon.metrics_export import MetricsExport
from ds01d.daemon.reload import ReloadOutcome, load_checked_config, reload_config
from ds01d.daemon.slice_keeper import SliceKeeper
from ds01d.daemon.status_model import StatusView, iso
from ds01d.daemon.status_server import AbandonedGrant, AdminRequest, StatusApp, StatusServer, deliver
from ds01d.host.decision_log import DecisionLog, JournalSend, journald_send
from ds01d.host.docker_engine import CONNECTION_ERRORS, DockerAdapter, DockerEvent, StreamEnded
from ds01d.host.nvml import Nvml, NvmlHung
from ds01d.host.sd_notify import Notifier
from ds01d.host.slices import SystemdSlices
from ds01d.host.admission_key import load_or_create
from ds01d.host.state_db import Store
from ds01d.host.unix_groups import is_local_user, is_system_user, unix_group_members
from ds01d.rules.container_facts import build_record
from ds01d.rules.enforcement import Action, excess_running, max_containers_reason, outside_slice_action, unowned_action
from ds01d.rules.gpu_units import gpu_equivalents
from ds01d.rules.admission_mark import admitted_owner, sign
from ds01d.rules.limits import EffectiveLimits, resolve
from ds01d.rules.privacy import NOBODY_HIDDEN, Redactor
from ds01d.rules.placement import Hold
from ds01d.rules.records import ContainerRecord

TICK = 0.2
STATUS_EVERY = 1.0            # seconds between STATUS= refreshes (a query over every container)
NVML_TIMEOUT = 10.0           # seconds a pass waits for NVML before its units are unknown
FEED_EVERY = 0.5              # seconds between watchdog pings while a Docker call is under way
UNIX_CACHE_SECONDS = 60.0
PRUNE_EVERY = 3600.0          # seconds between prunings of the audit trail (audit_retention)
RESTORE_EVERY = 10.0          # seconds between attempts to write an in-memory state back to disk
#: Event actions that say nothing about a container's owner, limits or state.
_QUIET_ACTIONS = frozenset({"exec_create", "exec_start", "exec_die", "exec_detach", "attach", "detach", "resize",
                            "top", "commit", "copy", "export", "archive-path", "extract-to-dir",
                            "health_status"})


def rank(item: object) -> int:
    """The inbox's order: what Docker says first, then results of our own actions, then requests."""
    if isinstance(item, (DockerEvent, StreamEnded, Connected, Unreachable)):
        return EVENTS
    if isinstance(item, (StopDone, WorkerError)):
        return RESULTS
    return REQUESTS


def describe(item: object) -> str:
    """One line naming an inbox item, for the journal when handling it failed."""
    if isinstance(item, DockerEvent):
        event = item.event
        return (f"Docker event {event.get('Action') or event.get('status')!r} of "
                f"{str(event.get('id') or (event.get('Actor') or {}).get('ID'))[:12]}")
    if isinstance(item, AdminRequest):
        return f"{item.action} request of {item.caller.user}"
    return type(item).__name__


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
        self.notifier = notifier or Notifier()
        self.clock = clock
        self.store = Store(f"{config.daemon.state_dir}/state.db")
        self.log = DecisionLog(self.store, send, clock)
        self.store.file.tell = self.state_news
        for message, bad in self.store.file.told:   # what happened to the file while opening it
            self.state_news(message, bad)
        self.next_restore = 0.0
        self.next_prune = 0.0
        self.reconcile_wanted = False
        self.events = Inbox(rank)
        self.docker: DockerAdapter | None = None
        self.connector = DockerConnector(docker_factory, self.events.put)
        self.docker_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="docker-call")
        self.connecting = False
        self.docker_error: str | None = None   # why Docker is unreachable; None while connecting
        self.generation = 0
        self.item_failures = 0     # items whose handling raised; each is in the journal
        self.stop_requested = False
        self.reload_requested = False
        self.last_error: str | None = None
        self.reload_refused: str | None = None  # until a reload succeeds: the running config is not the file
        self.slice_keeper = SliceKeeper(slices_factory, self.log, self.error)
        self.actuator = Actuator(lambda: self.config, self.log, docker_factory, lambda: self.docker,
                                 self.events.put, self.error, self.reader_for)
        self._unix: tuple[float, dict[str, frozenset[str]]] | None = None
        self._limits: dict[str | None, EffectiveLimits] = {}
        self.nvml_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="nvml")
        self.nvml_busy: tuple[concurrent.futures.Future, float] | None = None
        self.gpus = GpuWatch(self.store, clock, nvml_open, nvml_call=self.nvml_call)
        self.allocations = Allocations(self.gpus.gpu, self.log, is_system_user)
        self.admin_actions = AdminActions(self)
        self.next_pass = 0.0
        self.next_status = 0.0
        self.next_publish = 0.0
        self.dirty = True
        self.status_app = StatusApp(self.events.put, config.daemon.admin_group,
                                    lambda message: self.events.put(WorkerError(message)))
        self.server: StatusServer | None = None
        self.last_alive = float(self.store.get_meta("last_alive") or 0.0)
        self.admission_key = self.open_admission_key()
        self.metrics = MetricsExport(self)
        self.metrics.reload = (True, clock())     # the config it started with was read and checked
        self.log.on_record = self.metrics.tally.decision
        self.metrics_due = False

    # --- the loop -----------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM (exit 0); a broken loop is journalled and exits 1."""
        # A client that hangs up before reading its answer must cost a BrokenPipeError in
        # its own thread, never the process (the CLI's conventions set SIG_DFL).
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, lambda *_: setattr(self, "reload_requested", True))
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stop_requested", True))
        signal.signal(signal.SIGINT, lambda *_: setattr(self, "stop_requested", True))
        self.open_gpus()
        self.serve_status()
        # Ready once the state and the socket are up: Docker may come later (or never).
        self.notifier.ready()
        try:
            self.loop()
        except Exception as exc:
            self.log.record("loop-broken", f"the main loop broke: {type(exc).__name__}: {exc}",
                            priority=syslog.LOG_CRIT, details={"traceback": traceback.format_exc()[-4000:]})
            return 1
        finally:
            self.shutdown()
        return 0

    def loop(self) -> None:
        while not self.stop_requested:
            self.notifier.watchdog()
            if self.docker is None and not self.connecting:
                self.connecting = True
                self.connector.want()
            if self.reload_requested:
                self.step("reload", self.reload)
            if self.docker is not None and time.monotonic() >= self.next_pass:
                self.sampling_pass()
            elif self.docker is None and time.monotonic() >= self.next_pass:
                # no passes without Docker, but the metrics must still say it is away
                self.next_pass = time.monotonic() + self.config.daemon.sampling_interval
                self.dirty = self.metrics_due = True
            if self.allocations.waiters:
                self.step("serving the wait queue", lambda: self.allocations.serve_waiters(self.host()))
                self.dirty = True
            self.step("writing the state back to disk", self.restore_state)
            if self.reconcile_wanted and self.docker is not None:
                self.reconcile_wanted = False
                self.step("reconciling after a state change", self.reconcile)
            if self.dirty and time.monotonic() >= self.next_publish:
                self.step("status view", self.publish)  # a broken view must not take enforcement down
            if self.metrics_due and not self.dirty:
                self.metrics_due = False
                self.step("writing the metrics", lambda: self.metrics.write(self.status_app.view))
            if time.monotonic() >= self.next_status:
                self.next_status = time.monotonic() + STATUS_EVERY
                self.notifier.status(self.status_line())
            self.drain(TICK)

    def step(self, what: str, action: Callable[[], object]) -> bool:
        """Run one item's handling or one periodic step; if it raises, journal and count it
        and go on (False).  The one place the loop contains a failure."""
        try:
            action()
        except Exception as exc:
            self.item_failures += 1
            self.error(f"{what} failed: {type(exc).__name__}: {exc}")
            return False
        return True

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
        """Handle one item; whatever goes wrong with it is journalled and the loop goes on."""
        self.dirty = True
        handled = self.step(f"handling {describe(item)}", lambda: self.dispatch(item))
        if not handled and isinstance(item, AdminRequest):
            deliver(item.reply, (500, {"error": "ds01d could not carry that out; the journal says why"}))

    def dispatch(self, item: object) -> None:
        if isinstance(item, AdminRequest):
            self.admin_actions.answer(item)
        elif isinstance(item, DockerEvent):
            if item.generation == self.generation:
                self.on_event(item.event)
        elif isinstance(item, StreamEnded):
            if item.generation == self.generation and self.docker is not None:
                self.disconnected(item.error)
        elif isinstance(item, Connected):
            self.connected(item.docker)
        elif isinstance(item, Unreachable):
            self.unreachable(item.error)
        elif isinstance(item, AbandonedGrant):
            self.allocations.abandoned(item.allocation_id, item.user)
        elif isinstance(item, WorkerError):
            self.error(item.message, item.user)
        elif isinstance(item, StopDone):
            self.actuator.finished(item)
            if item.error:
                verb = "removing" if item.removed else "stopping"
                self.error(f"{verb} {item.container[:12]} failed: {item.error}")

    def shutdown(self) -> None:
        self.notifier.stopping()
        for waiter in self.allocations.waiters:  # nobody will serve them now: say so rather than time out
            deliver(waiter.reply, (503, {"error": "ds01d is stopping; ask again in a moment"}))
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
        self.connector.close()
        self.docker_pool.shutdown(wait=False, cancel_futures=True)
        self.nvml_pool.shutdown(wait=False, cancel_futures=True)
        self.actuator.shutdown()
        self.gpus.close()
        self.slice_keeper.close()
        self.store.close()

    # --- Docker connection ----------------------------------------------------

    def connected(self, docker: DockerAdapter) -> None:
        """Docker answers again: open the events stream where we left off, then reconcile."""
        self.connecting = False
        self.generation += 1
        try:
            # Opening the stream is a request too (dockerd may be starting): fed, like every call.
            self.docker_call(docker.start_events, self.store.get_meta("last_event"), self.events, self.generation)
            self.docker = docker
            started = time.monotonic()
            count = self.reconcile()
        except CONNECTION_ERRORS as exc:  # gone again already: the loop asks for a new connection
            self.docker = None
            docker.close()
            self.docker_error = f"{type(exc).__name__}: {exc}"
            return
        self.docker_error = None
        self.log.record("docker-connected", f"reconciled {count} containers in "
                        f"{time.monotonic() - started:.2f}s")

    def unreachable(self, why: str) -> None:
        self.docker_error = why
        self.next_status = 0.0
        self.log.record("docker-unreachable", f"Docker does not answer: {why}; enforcement waits for it",
                        priority=syslog.LOG_WARNING)

    def disconnected(self, why: str) -> None:
        """Lost Docker mid-way: drop the client; the loop connects again and reconciles."""
        if self.docker is not None:
            self.docker.close()
        self.docker = None
        self.docker_error = why
        self.next_status = 0.0
        self.log.record("docker-disconnected", why, priority=syslog.LOG_WARNING)

    def reconcile(self) -> int:
        """Bring the database in line with Docker's full listing; enforce on what runs.

        Inspects run four at a time; the watchdog is fed as results come in, so a
        host with thousands of containers is not mistaken for a stuck loop.
        """
        assert self.docker is not None
        docker = self.docker
        started = time.monotonic()
        ids = self.docker_call(docker.container_ids)
        inspects = [self.docker_pool.submit(docker.inspect, cid) for cid in ids]
        try:
            for done, future in enumerate(inspects, 1):
                info = self.fed_result(future)
                if info is not None:
                    self.observe(info, "reconcile")
                if done % 100 == 0:
                    self.notifier.status(f"reconciling with Docker: {done}/{len(ids)} containers")
        finally:
            for future in inspects:
                future.cancel()  # Docker failed part-way: the reconnect reconciles again
        for gone in self.store.live_ids() - set(ids):
            self.store.mark_removed(gone)
        self.metrics.reconcile_seconds = time.monotonic() - started
        return len(ids)

    def docker_call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A Docker call from the main loop, bounded by the client's timeout (API_TIMEOUT),
        with the watchdog fed while it runs: slow Docker is not a stuck loop."""
        return self.fed_result(self.docker_pool.submit(fn, *args))

    def fed_result(self, future: concurrent.futures.Future, limit: float | None = None) -> Any:
        """The future's result, with the watchdog fed while it runs; TimeoutError past `limit`."""
        give_up = None if limit is None else time.monotonic() + limit
        while True:
            try:
                return future.result(timeout=FEED_EVERY)
            except concurrent.futures.TimeoutError:
                if give_up is not None and time.monotonic() >= give_up:
                    raise
                self.notifier.watchdog()

    def nvml_call(self, read: Callable[[], Any]) -> Any:
        """A pass's NVML read on NVML's own thread, waited for NVML_TIMEOUT at most.  NVML has no
        timeouts of its own, and a call that hangs must cost a pass of unknowns, not the loop;
        while it still hangs, nothing more is asked of NVML."""
        if self.nvml_busy is not None:
            future, since = self.nvml_busy
            if not future.done():
                raise NvmlHung(f"NVML has not answered since {iso(since)}")
        future = self.nvml_pool.submit(read)
        self.nvml_busy = (future, self.clock())
        try:
            return self.fed_result(future, NVML_TIMEOUT)
        except concurrent.futures.TimeoutError:
            raise NvmlHung(f"NVML did not answer within {NVML_TIMEOUT:.0f}s") from None

    # --- events ----------------------------------------------------------------

    def on_event(self, event: dict[str, Any]) -> None:
        action = (event.get("Action") or event.get("status") or "").split(":")[0]
        container_id = event.get("id") or (event.get("Actor") or {}).get("ID")
        if container_id and action not in _QUIET_ACTIONS:
            if action == "destroy":
                self.store.mark_removed(container_id)
            else:
                try:
                    info = self.docker_call(self.docker.inspect, container_id) if self.docker else None
                except CONNECTION_ERRORS as exc:
                    # Docker restarting or hung: the cursor stays, so the reconnect sees this event again
                    self.disconnected(f"inspect of {container_id[:12]} failed: {type(exc).__name__}: {exc}")
                    return
                if info is None:
                    self.store.mark_removed(container_id)
                else:
                    self.observe(info, action)
        cursor = event_cursor(event)
        if cursor:
            self.store.set_meta("last_event", cursor)
            self.metrics.event_lag = max(0.0, self.clock() - float(cursor))

    def observe(self, info: dict[str, Any], trigger: str) -> None:
        """Record one container as Docker shows it now, then apply the rules to it."""
        record, limits = build_record(info, self.config, self.today(), self.unix_members(), is_local_user,
                                      is_system_user, self.admitted_owner)
        previous = self.store.container(record.id)
        self.store.upsert_container(record, self.clock())
        if previous is None or (previous.owner, previous.kind, previous.flags) != \
                (record.owner, record.kind, record.flags):
            self.say_recorded(record, previous)
        elif previous.name != record.name:
            self.log.record("rename", f"renamed from {previous.name}", user=record.owner,
                            container=record.id, name=record.name)
        if limits is not None:
            self.slice_keeper.ensure(limits)
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

    # --- rules -------------------------------------------------------------------

    def enforce(self, record: ContainerRecord, limits: EffectiveLimits | None, info: dict[str, Any],
                trigger: str = "start") -> None:
        action = unowned_action(record, self.config.policies)
        if action is not None:
            self.actuator.carry_out(record, action, "unowned")
        if record.wants_gpu and self.just_started(record, trigger) and not self.gpus.judged(record):
            self.start_gpus(record, limits or self.limits_for(record.owner))
        if limits is None:
            return
        owned = [r for r in self.store.containers_of(limits.user) if r.id not in self.actuator.pending_stops]
        limit = limits["max_containers"]
        for extra in excess_running(owned, limit):
            running = sum(1 for r in owned if r.status == "running")
            reason = max_containers_reason(record.owner or "", running, limit)
            self.actuator.carry_out(extra, Action("stop", reason), "max-containers")
        action = outside_slice_action(record, limits, self.config.policies, info.get("HostConfig") or {})
        if action is not None:
            self.actuator.carry_out(record, action, "outside-slice")

    def start_gpus(self, record: ContainerRecord, limits: EffectiveLimits) -> None:
        """Judge a GPU container that just started: --gpus all, devices kept for someone else (on the
        allocator's own picture), quota; claim its owner's allocation when it may run."""
        units = self.gpus.started(record)
        verdict = (self.gpus.gpus_all_check(record, self.config.policies)
                   or self.allocations.conflict(self.host(), record, units)
                   or self.gpus.check_start(record, units, limits, self.store.live_containers(), self.limits_for))
        if verdict is None or verdict[0] != "stop":
            self.allocations.claim(record, units)
        if verdict is not None:
            self.refuse_gpus(record, verdict, "gpu-start")
        # Judged once per run: after this, a replayed start event or a restart leaves its
        # idle clock, extensions and hold alone (marked last: a kill -9 before it judges again).
        self.gpus.gpu.set_judged_run(record.id, record.started_at or 0.0, self.clock())

    def just_started(self, record: ContainerRecord, trigger: str) -> bool:
        """A start event, or a container that started while ds01d was not watching."""
        if trigger == "start":
            return True
        # On the very first start there is no "before": what runs then is the baseline, not a violation.
        return trigger == "reconcile" and self.last_alive > 0 and (record.started_at or 0.0) > self.last_alive

    # --- GPU passes ---------------------------------------------------------------------

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
        started = time.monotonic()
        self.next_pass = started + interval
        self._limits.clear()  # Unix groups and override expiry may have moved since the last pass
        self.step("sampling pass", lambda: (
            self.gpus.run_pass(self.store.live_containers(), self.limits_for, self.config.policies, interval,
                               self.actuator),
            self.allocations.expire(self.clock())))
        self.step("judging containers found on GPUs", self.judge_found)
        for news in self.gpus.news:
            self.log.record("gpu-nvml", news, priority=syslog.LOG_WARNING)
        self.gpus.news.clear()
        self.step("pruning the audit trail", self.prune)
        self.last_alive = self.clock()
        self.store.set_meta("last_alive", repr(self.last_alive))
        self.gpus.pass_seconds = time.monotonic() - started
        self.dirty = self.metrics_due = True

    def judge_found(self) -> None:
        """A container found computing on units it never asked for (CDI, --privileged, /dev
        mounted) is judged as if it had started on them: not on a device held, reserved or
        allocated for someone else (its quota was judged in the pass)."""
        for cid in self.gpus.found:
            record = self.store.container(cid)
            if record is None or record.status != "running":
                continue
            verdict = self.allocations.conflict(self.host(), record, self.gpus.units_of(record)[0])
            if verdict is not None:
                kind, why = verdict
                self.refuse_gpus(record, (kind, f"found computing without asking for a GPU (no --gpus): {why}"),
                                 "gpu-found")

    def refuse_gpus(self, record: ContainerRecord, verdict: tuple[str, str], rule: str) -> None:
        """Carry out a GPU verdict ("stop"/"warn", reason); a container stopped for its devices
        never held them, so it leaves no hold after it."""
        if verdict[0] == "stop":
            self.gpus.forfeit(record)
        self.actuator.carry_out(record, Action(*verdict), rule)

    def prune(self) -> None:
        """Keep the audit trail to `daemon.audit_retention` (checked hourly)."""
        keep = self.config.daemon.audit_retention
        if keep is None or time.monotonic() < self.next_prune:
            return
        self.next_prune = time.monotonic() + PRUNE_EVERY
        counts = self.store.prune(self.clock() - keep)
        if any(counts.values()):
            self.log.record("audit-pruned", f"forgot {counts['audit']} audit entries and {counts['containers']} "
                            f"removed containers older than {format_duration(keep)} (audit_retention)")

    def limits_for(self, owner: str | None) -> EffectiveLimits:
        """The owner's limits (an unowned container gets the default group's), cached for one pass."""
        if owner not in self._limits:
            self._limits[owner] = resolve(self.config, owner or "", self.today(), self.unix_members())
        return self._limits[owner]

    # --- the status socket ----------------------------------------------------------------

    def serve_status(self) -> None:
        try:
            self.server = StatusServer(self.config.daemon.socket_path, self.status_app)
        except OSError as exc:
            self.error(f"status socket {self.config.daemon.socket_path}: {exc}; ds01-gpu-status will not work")
            return
        self.server.start()

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
            queue=tuple(self.allocations.queue(now)),
            known_users=frozenset() if self.config.daemon.show_other_users else self.known_users(records))

    def open_admission_key(self) -> bytes:
        """The marks' key; where the state directory refuses it, one for this run only (said):
        enforcement does not wait for a disk."""
        path = f"{self.config.daemon.state_dir}/admission.key"
        try:
            return load_or_create(path)
        except OSError as exc:
            self.state_news(f"{path}: {exc}; gateway marks made now will not verify after a restart", True)
            return secrets.token_bytes(32)

    def admitted_owner(self, labels: Mapping[str, str]) -> str | None:
        """The owner the gateway recorded on a container (its mark verified), else None."""
        found = admitted_owner(self.admission_key, labels)
        return found[1] if found else None

    def admission(self, uid: int, build: bool = False) -> tuple[int, dict[str, Any]]:
        """What a container the caller `uid` creates through the gateway gets: unrestricted for
        root and admins; else their slice (made now, with its limits, before the create goes on),
        and the mark that proves the owner labels are the gateway's.  Refused for accounts that
        own no containers and where the owner already runs max_containers."""
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            return 403, {"error": f"uid {uid} has no account on this host; ask an admin"}
        if uid == 0 or self.status_app.caller(uid).admin:
            return 200, {"admin": True, "user": user, "uid": uid}
        if is_system_user(user):
            return 403, {"error": f"{user} is a system account and may not create containers here; ask an "
                                  f"admin to add it to {self.config.daemon.admin_group or 'the admin group'}"}
        limits = self.limits_for(user)
        running = sum(1 for r in self.store.containers_of(user) if r.status == "running")
        limit = limits["max_containers"]
        if limit is not None and running >= limit and not build:
            return 409, {"error": max_containers_reason(user, running, limit)}
        if not self.slice_keeper.ensure(limits):
            return 503, {"error": f"ds01d could not prepare {limits.slice} just now; try again in a moment"}
        return 200, {"admin": False, "user": user, "uid": uid, "slice": limits.slice, "group": limits.group,
                     "mark": sign(self.admission_key, uid, user)}

    def known_users(self, records: tuple[ContainerRecord, ...] | None = None) -> frozenset[str]:
        """Every name ds01d's sentences might mention: owners, allocations, reservations and the
        config's people, so that text for a non-admin can hide all but their own."""
        records = records if records is not None else tuple(self.store.live_containers())
        names = {r.owner for r in records if r.owner}
        names.update(user for _, user, _, _ in self.gpus.gpu.pending_allocations())
        names.update(w.user for w in self.allocations.waiters)
        names.update(self.config.overrides)
        for group in self.config.groups.values():
            names.update(group.members)
        for members in self.unix_members().values():
            names.update(members)
        return frozenset(names)

    def reader_for(self, owner: str | None) -> Redactor:
        """What `owner` may read of other users' names (their terminal, their notification)."""
        if self.config.daemon.show_other_users:
            return NOBODY_HIDDEN
        records = tuple(self.store.live_containers())
        return Redactor(self.known_users(records), owner, {r.name: r.owner for r in records})

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

    # --- reload --------------------------------------------------------------------

    def reload(self) -> ReloadOutcome:
        """Apply the config file again (SIGHUP, or `ds01d reload` through the socket); READY=1
        follows RELOADING=1 whatever happens, or systemd waits on a reload forever."""
        self.reload_requested = False
        self.next_status = 0.0
        self.notifier.reloading()
        try:
            return self._reload()
        finally:
            self.notifier.ready()

    def _reload(self) -> ReloadOutcome:
        outcome = reload_config(self.config, self.today(), self.log)
        self.reload_refused = outcome.refused
        self.metrics.reload = (outcome.config is not None, self.clock())
        if outcome.config is not None:
            self.config = outcome.config
            self._unix = None
            self._limits.clear()
            self.slice_keeper.reassert_all()
            if self.docker is not None:
                try:
                    self.reconcile()
                except CONNECTION_ERRORS as exc:
                    self.disconnected(f"{type(exc).__name__}: {exc}")
        return outcome

    # --- helpers ---------------------------------------------------------------------

    def today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self.clock(), dt.timezone.utc).date()

    def unix_members(self) -> dict[str, frozenset[str]]:
        now = time.monotonic()
        if self._unix is None or now - self._unix[0] > UNIX_CACHE_SECONDS:
            names = [g.unix_group for g in self.config.groups.values() if g.unix_group]
            self._unix = (now, unix_group_members(names))
        return self._unix[1]

    def state_news(self, message: str, bad: bool) -> None:
        """The state database moved to memory, was kept aside, or is back on disk: what ds01d
        knows of containers may have been left behind, so Docker is asked again (reconcile)."""
        self.next_status = 0.0
        self.reconcile_wanted = True
        self.log.record("state-trouble" if bad else "state-restored", message,
                        priority=syslog.LOG_CRIT if bad else syslog.LOG_NOTICE)

    def restore_state(self) -> None:
        """While the state is in memory, offer it back to the disk every RESTORE_EVERY."""
        if self.store.file.trouble is not None and time.monotonic() >= self.next_restore:
            self.next_restore = time.monotonic() + RESTORE_EVERY
            self.store.file.try_restore()

    def error(self, message: str, user: str | None = None) -> None:
        self.last_error = message
        self.log.record("error", message, user=user, priority=syslog.LOG_ERR)

    def status_line(self) -> str:
        n = self.store.summary()
        if self.docker is not None:
            docker = "Docker connected"
        else:
            docker = f"Docker unreachable ({self.docker_error})" if self.docker_error else "connecting to Docker"
        notes = f"{self.reload_refused} (the running config is older than the file); " \
            if self.reload_refused else ""
        if self.store.file.trouble is not None:
            since = dt.datetime.fromtimestamp(self.store.file.since or 0).strftime("%H:%M:%S")
            notes += f"state database unavailable since {since} ({self.store.file.trouble}): running from memory; "
        return (f"{n['containers']} containers ({n['running']} running) of {n['users']} users; "
                f"{n['gpu_running']} running with GPUs; {docker}; {notes}"
                f"last error: {self.last_error or 'none'}")


def run_daemon(config_path: str) -> int:
    """`ds01d run`: exit 1 with file:line problems if the config is bad, else run until SIGTERM."""
    try:
        config = load_checked_config(config_path, dt.datetime.now(dt.timezone.utc).date())
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    return Daemon(config).run()
