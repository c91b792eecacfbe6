"""Bodies relayed as they came (ds01d/gateway/body_relay.py), in-process: the framing walk
agrees with h11 byte for byte, and on the wire bodies pass unchanged both ways while
keep-alive, pipelining, 100-continue, protocol switches, hang-ups and broken-off
engines behave as with h11 carrying every chunk.

Each test's engine is a small script on a Unix socket standing in for dockerd.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds01d.gateway.body_framing import CHUNKED, TO_EOF, Chunked, body_length
from ds01d.gateway.body_relay import HANDOVER_WORKS
from ds01d.gateway.policy_api import ALLOW_ALL
from ds01d.gateway.server import Gateway
from ds01d.host.sd_notify import Notifier

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


# ---- the framing walk against h11 ------------------------------------------------------


def h11_end(body: bytes) -> int | str:
    """Where h11 finds the end of a chunked request body, or its complaint."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    try:
        while not isinstance(event := conn.next_event(), h11.EndOfMessage):
            if event is h11.NEED_DATA:
                return "incomplete"
    except h11.RemoteProtocolError:
        return "malformed"
    return len(body) - len(conn.trailing_data[0])


def walk_end(body: bytes, cuts: list[int]) -> int | str:
    """Where Chunked finds it, fed in pieces cut at `cuts`."""
    walk, offset = Chunked(), 0
    bounds = sorted({c for c in cuts if 0 < c < len(body)}) + [len(body)]
    try:
        for bound in bounds:
            piece = body[offset:bound]
            upto = walk.feed(piece, 0, len(piece))
            if walk.done:
                return offset + upto
            offset = bound
    except h11.RemoteProtocolError:
        return "malformed"
    return "incomplete"


def chunked(chunks: list[bytes], ext: bytes = b"", trailers: bytes = b"") -> bytes:
    out = b"".join(b"%x%s\r\n%s\r\n" % (len(c), ext, c) for c in chunks if c)
    return out + b"0" + ext + b"\r\n" + trailers + b"\r\n"


FRAMING_BYTES = st.sampled_from([b"0", b"1", b"a", b"F", b"g", b";", b"x=1", b" ", b"\t", b"\r", b"\n", b"\r\n",
                                 b"\r\n\r\n", b":", b"X-T: v", b"00000000000000000000001"])


def h11_checks_chunk_footers() -> bool:
    """h11 0.16 (and Debian's patched 0.14) refuse a chunk whose CRLF is missing; PyPI's
    0.14 skipped two bytes unchecked (CVE-2025-43859).  The walk is always strict."""
    return h11_end(b"1\r\nx\n\r0\r\n\r\n") == "malformed"


@pytest.mark.skipif(not h11_checks_chunk_footers(), reason="this h11 does not check chunk footers (CVE-2025-43859)")
@settings(max_examples=400, deadline=None)
@given(chunks=st.lists(st.binary(max_size=40), max_size=5), ext=st.sampled_from([b"", b";a=b", b"; q", b" \t"]),
       trailers=st.sampled_from([b"", b"X-Check: 1\r\n", b"X-A: 1\r\nX-B: 2\r\n", b"bad trailer\r\n"]),
       after=st.binary(max_size=20), noise=st.lists(st.tuples(st.integers(0, 200), FRAMING_BYTES), max_size=3),
       cuts=st.lists(st.integers(0, 300), max_size=6))
def test_the_chunked_walk_ends_and_fails_where_h11_does(chunks, ext, trailers, after, noise, cuts) -> None:
    body = bytearray(chunked(chunks, ext, trailers) + after)
    for at, junk in noise:  # framing-like bytes anywhere: most make it malformed, some not
        body[at:at] = junk
    assert walk_end(bytes(body), cuts) == h11_end(bytes(body))


def test_the_chunked_walk_finds_the_end_in_every_split() -> None:
    body = chunked([b"hello", b"x" * 300, b"\r\n0\r\n\r\n"], b";name=value", b"X-Sum: 1\r\n") + b"GET / HTTP/1.1\r\n"
    end = h11_end(body)
    assert isinstance(end, int) and body[end:] == b"GET / HTTP/1.1\r\n"
    for cut in range(len(body)):
        for second in (cut + 1, cut + 3):
            assert walk_end(body, [cut, second]) == end


def test_this_h11_takes_the_hand_over() -> None:
    """Else every body would silently go the slow way through h11."""
    assert HANDOVER_WORKS


