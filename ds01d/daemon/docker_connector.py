"""Reaching Docker without ever waiting for it on the main loop's thread.

While dockerd restarts, `docker.socket` accepts connections and holds them until the
engine answers, so a connect or ping can take as long as the restart; when dockerd hangs,
forever.  The main loop must keep serving the socket and feeding the watchdog meanwhile.
So connecting happens here, on a thread of its own, retried every RETRY seconds (cheap:
a refused Unix connect costs microseconds), and a ready client is handed to the loop
through its inbox.  Docker's return is noticed within RETRY of its first answer.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

from ds01d.host.docker_engine import DockerAdapter

RETRY = 0.5


@dataclass(frozen=True)
class Connected:
    """A client that just answered a ping, for the main loop to start the events stream on."""

    docker: DockerAdapter


@dataclass(frozen=True)
class Unreachable:
    """Docker did not answer (the first failure of a run of them): why, for STATUS= and the journal."""

    error: str


class DockerConnector:
    """One thread that, when asked, connects until it succeeds and posts the result."""

    def __init__(self, factory: Callable[[], DockerAdapter], post: Callable[[object], None]):
        self._factory = factory
        self._post = post
        self._wanted = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="docker-connect", daemon=True)
        self._thread.start()

    def want(self) -> None:
        """Start connecting (no-op while already at it); a Connected item follows, eventually."""
        self._wanted.set()

    def close(self) -> None:
        self._closed.set()
        self._wanted.set()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            if self._closed.is_set():
                return
            docker = self._attempt_until_answered()
            if docker is None:
                return
            self._wanted.clear()
            self._post(Connected(docker))

    def _attempt_until_answered(self) -> DockerAdapter | None:
        said = None
        while not self._closed.is_set():
            try:
                docker = self._factory()
                docker.ping()
                return docker
            except Exception as exc:  # CONNECTION_ERRORS, and anything else: this thread must go on
                why = f"{type(exc).__name__}: {exc}"[:300]
                if said is None:  # once per outage, not twice a second
                    self._post(Unreachable(why))
                    said = why
            self._closed.wait(RETRY)
        return None
