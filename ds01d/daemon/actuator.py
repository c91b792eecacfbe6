"""Carrying out what the rules decided: stops, removals, caps, warnings, messages.

The rules (`ds01d.rules.enforcement`, `ds01d.rules.lifecycle`) say what to do; this
module does it, journals it, and tells the owner.  A stop waits out its SIGTERM grace
and a notify command may be slow, so both run on worker pools and report back to the
main loop through its queue (`StopDone`, `WorkerError`); the loop never waits for them.
Telling has a pool of its own: notify commands that hang until their timeout never
delay a stop.  A container with a stop or removal in flight is not stopped twice.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import syslog
from dataclasses import dataclass
from typing import Any, Callable

from ds01d.config import Config
from ds01d.config.quantities import format_cpus, format_size
from ds01d.host.decision_log import DecisionLog
from ds01d.host.docker_engine import CONNECTION_ERRORS, DockerAdapter
from ds01d.host.notify_unit import run_notify_command
from ds01d.host.terminals import tell_user
from ds01d.rules.enforcement import Action
from ds01d.rules.privacy import NOBODY_HIDDEN, Redactor
from ds01d.rules.records import ContainerRecord


@dataclass(frozen=True)
class WorkerError:
    """Something a worker thread could not do (a notify command that failed, say)."""

    message: str
    user: str | None = None


@dataclass(frozen=True)
class StopDone:
    """A stop that ran on the worker pool, and its error if it failed."""

    container: str
    error: str | None
    removed: bool = False


class Actuator:
    """Does what was decided about a container; also what the GPU watch calls back."""

    def __init__(self, config: Callable[[], Config], log: DecisionLog,
                 docker_factory: Callable[[], DockerAdapter], docker: Callable[[], DockerAdapter | None],
                 report: Callable[[object], None], on_error: Callable[[str, str | None], None],
                 reader_for: Callable[[str | None], Redactor] = lambda owner: NOBODY_HIDDEN):
        self.config = config
        self.reader_for = reader_for
        self.log = log
        self.docker_factory = docker_factory
        self.docker = docker
        self.report = report
        self.on_error = on_error
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="docker-stop")
        self.tell_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="tell")
        self.pending_stops: set[str] = set()
        self.said: set[tuple[str, str, str]] = set()

    def carry_out(self, record: ContainerRecord, action: Action, rule: str) -> None:
        what = (record.id, rule, action.kind)
        fields = dict(user=record.owner, container=record.id, name=record.name, group=record.group,
                      slice_name=record.slice)
        if action.kind == "warn":
            if what not in self.said:
                self.said.add(what)
                self.log.record(f"warn-{rule}", action.reason, priority=syslog.LOG_WARNING, **fields)
                self.tell(record, f"warn-{rule}", f"{record.name}: {action.reason}", None)
        elif action.kind == "cap":
            self.cap(record, action, rule, fields)
        elif action.kind == "stop" and record.id not in self.pending_stops:
            self.pending_stops.add(record.id)
            self.log.record("stop", action.reason, priority=syslog.LOG_WARNING, details={"rule": rule}, **fields)
            self.tell(record, "stop", f"stopping {record.name}: {action.reason}", None)
            grace = self.config().policies.sigterm_grace
            self.pool.submit(self.docker_job, record.id, lambda d: d.stop(record.id, grace))

    def cap(self, record: ContainerRecord, action: Action, rule: str, fields: dict[str, Any]) -> None:
        docker = self.docker()
        assert docker is not None
        caps = " ".join(part for part in (
            f"--cpus={format_cpus(action.cpus)}" if action.cpus is not None else "",
            f"--memory={format_size(action.memory)}" if action.memory is not None else "") if part)
        try:
            docker.update_caps(record.id, action.cpus, action.memory)
        except CONNECTION_ERRORS as exc:
            self.on_error(f"capping {record.name}: {exc}", record.owner)
            return
        self.log.record("cap", f"{action.reason}; applied {caps}", details={"rule": rule}, **fields)

    # --- what the GPU watch calls back ----------------------------------------------

    def stop(self, record: ContainerRecord, reason: str, rule: str) -> None:
        self.carry_out(record, Action("stop", reason), rule)

    def warn(self, record: ContainerRecord, rule: str, reason: str, deadline: float | None) -> None:
        self.log.record(f"warn-{rule}", reason, priority=syslog.LOG_WARNING, user=record.owner,
                        container=record.id, name=record.name, group=record.group, slice_name=record.slice)
        self.tell(record, f"warn-{rule}", f"{record.name} {reason}", deadline)

    def note(self, record: ContainerRecord, action: str, reason: str) -> None:
        """A journal entry about a container that changes nothing (its GPU activity became unknown)."""
        self.log.record(action, reason, priority=syslog.LOG_NOTICE, user=record.owner, container=record.id,
                        name=record.name, group=record.group, slice_name=record.slice)

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

    # --- off the loop -----------------------------------------------------------------

    def tell(self, record: ContainerRecord, action: str, text: str, deadline: float | None) -> None:
        """The owner's terminals and the admin's notify command, off the main loop; both may reach
        the owner, so other users' names are hidden where show_other_users is false."""
        text = self.reader_for(record.owner).text(text)
        policies = self.config().policies
        fields = {"DS01_USER": record.owner or "", "DS01_CONTAINER": record.id, "DS01_CONTAINER_NAME": record.name,
                  "DS01_ACTION": action, "DS01_REASON": text, "DS01_DEADLINE": "" if deadline is None else
                  dt.datetime.fromtimestamp(deadline, dt.timezone.utc).isoformat()}
        self.tell_pool.submit(self.tell_worker, record.owner, text, policies.notify_command, fields,
                              policies.notify_timeout)

    def tell_worker(self, owner: str | None, text: str, argv: tuple[str, ...] | None, fields: dict[str, str],
                    timeout: float) -> None:
        """Terminals first (instant), then the notify command (up to its timeout); every failure
        goes to the loop, since an exception in a pool thread would otherwise vanish."""
        try:
            if owner:
                tell_user(owner, text)
            error = run_notify_command(argv, fields, timeout, fields["DS01_ACTION"],
                                       fields["DS01_CONTAINER"]) if argv else None
        except Exception as exc:  # reported to the loop, which logs it
            error = f"telling {owner or 'nobody'} about {fields['DS01_CONTAINER_NAME']}: {type(exc).__name__}: {exc}"
        if error:
            self.report(WorkerError(error, owner))

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
        self.report(StopDone(container_id, error, removed))

    def finished(self, done: StopDone) -> None:
        self.pending_stops.discard(done.container)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.tell_pool.shutdown(wait=False, cancel_futures=True)