@pytest.mark.parametrize("method,head,length", [
    (b"POST", h11.Request(method="POST", target="/", headers=[("Host", "x"), ("Content-Length", "12")]), 12),
    (b"POST", h11.Request(method="POST", target="/", headers=[("Host", "x"), ("Transfer-Encoding", "chunked"),
                                                              ("Content-Length", "12")]), CHUNKED),
    (b"GET", h11.Request(method="GET", target="/", headers=[("Host", "x")]), 0),
    (b"GET", h11.Response(status_code=200, headers=[("Content-Length", "5")]), 5),
    (b"HEAD", h11.Response(status_code=200, headers=[("Content-Length", "5")]), 0),
    (b"GET", h11.Response(status_code=204, headers=[]), 0),
    (b"GET", h11.Response(status_code=304, headers=[("Content-Length", "5")]), 0),
    (b"GET", h11.Response(status_code=200, headers=[("Transfer-Encoding", "chunked")]), CHUNKED),
    (b"GET", h11.Response(status_code=200, headers=[]), TO_EOF),
])
def test_body_length_is_h11s_framing(method: bytes, head: Any, length: int) -> None:
    from h11._connection import _body_framing  # the private function body_length mirrors
    kind, args = _body_framing(method, head)
    assert length == {"chunked": CHUNKED, "http/1.0": TO_EOF}.get(kind, args[0] if args else None)
    assert body_length(method, head) == length


# ---- on the wire ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def gateway_to(tmp: Path, engine: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """The gateway (pass-through policy) in front of `engine`; yields its socket path and
    the count of engine connections opened so far."""
    opened = [0]

    async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        opened[0] += 1
        try:
            await engine(reader, writer)
        finally:
            writer.close()

    engine_server = await asyncio.start_unix_server(counted, path=str(tmp / "engine.sock"))
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp / "gw.sock"))
    listener.listen()
    gateway = Gateway(ALLOW_ALL, str(tmp / "engine.sock"), Notifier())
    accepting = asyncio.ensure_future(gateway.accept(listener))
    try:
        yield str(tmp / "gw.sock"), opened
    finally:
        accepting.cancel()
        engine_server.close()
        for task in list(gateway.connections):
            task.cancel()
        await asyncio.gather(accepting, *gateway.connections, return_exceptions=True)
        listener.close()


class Caller:
    """A raw client connection with an h11 parser for the answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.conn = h11.Connection(h11.CLIENT)
        self.raw = bytearray()  # every byte the gateway sent

    @classmethod
    async def to(cls, path: str) -> Caller:
        return cls(*await asyncio.open_unix_connection(path))

    async def send(self, data: bytes, pieces: int = 1) -> None:
        """Write `data` cut into `pieces` writes (at odd places)."""
        cuts = sorted(random.Random(len(data)).sample(range(1, len(data)), pieces - 1)) if pieces > 1 else []
        for start, end in zip([0, *cuts], [*cuts, len(data)]):
            self.writer.write(data[start:end])
            await self.writer.drain()

    async def answer(self, method: str = "GET") -> tuple[h11.Response, bytes]:
        """The next response (for a request made with `method`), its body decoded."""
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        if self.conn.our_state is h11.IDLE:  # the request was written raw: bring h11 along
            self.conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
            self.conn.send(h11.EndOfMessage())
        response, body = None, bytearray()
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                data = await asyncio.wait_for(self.reader.read(1 << 20), 10)
                self.raw += data
                self.conn.receive_data(data)
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                return response, bytes(body)
            elif not isinstance(event, h11.InformationalResponse):
                raise AssertionError(f"unexpected {event!r}")

    async def until_closed(self) -> bytes:
        """Everything the gateway sends until it closes the connection."""
        data = bytearray()
        while chunk := await asyncio.wait_for(self.reader.read(1 << 20), 10):
            data += chunk
        return bytes(data)


async def h11_engine(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     answer: Callable[[h11.Request, bytes], list[Any]]) -> None:
    """An engine parsing with h11, answering each request with the events `answer` gives
    (raw bytes in that list are written as they are)."""
    conn = h11.Connection(h11.SERVER)
    request, body = None, bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(1 << 20))
        elif isinstance(event, h11.Request):
            request, body = event, bytearray()
            if h11_expects_continue(event):
                writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None
            for out in answer(request, bytes(body)):
                writer.write(out if isinstance(out, bytes) else conn.send(out))
                await writer.drain()
            if conn.our_state is not h11.DONE:
                return
            conn.start_next_cycle()
        else:
            return


def h11_expects_continue(request: h11.Request) -> bool:
    return any(name == b"expect" and value.lower() == b"100-continue" for name, value in request.headers)


