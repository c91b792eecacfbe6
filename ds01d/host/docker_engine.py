"""The Docker Engine API, as the daemon needs it: events, listing, inspect, stop, update.

A thin shell over docker-py's low-level APIClient (its high-level objects cost an
extra inspect per container).  The events stream is read on its own thread and
handed to the main loop through a queue, so one loop stays the only writer.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import requests.exceptions

from ds01d.host.engine_socket import engine_url

#: Seconds any one call may take.  The daemon's calls (ping, list, inspect, update) are quick
#: on a healthy engine; a hung dockerd must cost the main loop this much, not the watchdog's
#: patience.  A stop adds its grace period to it (docker-py does so).
API_TIMEOUT = 5

#: Failures that mean "Docker is not answering", as opposed to "that container is gone".
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    docker.errors.DockerException, requests.exceptions.RequestException, OSError)


@dataclass(frozen=True)
class StreamEnded:
    """Put on the queue when the events stream stops, with why."""

    error: str
    generation: int


@dataclass(frozen=True)
class DockerEvent:
    """One container event from the stream."""

    event: dict[str, Any]
    generation: int


class DockerAdapter:
    """One Docker engine; `base_url` None means dockerd's own socket behind the gateway where
    there is one (`engine_url`), else the environment's (DOCKER_HOST or the default socket)."""

    def __init__(self, base_url: str | None = None, timeout: int = API_TIMEOUT):
        kwargs: dict[str, Any] = {"timeout": timeout, "version": "auto"}
        base_url = base_url or engine_url()
        if base_url:
            kwargs["base_url"] = base_url
        self.api = docker.APIClient(**kwargs) if base_url else docker.from_env(**kwargs).api
        self._stream: Any = None

    def close(self) -> None:
        self.stop_events()
        self.api.close()

    def ping(self) -> None:
        self.api.ping()

    def container_ids(self) -> list[str]:
        return [c["Id"] for c in self.api.containers(all=True, trunc=False)]

    def inspect(self, container_id: str) -> dict[str, Any] | None:
        """The inspect data, or None when the container no longer exists."""
        try:
            return self.api.inspect_container(container_id)
        except docker.errors.NotFound:
            return None

    def stop(self, container_id: str, grace_seconds: int) -> None:
        try:
            self.api.stop(container_id, timeout=grace_seconds)
        except docker.errors.NotFound:
            pass

    def remove(self, container_id: str) -> None:
        """Remove a stopped container (never forced: a container that started again stays)."""
        try:
            self.api.remove_container(container_id)
        except docker.errors.NotFound:
            pass

    def update_caps(self, container_id: str, cpus: float | None, memory: int | None) -> None:
        """Per-container CPU and memory caps (no swap beyond the memory cap)."""
        kwargs: dict[str, Any] = {}
        if cpus is not None:
            kwargs.update(cpu_period=100_000, cpu_quota=int(round(cpus * 100_000)))
        if memory is not None:
            kwargs.update(mem_limit=memory, memswap_limit=memory)
        if kwargs:
            self.api.update_container(container_id, **kwargs)

    def start_events(self, since: str | None, out: queue.Queue, generation: int) -> None:
        """Stream container events from `since` ("sec.nanos") onto `out`, on a daemon thread."""
        stream = self.api.events(since=since, decode=True, filters={"type": ["container"]})
        self._stream = stream
        threading.Thread(target=self._pump, args=(stream, out, generation), name="docker-events",
                         daemon=True).start()

    def stop_events(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except Exception:  # closing a dead socket can raise anything urllib3 likes
                pass

    @staticmethod
    def _pump(stream: Any, out: queue.Queue, generation: int) -> None:
        try:
            for event in stream:
                out.put(DockerEvent(event, generation))
            out.put(StreamEnded("Docker closed the events stream", generation))
        except Exception as exc:  # any failure of the stream ends it; the main loop reconnects
            out.put(StreamEnded(f"{type(exc).__name__}: {exc}", generation))
