"""Where a body ends, found while its bytes pass through unchanged: a count for a body
with Content-Length, a walk over the framing of a chunked one.

The chunked walk accepts exactly what h11 accepts and fails where h11 fails, with
h11's exception (`h11.RemoteProtocolError`), so a body relayed as it came is judged as
one h11 parsed: chunk-size lines are checked with h11's grammar (1 to 20 hex digits,
extensions, trailing blanks), each payload and the CRLF after it are counted, and the
last chunk with its trailers is given to an h11 parser of its own.  The engine is sent
the caller's own framing, which it parses as it would without the gateway.
"""

from __future__ import annotations

import re

import h11

from ds01d.gateway.http_side import MAX_HEAD

#: A chunked body (as opposed to a length).
CHUNKED = -1
#: A response whose body ends with the connection (no length, no chunks).
TO_EOF = -2

#: h11's chunk header (h11/_abnf.py: chunk_size, chunk_ext, OWS), one line up to its first CRLF
#: (`.` stops at LF, so a match never runs past that CRLF).
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;.*)?[ \t]*\r\n")
#: The end of a chunk's data and the next chunk's header, in one piece: the common case.
_NEXT_CHUNK = re.compile(rb"\r\n([0-9A-Fa-f]{1,20})(?:;.*)?[ \t]*\r\n")
#: What puts a parser of its own at the last chunk of a chunked body.
_CHUNKED_HEAD = b"POST / HTTP/1.1\r\nHost: gateway\r\nTransfer-Encoding: chunked\r\n\r\n"


def body_length(request_method: bytes, head: h11.Request | h11.Response) -> int:
    """How the body after `head` is framed, as h11 decides it (RFC 7230 3.3.3, h11's
    `_body_framing`): its length, CHUNKED, or TO_EOF.  h11 already refused any other
    Transfer-Encoding and any malformed Content-Length when it parsed the head."""
    if type(head) is h11.Response:
        status = head.status_code
        if status in (204, 304) or request_method == b"HEAD" or (request_method == b"CONNECT" and status < 300):
            return 0
    length = None
    for name, value in head.headers:
        if name == b"transfer-encoding":
            return CHUNKED
        if name == b"content-length" and length is None:
            length = int(value)
    if length is not None:
        return length
    return 0 if type(head) is h11.Request else TO_EOF


class Counted:
    """A body of a known length."""

    def __init__(self, length: int):
        self.left = length
        self.length = length

    @property
    def done(self) -> bool:
        return self.left == 0

    def feed(self, buf: bytes | bytearray, start: int, end: int) -> int:
        """Where in buf[start:end] this body ends (`end` when it goes on past it)."""
        upto = min(end, start + self.left)
        self.left -= upto - start
        return upto

    def cut_short(self) -> str:
        return (f"peer closed connection without sending complete message body: received "
                f"{self.length - self.left} bytes, expected {self.length}")


class Chunked:
    """A chunked body, walked chunk by chunk; raises h11.RemoteProtocolError where h11 would."""

    def __init__(self) -> None:
        self.payload = 0      # bytes of the current chunk's data still to come
        self.footer = b""     # what is still to come of the CRLF after them
        self.line = bytearray()  # a chunk-size line begun in an earlier piece
        self.tail: h11.Connection | None = None  # from the last chunk on: h11 reads the trailers
        self.done = False

    def feed(self, buf: bytes | bytearray, start: int, end: int) -> int:
        """Where in buf[start:end] this body ends (`end` when it goes on past it)."""
        pos = start
        while pos < end and not self.done:
            if self.payload:
                step = min(self.payload, end - pos)
                self.payload -= step
                pos += step
            elif self.footer == b"\r\n" and (next_chunk := _NEXT_CHUNK.match(buf, pos, end)) \
                    and (size := int(next_chunk.group(1), 16)):
                self.payload = size  # a whole footer and chunk header at once (the last chunk goes the long way)
                pos = next_chunk.end()
            elif self.footer:
                pos = self._footer(buf, pos, end)
            elif self.tail is not None:
                pos = self._trailers(buf, pos, end)
            else:
                pos = self._line(buf, pos, end)
        return pos

    def cut_short(self) -> str:
        return "peer closed connection without sending complete message body (incomplete chunked read)"

    def _footer(self, buf: bytes | bytearray, pos: int, end: int) -> int:
        got = bytes(buf[pos:pos + len(self.footer)])
        if got != self.footer[:len(got)]:
            raise h11.RemoteProtocolError(f"malformed chunk footer: {got!r} (expected {self.footer!r})")
        self.footer = self.footer[len(got):]
        return pos + len(got)

    def _line(self, buf: bytes | bytearray, pos: int, end: int) -> int:
        if self.line.endswith(b"\r") and buf[pos:pos + 1] == b"\n":
            cut = pos + 1  # the CRLF was split between two pieces
        else:
            found = buf.find(b"\r\n", pos, end)
            if found < 0:
                self.line += buf[pos:end]
                if len(self.line) > MAX_HEAD:
                    raise h11.RemoteProtocolError("Receive buffer too long", error_status_hint=431)
                return end
            cut = found + 2
        if self.line:
            self.line += buf[pos:cut]
            line, self.line = bytes(self.line), bytearray()
        else:
            line = bytes(buf[pos:cut])
        self._chunk_header(line)
        return cut

    def _chunk_header(self, line: bytes) -> None:
        match = _CHUNK_LINE.fullmatch(line)
        if match is None:
            raise h11.RemoteProtocolError(f"illegal chunk header: {line!r}")
        size = int(match.group(1), 16)
        if size:
            self.payload, self.footer = size, b"\r\n"
            return
        self.tail = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.tail.receive_data(_CHUNKED_HEAD + line)
        self.tail.next_event()  # the made-up head; the last chunk and trailers follow

    def _trailers(self, buf: bytes | bytearray, pos: int, end: int) -> int:
        assert self.tail is not None
        self.tail.receive_data(bytes(buf[pos:end]))
        event = self.tail.next_event()
        if event is h11.NEED_DATA:
            return end
        if type(event) is not h11.EndOfMessage:
            raise h11.RemoteProtocolError(f"unexpected {type(event).__name__} after the last chunk")
        self.done = True
        return end - len(self.tail.trailing_data[0])