def blob(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def digest_answer(request: h11.Request, body: bytes) -> list[Any]:
    """Answer with what the engine got: method, target, body length and sha256 (or a blob for /blob/<n>)."""
    target = request.target.decode()
    data = blob(int(target.rsplit("/", 1)[1])) if target.startswith("/blob/") else \
        f"{request.method.decode()} {target} {len(body)} {hashlib.sha256(body).hexdigest()}".encode()
    return [h11.Response(status_code=200, headers=[("Content-Length", str(len(data)))]), h11.Data(data=data),
            h11.EndOfMessage()]


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def put(target: str, body: bytes, extra: str = "") -> bytes:
    return f"PUT {target} HTTP/1.1\r\nHost: d\r\n{extra}Content-Length: {len(body)}\r\n\r\n".encode() + body


def test_counted_bodies_both_ways_on_one_keep_alive_connection(tmp_path: Path) -> None:
    upload = blob(3 << 20, seed=2)

    async def main() -> None:
        async with gateway_to(tmp_path, lambda r, w: h11_engine(r, w, digest_answer)) as (path, opened):
            caller = await Caller.to(path)
            await caller.send(put("/containers/c/archive?path=/tmp", upload), pieces=7)
            _, got = await caller.answer("PUT")
            assert got == f"PUT /containers/c/archive?path=/tmp {len(upload)} {hashlib.sha256(upload).hexdigest()}".encode()
            await caller.send(b"GET /blob/4000000 HTTP/1.1\r\nHost: d\r\n\r\n")
            response, got = await caller.answer()
            assert got == blob(4000000) and (b"content-length", b"4000000") in response.headers
            await caller.send(put("/small", b"{}"))
            assert (await caller.answer("PUT"))[1].startswith(b"PUT /small 2 ")
            assert opened == [1]  # one engine connection carried the three
    run(main())


def test_a_chunked_body_passes_as_it_came_both_ways(tmp_path: Path) -> None:
    request_body = chunked([b"a" * 5, blob(70000, 3), b"\r\n0\r\n\r\n", blob(1, 4)], b";ext=1", b"X-Sum: abc\r\n")
    answer_chunks = [blob(100, 5), blob(300000, 6), b"tail"]
    answer_body = chunked(answer_chunks, b";x")
    seen_raw = bytearray()

    async def engine(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in head.lower()
        while not seen_raw.endswith(b"X-Sum: abc\r\n\r\n"):
            seen_raw.extend(await reader.read(65536))
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for at in range(0, len(answer_body), 999):  # small writes: chunk lines cut anywhere
            writer.write(answer_body[at:at + 999])
            await writer.drain()
        await h11_engine(reader, writer, digest_answer)  # the connection goes on

    async def main() -> None:
        async with gateway_to(tmp_path, engine) as (path, opened):
            caller = await Caller.to(path)
            head = b"PUT /containers/c/archive HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n"
            await caller.send(head + request_body, pieces=40)
            response, got = await caller.answer("PUT")
            assert seen_raw == request_body  # the caller's own framing, extensions and trailer included
            assert got == b"".join(answer_chunks)
            assert bytes(caller.raw).endswith(b"\r\n\r\n" + answer_body)  # the engine's own framing
            await caller.send(b"GET /next HTTP/1.1\r\nHost: d\r\n\r\n")
            assert (await caller.answer())[1].startswith(b"GET /next 0 ")
            assert opened == [1]
    run(main())


@pytest.mark.parametrize("framing", ["counted", "chunked"])
def test_a_request_pipelined_right_after_a_body_is_answered(tmp_path: Path, framing: str) -> None:
    body = blob(200000, 7)
    first = put("/one", body) if framing == "counted" else \
        b"PUT /one HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked([body[:1000], body[1000:]])

    async def main() -> None:
        async with gateway_to(tmp_path, lambda r, w: h11_engine(r, w, digest_answer)) as (path, _):
            caller = await Caller.to(path)
            await caller.send(first + b"GET /two HTTP/1.1\r\nHost: d\r\n\r\n" + put("/three", b"xyz"))
            assert (await caller.answer("PUT"))[1] == f"PUT /one 200000 {hashlib.sha256(body).hexdigest()}".encode()
            assert (await caller.answer())[1].startswith(b"GET /two 0 ")
            assert (await caller.answer("PUT"))[1].startswith(b"PUT /three 3 ")
    run(main())


@pytest.mark.parametrize("engine_goes_on", [False, True])
def test_a_caller_that_hangs_up_mid_download_ends_the_engine_connection(tmp_path: Path, engine_goes_on: bool) -> None:
    """The engine either pauses mid-body (the hang-up is noticed while it is silent) or
    keeps sending (a write to the caller fails)."""
    engine_saw_the_end = asyncio.Event()

    async def engine(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n" + blob(100000))
        try:
            if engine_goes_on:
                while True:
                    writer.write(blob(65536))
                    await writer.drain()
            else:
                assert await reader.read() == b""  # the gateway closed the connection
        except ConnectionError:
            pass
        engine_saw_the_end.set()

    async def main() -> None:
        async with gateway_to(tmp_path, engine) as (path, _):
            caller = await Caller.to(path)
            await caller.send(b"GET /containers/c/archive?path=/ HTTP/1.1\r\nHost: d\r\n\r\n")
            got = b""
            while len(got) < 50000:
                got += await caller.reader.read(65536)
            caller.writer.close()
            await asyncio.wait_for(engine_saw_the_end.wait(), 10)
    asyncio.run(main())


@pytest.mark.parametrize("framing", ["counted", "chunked"])
def test_an_engine_that_closes_mid_body_closes_the_caller_without_completing_it(tmp_path: Path, framing: str) -> None:
    head = b"HTTP/1.1 200 OK\r\n" + (b"Content-Length: 1000\r\n\r\n" if framing == "counted" else
                                     b"Transfer-Encoding: chunked\r\n\r\n3e8\r\n")
    sent = head + b"x" * 500

    async def engine(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(sent)
        await writer.drain()

    async def main() -> None:
        async with gateway_to(tmp_path, engine) as (path, _):
            caller = await Caller.to(path)
            await caller.send(b"GET /containers/c/archive HTTP/1.1\r\nHost: d\r\n\r\n")
            assert await caller.until_closed() == sent  # no end of body made up
    run(main())


def test_a_malformed_chunked_body_is_answered_400(tmp_path: Path) -> None:
    async def main() -> None:
        async with gateway_to(tmp_path, lambda r, w: h11_engine(r, w, digest_answer)) as (path, _):
            caller = await Caller.to(path)
            await caller.send(b"PUT /x HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n")
            response, body = await caller.answer("PUT")
            assert response.status_code == 400 and b"malformed HTTP request body: illegal chunk header" in body
            assert await caller.until_closed() == b""
    run(main())


def test_expect_100_continue_with_a_streamed_body(tmp_path: Path) -> None:
    body = blob(100000, 8)

    async def main() -> None:
        async with gateway_to(tmp_path, lambda r, w: h11_engine(r, w, digest_answer)) as (path, _):
            caller = await Caller.to(path)
            await caller.send(put("/x", b"", "Expect: 100-continue\r\n").replace(b"Length: 0", b"Length: 100000"))
            continued = await asyncio.wait_for(caller.reader.readuntil(b"\r\n\r\n"), 10)
            assert continued.startswith(b"HTTP/1.1 100 ")
            await caller.send(body, pieces=3)
            caller.conn.receive_data(continued)
            assert (await caller.answer("PUT"))[1] == f"PUT /x 100000 {hashlib.sha256(body).hexdigest()}".encode()
    run(main())


def test_an_upgrade_gets_the_bytes_sent_right_after_its_body(tmp_path: Path) -> None:
    """exec start with `Upgrade: tcp`: what the caller sends after the request body is the
    start of the raw stream, and must reach the engine after the 101."""
    async def engine(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        assert await reader.readexactly(17) == b'{"Detach": false}'
        writer.write(b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
        while data := await reader.read(65536):  # echo the raw stream
            writer.write(data.upper())
            await writer.drain()
        writer.write_eof()

    async def main() -> None:
        async with gateway_to(tmp_path, engine) as (path, _):
            caller = await Caller.to(path)
            request = put("/exec/e/start", b'{"Detach": false}', "Connection: Upgrade\r\nUpgrade: tcp\r\n")
            await caller.send(request.replace(b"PUT", b"POST") + b"stdin before the answer")
            caller.writer.write_eof()
            out = await caller.until_closed()
            assert out.startswith(b"HTTP/1.1 101 UPGRADED\r\n") and out.endswith(b"\r\n\r\nSTDIN BEFORE THE ANSWER")
    run(main())


def test_a_chunked_answer_to_an_http_1_0_caller_is_framed_again(tmp_path: Path) -> None:
    async def engine(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked([b"old", b" client"]))
        await writer.drain()
        await reader.read()

    async def main() -> None:
        async with gateway_to(tmp_path, engine) as (path, _):
            caller = await Caller.to(path)
            await caller.send(b"GET /version HTTP/1.0\r\nHost: d\r\n\r\n")
            out = await caller.until_closed()
            assert out.startswith(b"HTTP/1.1 200 ") and b"chunked" not in out.lower()
            assert out.endswith(b"\r\n\r\nold client")
    run(main())
