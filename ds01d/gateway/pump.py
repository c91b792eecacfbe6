"""Bytes from one socket to another, moved inside the event loop's own callbacks.

A body or a raw stream is copied through one reused buffer: when the source is readable
its bytes are read and written on at once; when the destination is full, reading stops
until it took them (backpressure), so at most one buffer is held.  Nothing is created or
registered anew per read.  A coroutine waking for each read costs a future, two
`epoll_ctl` calls, an exception for the EAGAIN before it and a task switch; `docker cp`
answers come from dockerd in 32 KiB writes, and those wake-ups were most of the
gateway's time.  The callbacks do one read and one write each, so a copy whose sockets
are always ready still gives the other connections their turn.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import h11

from ds01d.gateway.http_side import HttpSide, SideClosed, Stopped


class Framing(Protocol):
    """Where the bytes being moved end (`body_framing`)."""

    @property
    def done(self) -> bool: ...

    def feed(self, buf: bytearray, start: int, end: int) -> int: ...

    def cut_short(self) -> str: ...


class UntilEof:
    """A raw stream: it ends with the source's input."""

    done = False

    def feed(self, buf: bytearray, start: int, end: int) -> int:
        return end

    def cut_short(self) -> str:
        return ""


class Pump:
    """Moves bytes from src to dst until `framing` says they ended (or, UntilEof, src's EOF)."""

    def __init__(self, src: HttpSide, dst: HttpSide, framing: Framing, buf: bytearray,
                 stop: asyncio.Future[Any] | None = None):
        self.src, self.dst, self.framing, self.stop = src, dst, framing, stop
        self.buf, self.view = buf, memoryview(buf)
        self.loop = src.loop
        self.result: asyncio.Future[bytes] = self.loop.create_future()
        self.unwritten: memoryview | None = None
        self.rest = b""  # what was read past the end
        self.reading = self.writing = False

    async def run(self) -> bytes:
        """Move until the end; what was read past it.  Raises h11.RemoteProtocolError for a
        malformed body or one cut short by src's EOF, SideClosed when dst is gone or
        either side was closed, Stopped when `stop` is done while src is silent, and
        src's own OSError."""
        if self.src.closed or self.dst.closed:
            raise SideClosed("closed by the gateway")
        self.src.watch(self.result)
        self.dst.watch(self.result)
        if self.stop is not None:
            self.stop.add_done_callback(self._stopped)
        try:
            self._read(True)
            return await self.result
        finally:
            self._read(False)
            self._write(False)
            self.src.unwatch(self.result)
            self.dst.unwatch(self.result)
            if self.stop is not None:
                self.stop.remove_done_callback(self._stopped)

    # ---- callbacks ------------------------------------------------------------------

    def _readable(self) -> None:
        if self.result.done():
            return
        try:
            read = self.src.sock.recv_into(self.view)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._end(exc)
            return
        if not read:
            self.src.eof = True
            self._end(None if isinstance(self.framing, UntilEof) else h11.RemoteProtocolError(self.framing.cut_short()))
            return
        try:
            upto = self.framing.feed(self.buf, 0, read)
        except h11.RemoteProtocolError as exc:
            self._end(exc)
            return
        if self.framing.done:
            self.rest = bytes(self.view[upto:read])
        self._send(self.view[:upto])

    def _writable(self) -> None:
        if not self.result.done() and self.unwritten is not None:
            self._send(self.unwritten)

    def _send(self, data: memoryview) -> None:
        try:
            sent = self.dst.sock.send(data) if data else 0
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._end(SideClosed(str(exc) or type(exc).__name__))
            return
        if sent < len(data):  # dst is full: stop reading until it took the rest
            self.unwritten = data[sent:]
            self._read(False)
            self._write(True)
            return
        self.unwritten = None
        self._write(False)
        if self.framing.done:
            self._end(None)
        else:
            self._read(True)

    def _stopped(self, _: object) -> None:
        if self.unwritten is None:  # waiting on src, not on dst
            self._end(Stopped())

    def _end(self, error: BaseException | None) -> None:
        self._read(False)
        self._write(False)
        if self.result.done():
            return
        if error is None:
            self.result.set_result(self.rest)
        else:
            self.result.set_exception(error)

    # ---- registrations ----------------------------------------------------------------

    def _read(self, on: bool) -> None:
        if on == self.reading or self.src.closed:
            return
        self.reading = on
        if on:
            self.loop.add_reader(self.src.fd, self._readable)
        else:
            self.loop.remove_reader(self.src.fd)

    def _write(self, on: bool) -> None:
        if on == self.writing or self.dst.closed:
            return
        self.writing = on
        if on:
            self.loop.add_writer(self.dst.fd, self._writable)
        else:
            self.loop.remove_writer(self.dst.fd)
