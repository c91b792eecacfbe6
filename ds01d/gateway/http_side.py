"""One end of a proxied exchange: a non-blocking Unix stream socket, its h11 state
machine, and whether the process at the other end is still there.

The socket is used directly, without an asyncio transport and stream: bodies and raw
streams are read into one reused buffer and written from it (`pump`), so a byte passing
through is copied once in and once out.  A transport would copy it into a fresh bytes
object, then into its reader's buffer, then out again; for a 1 GB `docker cp` those
copies made the gateway the slowest party.  Heads and what h11 parses are read and
written here, each wait a future on the socket's readiness.

Everything read for h11 goes through its connection (`receive_data`), also what is read
only to notice a hang-up, so no byte is lost or read twice: when the exchange turns raw
or relays a body itself, what h11 holds unparsed is handed over (`trailing_data`,
`take_unparsed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
from collections.abc import Iterator
from typing import Any

import h11

#: Bytes read at once for h11 (heads, judged bodies, read-ahead while watching for a hang-up).
READ_SIZE = 64 * 1024
#: The buffer a body or a raw stream is relayed through: more than a Unix socket queues.
RELAY_BUFFER = 1024 * 1024
#: The send buffer asked of the kernel for each socket (it doubles it, up to
#: net.core.wmem_max): with room for more than the default 208 KiB, a relay writing to a
#: slower reader waits (and wakes) a quarter as often.
SEND_BUFFER = 1024 * 1024
#: The largest request or response head (dockerd's limit: Go's default MaxHeaderBytes).
MAX_HEAD = 1024 * 1024 + 4096
#: How often a side that can no longer be read (half-closed, or holding back a client that
#: sends faster than it is forwarded) is checked for a full close.
HANGUP_POLL = 0.25
#: What a watch for hang-ups reads ahead of the exchange (pipelined requests, an early body).
MAX_READ_AHEAD = 64 * 1024
#: Writes of more pieces than this are joined first (the kernel takes at most 1024 at once).
_MAX_PIECES = 64

_spare_buffers: list[bytearray] = []


class SideClosed(Exception):
    """Writing to a side failed: its process closed the connection."""


class Stopped(Exception):
    """A wait was given up because the exchange's stop signal came first (the caller hung up)."""


