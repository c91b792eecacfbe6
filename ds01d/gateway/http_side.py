"""One end of a proxied exchange: a Unix stream, its h11 state machine, and whether the
process at the other end is still there.

Everything read from a side goes through its h11 connection (`receive_data`), also what
is read only to notice a hang-up, so no byte is lost or read twice: when the exchange
turns raw, `h11.Connection.trailing_data` hands over what was read but not parsed.
"""

from __future__ import annotations

import asyncio
import select
import socket

import h11

#: Bytes read from a socket at once: large enough for 1 GB copies, small enough per connection.
CHUNK = 256 * 1024
#: The largest request or response head (dockerd's limit: Go's default MaxHeaderBytes).
MAX_HEAD = 1024 * 1024 + 4096
#: How often a side that can no longer be read (half-closed, or holding back a client that
#: sends faster than it is forwarded) is checked for a full close.
HANGUP_POLL = 0.25
#: What a watch for hang-ups reads ahead of the exchange (pipelined requests, an early body).
MAX_READ_AHEAD = 64 * 1024


class SideClosed(Exception):
    """Writing to a side failed: its process closed the connection."""


class HttpSide:
    """A stream with its h11 connection (role CLIENT for the engine, SERVER for a caller)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, role: type[h11.Sentinel]):
        self.reader = reader
        self.writer = writer
        self.conn = h11.Connection(role, max_incomplete_event_size=MAX_HEAD)
        self.eof = False
        self._pending: object | None = None  # an event parsed ahead (see data_after)

    @property
    def sock(self) -> socket.socket:
        return self.writer.get_extra_info("socket")

    async def read_some(self) -> None:
        """Feed what arrives next (b"" at EOF) to h11."""
        data = await self.reader.read(CHUNK)
        self.eof = not data
        self.conn.receive_data(data)

    def _event(self) -> object:
        if self._pending is not None:
            event, self._pending = self._pending, None
            return event
        return self.conn.next_event()

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
        event = self.conn.next_event()
        if event is h11.NEED_DATA:
            return True
        if event is not h11.PAUSED:
            self._pending = event
        return False

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
                    self._pending = event
                break
        return first if len(parts) == 1 else b"".join(parts)

    async def send(self, event: object) -> None:
        """Send one event and wait until the kernel took it (backpressure).  The pieces h11
        frames a body chunk with are written as they are: joining them would copy the data."""
        pieces = self.conn.send_with_data_passthrough(event)
        if pieces:
            await self.write(*pieces)

    async def write(self, *pieces: bytes) -> None:
        try:
            for piece in pieces:
                self.writer.write(piece)
            await self.writer.drain()
        except (ConnectionError, RuntimeError) as exc:  # RuntimeError: the transport closed under us
            raise SideClosed(str(exc) or type(exc).__name__) from None

    def buffered(self) -> int:
        return len(self.conn.trailing_data[0])

    def gone(self) -> bool:
        """Both directions of the socket are shut: the process closed it (or it half-closed
        and so did we). A half-close alone (stdin EOF) is not a hang-up."""
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLRDHUP)
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
        try:
            if self.writer.can_write_eof():
                self.writer.write_eof()
            dropped = len(self.conn.trailing_data[0])
            deadline = asyncio.get_running_loop().time() + timeout
            while dropped <= max_bytes:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    return
                data = await asyncio.wait_for(self.reader.read(CHUNK), left)
                if not data:
                    return
                dropped += len(data)
        except (OSError, RuntimeError, asyncio.TimeoutError):
            return

    def close(self) -> None:
        transport = self.writer.transport
        if not transport.is_closing():
            transport.close()

    def abort(self) -> None:
        self.writer.transport.abort()
