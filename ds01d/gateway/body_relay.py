"""A streamed body passed from one side to the other as it came, past h11.

h11 parses the head; the body's bytes are then read into one reused buffer and written
from it unchanged (`pump`), their framing only walked to find where the body ends
(`body_framing`): no Data events, no chunks framed again, no copies but the kernel's.
With h11 every chunk became an event and was framed again, and each byte was copied
some five times: for a 1 GB `docker cp` the gateway was the bottleneck.

h11 stays the authority on the connection: it is handed what it had read past the head
(the start of the body), and when the body is over it is told the message ended and
given what followed it (a pipelined request), so keep-alive, 100-continue, protocol
switches and the trailing data of a connection that turns raw work as before.  The
sending side's h11 sees the body as Data events (counted bodies, which it checks
against Content-Length) or only its end (chunked bodies, whose framing went as it came).
Only a body framed the same way on both sides goes this way: a chunked answer to an
HTTP/1.0 caller is framed again by h11.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11

from ds01d.gateway.body_framing import CHUNKED, Chunked, Counted, body_length
from ds01d.gateway.http_side import HttpSide, relay_buffer
from ds01d.gateway.pump import Pump


def relayed_length(src: HttpSide, dst: HttpSide) -> int:
    """The body after the head src's h11 just parsed, when it can pass to dst as it came:
    its length or CHUNKED; 0 when there is none or h11 must frame it again."""
    head = src.head
    if head is None or src.conn.their_state is not h11.SEND_BODY or not HANDOVER_WORKS:
        return 0
    length = body_length(src.method, head)
    if length == CHUNKED:
        if type(head) is h11.Response and (dst.conn.their_http_version or b"1.0") < b"1.1":
            return 0  # h11 sends it to an HTTP/1.0 caller without chunks, to the connection's end
        return CHUNKED
    return max(length, 0)


async def relay_body(src: HttpSide, dst: HttpSide, length: int, stop: asyncio.Future[Any] | None = None) -> None:
    """Pass the body of `length` (or CHUNKED) from src to dst, whose h11 sent the same head.

    Raises h11.RemoteProtocolError when the body is malformed or src closes before its
    end (as h11 would), SideClosed when dst is gone, Stopped when `stop` is done while
    src is silent."""
    framing = Counted(length) if length != CHUNKED else Chunked()
    assert not src.parsed_ahead, "an event was parsed past the head"
    start = take_unparsed(src.conn)
    upto = framing.feed(start, 0, len(start))
    if upto:
        await dst.send_all(memoryview(start)[:upto])
    if framing.done:
        rest = start[upto:]
    else:
        with relay_buffer() as buf:
            rest = await Pump(src, dst, framing, buf, stop).run()
    end_received(src.conn, rest)
    if length != CHUNKED:  # h11 checks the count against the Content-Length it sent
        dst.conn.send_with_data_passthrough(h11.Data(data=Relayed(length)))  # type: ignore[arg-type]
    dst.conn.send(h11.EndOfMessage())  # its bytes (a chunked body's last chunk) went as they came


class Relayed:
    """What h11 is shown of a body that went past it: its length (h11 passes Data through
    untouched but for len(), as it does for sendfile placeholders)."""

    def __init__(self, length: int):
        self.length = length

    def __len__(self) -> int:
        return self.length


# ---- h11 hand-over -----------------------------------------------------------------
# h11 has no public way to skip a body it did not parse; these two touch its receiving
# half (the same in h11 0.14 to 0.16, checked by tests/test_gateway_body_relay.py).


def take_unparsed(conn: h11.Connection) -> bytes:
    """What h11 read past the head it just returned (the body's first bytes), taken out of it."""
    data = bytes(conn._receive_buffer)
    conn._receive_buffer = type(conn._receive_buffer)()
    return data


def end_received(conn: h11.Connection, rest: bytes) -> None:
    """Tell h11 the peer's message ended (as its own reader would at the end of the body),
    then give back what the peer sent after it: in front of an end of input h11 may have
    been told of meanwhile (a caller that half-closed after its request)."""
    conn._process_event(conn.their_role, h11.EndOfMessage())
    conn._receive_buffer += rest


def _handover_works() -> bool:
    """Whether this h11 takes the hand-over as the versions it was written for do; if not,
    h11 carries every body, slower but correct."""
    try:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET")
        if type(conn.next_event()) is not h11.Request:
            return False
        taken = take_unparsed(conn)
        end_received(conn, taken[3:])
        return taken == b"abcGET" and conn.their_state is h11.DONE and conn.trailing_data == (b"GET", False)
    except Exception:
        return False


HANDOVER_WORKS = _handover_works()
