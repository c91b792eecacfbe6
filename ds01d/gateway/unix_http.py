"""One JSON request over a Unix socket, for the gateway's own questions: to ds01d (admit,
allocate, free) and to the engine (whose is this container, which container runs this exec).

One connection per request (`Connection: close`), the answer read whole but bounded, h11
for the framing.  A request cancelled while it waits (the caller of the create hung up
while a GPU was being found) still reads what had already arrived: an answer granted in
that instant is handed to `on_orphan`, so that the grant is given back, not left to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from dataclasses import dataclass
from typing import Any, Callable

import h11

#: The largest answer read (ds01d's and the engine's inspect answers are far smaller).
MAX_ANSWER = 8 * 1024 * 1024


class Unreachable(Exception):
    """Nothing answered on the socket (absent, refused, closed early, too slow)."""


@dataclass(frozen=True)
class Answer:
    status: int
    doc: Any          # the decoded JSON body; None when it was empty or not JSON


class _Reply:
    """The answer as it comes in, through h11."""

    def __init__(self) -> None:
        self.conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_ANSWER)
        self.status = 0
        self.parts: list[bytes] = []
        self.size = 0

    def complete(self) -> Answer | None:
        """The whole answer once h11 has parsed it; None while more bytes are needed."""
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                return None
            if isinstance(event, h11.Response):
                self.status = event.status_code
            elif isinstance(event, h11.Data):
                self.size += len(event.data)
                if self.size > MAX_ANSWER:
                    raise h11.RemoteProtocolError("the answer is too large")
                self.parts.append(bytes(event.data))
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return Answer(self.status, _json(b"".join(self.parts)))

    def arrived(self, sock: socket.socket) -> Answer | None:
        """What is in the socket now, without waiting: a complete answer, or None."""
        with contextlib.suppress(OSError, h11.ProtocolError):
            while chunk := sock.recv(65536, socket.MSG_DONTWAIT):
                self.conn.receive_data(chunk)
        with contextlib.suppress(h11.ProtocolError):
            return self.complete()
        return None


async def call(path: str, method: str, target: str, body: Any = None, timeout: float = 30.0,
               on_orphan: Callable[[Answer], None] | None = None) -> Answer:
    """`method target` with a JSON body on the Unix socket at `path`; Unreachable if none answers."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    reply = _Reply()
    try:
        return await asyncio.wait_for(_exchange(sock, reply, path, method, target, body), timeout)
    except asyncio.CancelledError:
        orphan = reply.arrived(sock) if on_orphan is not None else None
        if orphan is not None and on_orphan is not None:
            on_orphan(orphan)
        raise
    except (OSError, asyncio.TimeoutError, h11.ProtocolError) as exc:
        raise Unreachable(f"{path}: {_why(exc)}") from None
    finally:
        sock.close()


async def _exchange(sock: socket.socket, reply: _Reply, path: str, method: str, target: str,
                    body: Any) -> Answer:
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, path)
    data = json.dumps(body).encode() if body is not None else b""
    headers = [("Host", "ds01d"), ("Connection", "close"), ("Content-Length", str(len(data)))]
    if body is not None:
        headers.append(("Content-Type", "application/json"))
    conn = reply.conn
    out = conn.send(h11.Request(method=method, target=target, headers=headers))
    out += conn.send(h11.Data(data=data)) if data else b""
    out += conn.send(h11.EndOfMessage())
    await loop.sock_sendall(sock, out)
    while True:
        answer = reply.complete()
        if answer is not None:
            return answer
        chunk = await loop.sock_recv(sock, 65536)
        conn.receive_data(chunk)
        if not chunk:
            answer = reply.complete()
            if answer is None:
                raise ConnectionError("closed before answering")
            return answer


def _json(data: bytes) -> Any:
    try:
        return json.loads(data) if data else None
    except ValueError:
        return None


def _why(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "no answer in time"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
