"""The gateway process: accept callers, know each by SO_PEERCRED, run an `Exchange` per
connection, tell systemd how it goes, and hand over on restart without cutting sessions.

Restarts.  systemd holds the listening socket (ds01-gateway.socket), so callers who
connect while the service restarts wait in its backlog and the new process takes them.
Connections already open (an `exec -it` session, `logs -f`, a build) live in this
process: on SIGTERM it tells systemd it is stopping and forks; the parent exits at
once (systemd sees the main process end and starts the new one: `KillMode=process`
spares the child), and the child closes its copy of the listening socket and serves the
connections it has until the last one ends, then exits.  So a restart or an upgrade
never ends a session; `systemctl kill ds01-gateway` ends them all.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import socket
import struct
import sys
from typing import Any

import h11

from ds01d.gateway.exchange import Exchange
from ds01d.gateway.http_side import HttpSide
from ds01d.gateway.policy_api import Peer, Policy
from ds01d.host.engine_socket import ENGINE_SOCKET
from ds01d.host.sd_notify import Notifier

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
#: After accept failed for want of descriptors or memory, the pause before trying again
#: (the callers wait in the backlog meanwhile; asyncio's own servers pause as long).
ACCEPT_RETRY = 1.0


def peer_of(sock: socket.socket) -> Peer:
    """The process that connected, as the kernel recorded it at connect time."""
    pid, uid, gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return Peer(uid=uid, gid=gid, pid=pid)


class Gateway:
    """Serves one listening socket until SIGTERM, then drains (see the module's docstring)."""

    def __init__(self, policy: Policy, engine_path: str = ENGINE_SOCKET, notifier: Notifier | None = None):
        self.policy = policy
        self.engine_path = engine_path
        self.notifier = notifier or Notifier()
        self.connections: set[asyncio.Task[Any]] = set()
        self._stop: asyncio.Event | None = None

    async def accept(self, listener: socket.socket) -> None:
        """Take callers from `listener` until cancelled, each served by a task of its own
        (in `connections`).  The sockets are the exchange's own, not asyncio streams: see
        `http_side`."""
        loop = asyncio.get_running_loop()
        listener.setblocking(False)
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS, ENOMEM: ends of connections free some
                print(f"ds01d gateway: cannot accept a connection ({exc.strerror}); trying again in "
                      f"{ACCEPT_RETRY:g} s", file=sys.stderr, flush=True)
                await asyncio.sleep(ACCEPT_RETRY)
                continue
            task = asyncio.ensure_future(self.handle(sock))
            self.connections.add(task)
            task.add_done_callback(self.connections.discard)

    async def handle(self, sock: socket.socket) -> None:
        """One caller's connection, to its end."""
        try:
            peer = peer_of(sock)
        except OSError:
            sock.close()  # gone before we looked
            return
        await Exchange(HttpSide(sock, h11.SERVER), peer, self.policy, self.engine_path).run()

    async def serve(self, sock: socket.socket) -> int:
        """Serve until SIGTERM/SIGINT; returns the exit code of this process."""
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        accepting = asyncio.ensure_future(self.accept(sock))
        watchdog = asyncio.ensure_future(self._keep_systemd_informed())
        self.notifier.ready()
        print(f"ds01d gateway: forwarding to {self.engine_path}", file=sys.stderr, flush=True)
        await self._stop.wait()
        watchdog.cancel()
        self.notifier.stopping()
        if self.connections and self._fork_drainer():
            await _stop_accepting(accepting, sock)
            return await self._drain(loop)
        await _stop_accepting(accepting, sock)
        return 0

    async def _keep_systemd_informed(self) -> None:
        interval = min(self.notifier.watchdog_interval or 5.0, 5.0)
        while True:
            self.notifier.watchdog()
            self.notifier.status(f"serving {len(self.connections)} connections to {self.engine_path}")
            await asyncio.sleep(interval)

    def _fork_drainer(self) -> bool:
        """Fork; the parent exits here, so only the child returns (True).  On a fork that
        fails, False: this process drains itself (systemd waits, up to TimeoutStopSec)."""
        loop = asyncio.get_running_loop()
        try:
            pid = os.fork()
        except OSError as exc:
            print(f"ds01d gateway: cannot fork to keep {len(self.connections)} connections open "
                  f"({exc.strerror}); they end now", file=sys.stderr, flush=True)
            return False
        if pid:
            print(f"ds01d gateway: {len(self.connections)} open connections stay with pid {pid} until they end",
                  file=sys.stderr, flush=True)
            os._exit(0)
        # The child goes on inside the parent's loop: asyncio forgets a running loop across
        # fork (it checks the pid), so it is told again; signal handlers are set anew in _drain.
        asyncio.events._set_running_loop(loop)
        # The parent's worker threads did not come along: a fresh pool for to_thread work.
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=4))
        os.environ.pop("NOTIFY_SOCKET", None)
        self.notifier = Notifier()  # without NOTIFY_SOCKET a no-op: only the main process may notify
        return True

    async def _drain(self, loop: asyncio.AbstractEventLoop) -> int:
        """In the forked child: serve the open connections to their end; SIGTERM ends them now."""
        stop_now = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
            loop.add_signal_handler(signum, stop_now.set)
        ender = asyncio.ensure_future(stop_now.wait())
        while self.connections and not ender.done():
            await asyncio.wait({ender, *self.connections}, return_when=asyncio.FIRST_COMPLETED)
        ender.cancel()
        for task in list(self.connections):
            task.cancel()
        await asyncio.gather(ender, *self.connections, return_exceptions=True)
        return 0


async def _stop_accepting(accepting: asyncio.Future[None], sock: socket.socket) -> None:
    """End the accept loop, then close the listening socket (this process's copy of it)."""
    accepting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await accepting
    sock.close()


def run_gateway(policy: Policy, sock: socket.socket, engine_path: str = ENGINE_SOCKET) -> int:
    """The process's main: an event loop serving `sock` (from systemd, or bound for tests)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(Gateway(policy, engine_path).serve(sock))
    finally:
        loop.close()