@contextlib.contextmanager
def relay_buffer() -> Iterator[bytearray]:
    """A RELAY_BUFFER-sized buffer, reused across relays: a fresh one is zeroed (a megabyte
    written for every small request body) and, freed, may stay in the process's heap."""
    buf = _spare_buffers.pop() if _spare_buffers else bytearray(RELAY_BUFFER)
    try:
        yield buf
    finally:
        if len(_spare_buffers) < 4:
            _spare_buffers.append(buf)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class HttpSide:
    """A socket with its h11 connection (role CLIENT for the engine, SERVER for a caller)."""

    def __init__(self, sock: socket.socket, role: type[h11.Sentinel]):
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self.sock = sock
        self.fd = sock.fileno()
        self.loop = asyncio.get_running_loop()
        self.conn = h11.Connection(role, max_incomplete_event_size=MAX_HEAD)
        self.eof = False
        self.closed = False
        #: The head of the message h11 last parsed from this side, and the method of the
        #: request of the current cycle (received from a caller, sent to the engine): what
        #: decides how the body after it is framed.
        self.head: h11.Request | h11.Response | None = None
        self.method = b""
        self._pending: object | None = None  # an event parsed ahead (see data_after)
        self._waiters: set[asyncio.Future[Any]] = set()

    @classmethod
    async def connect(cls, path: str, role: type[h11.Sentinel]) -> HttpSide:
        """A side connected to the Unix socket at `path` (raises OSError as connect does)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, path)
        except BaseException:
            sock.close()
            raise
        return cls(sock, role)

    # ---- bytes ------------------------------------------------------------------

    async def _ready(self, writing: bool) -> None:
        """Wait until the socket can be read (or written)."""
        waiter = self.loop.create_future()
        if writing:
            self.loop.add_writer(self.fd, _wake, waiter)
        else:
            self.loop.add_reader(self.fd, _wake, waiter)
        self.watch(waiter)
        try:
            await waiter
        finally:
            self.unwatch(waiter)
            if not self.closed:  # after close the descriptor's number may be another socket's
                (self.loop.remove_writer if writing else self.loop.remove_reader)(self.fd)

    def watch(self, waiter: asyncio.Future[Any]) -> None:
        """Fail `waiter` with SideClosed if this side is closed before it is done."""
        self._waiters.add(waiter)

    def unwatch(self, waiter: asyncio.Future[Any]) -> None:
        self._waiters.discard(waiter)

    async def recv(self, size: int) -> bytes:
        """Up to `size` bytes, waiting for some; b"" at EOF."""
        while True:
            try:
                return self.sock.recv(size)
            except (BlockingIOError, InterruptedError):
                await self._ready(False)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of `data`, waiting while the kernel's buffer is full (backpressure)."""
        view = memoryview(data)
        try:
            while view:
                try:
                    sent = self.sock.send(view)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                view = view[sent:]
                if view:
                    await self._ready(True)
        except OSError as exc:
            raise SideClosed(str(exc) or type(exc).__name__) from None

    async def write(self, *pieces: bytes | bytearray | memoryview) -> None:
        """Write the pieces in order, in one system call where the kernel takes them all
        (a head is one piece per line, a chunk three: joining them would copy the data)."""
        if len(pieces) > _MAX_PIECES:
            pieces = (b"".join(pieces),)
        if len(pieces) == 1:
            await self.send_all(pieces[0])
            return
        try:
            sent = self.sock.sendmsg(pieces)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            raise SideClosed(str(exc) or type(exc).__name__) from None
        for piece in _unsent(pieces, sent):
            await self.send_all(piece)

    def shutdown_write(self) -> None:
        """Pass on an end of input: a half-close, the other direction stays open."""
        if not self.closed:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)

    # ---- h11 --------------------------------------------------------------------

    async def read_some(self) -> None:
        """Feed what arrives next (b"" at EOF) to h11."""
        data = await self.recv(READ_SIZE)
        self.eof = not data
        self.conn.receive_data(data)

    def _parsed(self, event: object) -> object:
        if type(event) is h11.Request or type(event) is h11.Response:
            self.head = event  # type: ignore[assignment]
            if type(event) is h11.Request:
                self.method = event.method  # type: ignore[attr-defined]
        return event

    def _event(self) -> object:
        if self._pending is not None:
            event, self._pending = self._pending, None
            return event
        return self._parsed(self.conn.next_event())

    async def next_event(self) -> object:
        """The next h11 event, reading as needed (NEED_DATA never comes back)."""
        while True:
            event = self._event()
            if event is not h11.NEED_DATA:
                return event
            await self.read_some()

    def needs_data(self) -> bool:
        """Whether the next event needs more bytes (an event already parsed is kept for next_event)."""
        if self._pending is not None:
            return False
        event = self._parsed(self.conn.next_event())
        if event is h11.NEED_DATA:
            return True
        if event is not h11.PAUSED:
            self._pending = event
        return False

    @property
    def parsed_ahead(self) -> bool:
        """Whether h11 parsed an event that next_event has not returned yet."""
        return self._pending is not None

    def data_after(self, first: bytes) -> bytes:
        """`first` joined with the Data events already parsed behind it, for one write: a
        chunked body comes in many small chunks, and a write per chunk would cost speed."""
        parts = [first]
        while self._pending is None:
            event = self.conn.next_event()
            if isinstance(event, h11.Data):
                parts.append(event.data)
            else:
                if event is not h11.NEED_DATA and event is not h11.PAUSED:
                    self._pending = self._parsed(event)
                break
        return first if len(parts) == 1 else b"".join(parts)

    async def send(self, event: object) -> None:
        """Send one event and wait until the kernel took it (backpressure).  The pieces h11
        frames a body chunk with are written as they are: joining them would copy the data."""
        if type(event) is h11.Request:
            self.method = event.method  # type: ignore[attr-defined]
        pieces = self.conn.send_with_data_passthrough(event)
        if pieces:
            await self.write(*pieces)

    def buffered(self) -> int:
        return len(self.conn.trailing_data[0])

    # ---- the other end ----------------------------------------------------------

    def gone(self) -> bool:
        """Both directions of the socket are shut: the process closed it (or it half-closed
        and so did we). A half-close alone (stdin EOF) is not a hang-up."""
        if self.closed:
            return True
        poller = select.poll()
        poller.register(self.fd, select.POLLRDHUP)
        return any(mask & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, mask in poller.poll(0))

    async def wait_gone(self) -> None:
        """Return once this side hung up; read ahead into h11 meanwhile (bounded), then poll."""
        while not self.eof and self.buffered() < MAX_READ_AHEAD:
            await self.read_some()
        while not self.gone():
            await asyncio.sleep(HANGUP_POLL)

    async def linger(self, max_bytes: int, timeout: float) -> None:
        """Half-close our side, then read and drop what the peer still sends (bounded), so
        that it reads our last answer before the connection ends under it."""
        self.shutdown_write()

        async def drop() -> None:
            dropped = 0
            while dropped <= max_bytes and (data := await self.recv(READ_SIZE)):
                dropped += len(data)
        try:
            await asyncio.wait_for(drop(), timeout)
        except (OSError, SideClosed, asyncio.TimeoutError):
            return

    def close(self) -> None:
        """Close the socket; a task still waiting on it gets SideClosed."""
        if self.closed:
            return
        self.closed = True
        self.loop.remove_reader(self.fd)
        self.loop.remove_writer(self.fd)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(SideClosed("closed by the gateway"))
        self.sock.close()


def _unsent(pieces: tuple[bytes | bytearray | memoryview, ...], sent: int) -> list[memoryview]:
    """What is left of `pieces` after the first `sent` bytes went out."""
    rest = []
    for piece in pieces:
        view = memoryview(piece)
        if sent >= len(view):
            sent -= len(view)
            continue
        rest.append(view[sent:])
        sent = 0
    return rest
