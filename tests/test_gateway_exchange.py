"""The gateway's exchange with a policy, in-process: what a policy's verdicts do on the
wire, and that a caller who hangs up while its request is judged cancels the judge.

The engine here is a small echo server (it answers every request with what it
received), which is enough to see what the gateway forwarded; everything about the
real engine is in tests/test_gateway_box.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import h11
import pytest

from ds01d.gateway.policy_api import ALLOW_ALL, MAX_JUDGED_BODY, Forward, Peer, Policy, Refuse, RequestHead, Verdict
from ds01d.gateway.server import Gateway
from ds01d.host.sd_notify import Notifier


class EchoEngine:
    """Answers each request with JSON {method, target, body} (a stand-in for dockerd)."""

    def __init__(self, path: Path):
        self.path = path
        self.requests: list[dict[str, Any]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        request, body = None, b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                seen = {"method": request.method.decode(), "target": request.target.decode(), "body": body.decode()}
                self.requests.append(seen)
                data = json.dumps(seen).encode()
                for out in (h11.Response(status_code=200, headers=[("Content-Type", "application/json"),
                                                                   ("Content-Length", str(len(data)))]),
                            h11.Data(data=data), h11.EndOfMessage()):
                    writer.write(conn.send(out))
                await writer.drain()
                conn.start_next_cycle()
                request, body = None, b""
            else:
                writer.close()
                return


class Recorder:
    """A policy built from a function, recording what it was asked and whether it was cancelled."""

    def __init__(self, verdict: Callable[[RequestHead, bytes | None], Verdict] | None = None,
                 wants_body: bool = False, blocks: bool = False):
        self.verdict = verdict or (lambda head, body: Forward())
        self.body_wanted = wants_body
        self.blocks = blocks
        self.asked: list[tuple[Peer, RequestHead, bytes | None]] = []
        self.cancelled = asyncio.Event()

    def wants_body(self, peer: Peer, head: RequestHead) -> bool:
        return self.body_wanted

    async def judge(self, peer: Peer, head: RequestHead, body: bytes | None) -> Verdict:
        self.asked.append((peer, head, body))
        if self.blocks:
            try:
                await asyncio.Event().wait()  # a GPU that never comes free
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        return self.verdict(head, body)


async def serve(tmp: Path, policy: Policy, engine: bool = True) -> AsyncIterator[tuple[str, EchoEngine]]:
    echo = EchoEngine(tmp / "engine.sock")
    engine_server = await asyncio.start_unix_server(echo.handle, path=str(echo.path)) if engine else None
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp / "gw.sock"))
    listener.listen()
    gateway = Gateway(policy, str(echo.path), Notifier())
    accepting = asyncio.ensure_future(gateway.accept(listener))
    try:
        yield str(tmp / "gw.sock"), echo
    finally:
        accepting.cancel()
        if engine_server:
            engine_server.close()
        for task in list(gateway.connections):
            task.cancel()
        await asyncio.gather(accepting, *gateway.connections, return_exceptions=True)
        listener.close()


async def ask(path: str, raw: bytes) -> tuple[int, dict[str, Any], bytes]:
    """Send raw bytes, read one response: (status, headers, body)."""
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(raw)
    await writer.drain()
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))  # only to put h11 in the right state
    status, headers, body = 0, {}, b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await asyncio.wait_for(reader.read(65536), 10))
        elif isinstance(event, h11.Response):
            status, headers = event.status_code, {k.decode(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            writer.close()
            return status, headers, body


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def post(target: str, body: bytes, extra: str = "") -> bytes:
    return (f"POST {target} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def test_allow_all_forwards_untouched_and_the_policy_sees_the_routed_path(tmp_path: Path) -> None:
    policy = Recorder()

    async def main() -> None:
        async for path, echo in serve(tmp_path, policy):
            status, _, body = await ask(path, post("/v1.41/containers%2Fcreate?name=x", b'{"Image":"i"}'))
            assert status == 200
            assert json.loads(body) == {"method": "POST", "target": "/v1.41/containers%2Fcreate?name=x",
                                        "body": '{"Image":"i"}'}
            peer, head, seen_body = policy.asked[0]
            assert (head.path, head.query, head.api_version, seen_body) == ("/containers/create", "name=x", "1.41", None)
            assert ("content-type", "application/json") in head.headers
            assert (peer.uid, peer.pid) == (__import__("os").getuid(), __import__("os").getpid())
    run(main())
    assert ALLOW_ALL.wants_body(Peer(0, 0, 1), policy.asked[0][1]) is False


def test_a_judged_body_can_be_replaced_and_the_response_filtered(tmp_path: Path) -> None:
    policy = Recorder(lambda head, body: Forward(body=b'{"rewritten":true}',
                                                 filter_response=lambda status, data: data.replace(b"POST", b"TSOP")),
                      wants_body=True)

    async def main() -> None:
        async for path, echo in serve(tmp_path, policy):
            status, headers, body = await ask(path, post("/containers/create", b'{"Image":"i"}',
                                                         "Expect: 100-continue\r\n"))
            assert policy.asked[0][2] == b'{"Image":"i"}'
            assert echo.requests[0]["body"] == '{"rewritten":true}'
            assert json.loads(body)["method"] == "TSOP" and headers["content-length"] == str(len(body))
    run(main())


def test_a_refusal_is_a_docker_style_error_and_the_connection_goes_on(tmp_path: Path) -> None:
    policy = Recorder(lambda head, body: Refuse(403, "not yours") if "stop" in head.path else Forward())

    async def main() -> None:
        async for path, echo in serve(tmp_path, policy):
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(post("/containers/x/stop", b"{}") + b"GET /containers/json HTTP/1.1\r\nHost: d\r\n\r\n")
            data = b""
            while data.count(b"HTTP/1.1") < 2 or not data.endswith(b"}"):
                data += await asyncio.wait_for(reader.read(65536), 10)
            first, second = data.split(b"HTTP/1.1 ")[1:]
            assert first.startswith(b"403 ") and b'{"message": "not yours"}' in first
            assert b"application/json" in first
            assert second.startswith(b"200 ") and b'"target": "/containers/json"' in second
            assert [r["target"] for r in echo.requests] == ["/containers/json"]
            writer.close()
    run(main())


def test_a_body_over_the_judged_limit_is_refused_413(tmp_path: Path) -> None:
    policy = Recorder(wants_body=True)

    async def main() -> None:
        async for path, echo in serve(tmp_path, policy):
            status, _, body = await ask(path, post("/containers/create", b"x" * (MAX_JUDGED_BODY + 1)))
            assert status == 413 and "4 MiB" in json.loads(body)["message"]
            assert policy.asked == [] and echo.requests == []
    run(main())


def test_a_caller_that_hangs_up_while_judged_cancels_the_judge(tmp_path: Path) -> None:
    policy = Recorder(blocks=True)

    async def main() -> None:
        async for path, echo in serve(tmp_path, policy):
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(post("/containers/create", b"{}"))
            await writer.drain()
            while not policy.asked:
                await asyncio.sleep(0.01)
            assert not policy.cancelled.is_set()
            writer.close()
            await asyncio.wait_for(policy.cancelled.wait(), 5)
            assert echo.requests == []
    run(main())


def test_a_half_closed_caller_is_still_answered(tmp_path: Path) -> None:
    """`printf ... | nc -U` shuts its writing side after the request: still a caller, not a hang-up."""
    async def main() -> None:
        async for path, echo in serve(tmp_path, Recorder()):
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
            writer.write_eof()
            data = await asyncio.wait_for(reader.read(), 10)
            assert data.startswith(b"HTTP/1.1 200 ") and b'"/_ping"' in data
    run(main())


def test_an_engine_that_is_down_gets_one_sentence(tmp_path: Path) -> None:
    async def main() -> None:
        async for path, _ in serve(tmp_path, Recorder(), engine=False):
            status, _, body = await ask(path, b"GET /containers/json HTTP/1.1\r\nHost: d\r\n\r\n")
            message = json.loads(body)["message"]
            assert status == 503
            assert message.startswith("Docker is not answering (cannot connect to ") and "No such file" in message
            assert message.count(". ") == 0 and message.endswith(".")
    run(main())


@pytest.mark.parametrize("raw,status,words", [
    (b"GARBAGE\r\n\r\n", 400, "malformed HTTP request"),
    (b"GET /containers/json HTTP/1.1\r\n\r\n", 400, "Host"),
    (b"POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: -1\r\n\r\n", 400, "malformed HTTP request"),
    (b"GET //containers/json HTTP/1.1\r\nHost: d\r\n\r\n", 400, "canonical"),
    (b"GET /v1.41.0/containers/json HTTP/1.1\r\nHost: d\r\n\r\n", 400, "API version"),
    (b"GET / HTTP/1.1\r\nHost: d\r\nX-Big: " + b"a" * (1100 * 1024) + b"\r\n\r\n", 431, "malformed HTTP request"),
])
def test_malformed_requests_get_a_json_error(tmp_path: Path, raw: bytes, status: int, words: str) -> None:
    async def main() -> None:
        async for path, echo in serve(tmp_path, Recorder()):
            got, headers, body = await ask(path, raw)
            assert got == status and words in json.loads(body)["message"]
            assert echo.requests == []
    run(main())


def test_a_refused_upload_is_answered_while_its_body_still_streams(tmp_path: Path) -> None:
    """`docker cp` into someone else's container: the refusal reaches the client that is still
    writing its chunked body (it read EOF or a broken pipe instead, before)."""
    policy = Recorder(lambda head, body: Refuse(403, "not yours"))

    async def main() -> None:
        async for path, echo in serve(tmp_path, policy):
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(b"PUT /containers/x/archive?path=/tmp HTTP/1.1\r\nHost: d\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            answer = asyncio.ensure_future(reader.read(65536))
            for _ in range(200):        # keeps writing until the answer is there
                writer.write(b"8000\r\n" + b"t" * 0x8000 + b"\r\n")
                await writer.drain()
                if answer.done():
                    break
                await asyncio.sleep(0.01)
            data = await asyncio.wait_for(answer, 10)
            assert data.startswith(b"HTTP/1.1 403 Forbidden") and b'"not yours"' in data
            assert echo.requests == []
            writer.close()
    run(main())


def test_a_refused_head_request_keeps_the_connection(tmp_path: Path) -> None:
    """`docker cp` asks HEAD .../archive first, then PUTs on the same connection: an answer
    to HEAD with a body (or a closed connection after it) broke the PUT."""
    policy = Recorder(lambda head, body: Refuse(403, "not yours") if head.method == "HEAD" else Forward())

    async def main() -> None:
        async for path, echo in serve(tmp_path, policy):
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(b"HEAD /containers/x/archive?path=/tmp HTTP/1.1\r\nHost: d\r\n\r\n"
                         b"GET /containers/json HTTP/1.1\r\nHost: d\r\n\r\n")
            data = b""
            while not data.endswith(b"}"):
                data += await asyncio.wait_for(reader.read(65536), 10)
            first, second = data.split(b"HTTP/1.1 ")[1:]
            assert first.startswith(b"403 ") and first.endswith(b"\r\n\r\n")     # no body after the head
            assert second.startswith(b"200 ") and [r["target"] for r in echo.requests] == ["/containers/json"]
            writer.close()
    run(main())
