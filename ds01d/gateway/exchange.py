"""One caller's connection: its HTTP/1.1 request/response cycles, each judged by the
policy and forwarded to the engine over the connection's own engine connection.

A cycle reads the request head, asks the policy (reading the body first only when the
policy asks for it), then streams the request body up while it waits for the answer and
streams the answer down, with backpressure on both sides (bodies pass as they came:
`body_relay`).  Both h11
connections then start their next cycle (keep-alive), or the exchange ends.

An answer that leaves HTTP behind turns the connection raw: a 101 (attach and exec with
`Upgrade: tcp`, BuildKit's `/session` and `/grpc` with `Upgrade: h2c`, websockets), or a
response without length that ends with the connection (attach and exec without
`Upgrade`, where dockerd answers 200 with a raw-stream content type).  The head is
passed on as it came and `bridge` copies bytes both ways from there.

The caller is watched for a hang-up wherever it could otherwise be left waiting
unnoticed: while the policy judges (which may take minutes: a GPU wait), and while an
answer streams (events, logs -f, wait).  A hang-up cancels the judge and ends the
engine's connection, as a direct connection to dockerd would.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any, NoReturn

import h11

from ds01d.gateway.api_paths import BadTarget, parse_target
from ds01d.gateway.body_relay import relay_body, relayed_length
from ds01d.gateway.bridge import bridge
from ds01d.gateway.http_side import HttpSide, SideClosed, Stopped
from ds01d.gateway.policy_api import MAX_JUDGED_BODY, Forward, Peer, Policy, Refuse, RequestHead, Verdict
from ds01d.gateway.replies import engine_down, error_events, raw_head

#: Once a request's first byte arrived, its head must be complete within this (dockerd 23+
#: has the same ReadHeaderTimeout); between requests a connection may idle as long as it likes.
HEAD_TIMEOUT = 300.0
#: Seconds to connect to the engine's socket.
CONNECT_TIMEOUT = 10.0
#: After a refusal, what of the unread request body is read and dropped to keep the
#: connection (as Go's server does), and for how long; beyond, the connection is closed.
MAX_SKIPPED = 1024 * 1024
SKIP_TIMEOUT = 5.0
#: After refusing a request whose body still streams in, what is read and dropped (and for
#: how long) so that the client reads the answer before the connection closes.
MAX_LINGER = 64 * 1024 * 1024
#: The largest response a policy's filter is given; beyond, 502 (a filter is never bypassed).
MAX_FILTERED_BODY = 64 * 1024 * 1024
_NO_BODY_STATUS = (204, 304)


class ClientGone(Exception):
    """The caller hung up (or broke its request body) while the exchange waited on it."""


def request_head(request: h11.Request) -> RequestHead:
    """The policy's view of a request; raises BadTarget for a target dockerd would not route as sent."""
    target = request.target.decode("latin-1")
    parsed = parse_target(target)
    headers = tuple((name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers)
    return RequestHead(request.method.decode("ascii"), target, parsed.path, parsed.query,
                       parsed.api_version, headers)


def forwarded_headers(request: h11.Request, body: bytes | None) -> list[tuple[bytes, bytes]]:
    """The caller's headers as sent; with a body in hand, framed for that body (and no
    Expect: the caller already got its 100 Continue from us)."""
    items = request.headers.raw_items()
    if body is None:
        return items
    dropped = (b"content-length", b"transfer-encoding", b"expect")
    return [(n, v) for n, v in items if n.lower() not in dropped] + [(b"Content-Length", str(len(body)).encode())]


def close_delimited(method: bytes, response: h11.Response) -> bool:
    """A response whose body ends with the connection: the hijack without Upgrade."""
    if method == b"HEAD" or response.status_code in _NO_BODY_STATUS:
        return False
    names = {name for name, _ in response.headers}
    return b"content-length" not in names and b"transfer-encoding" not in names


class Exchange:
    """The cycles of one caller's connection; `run` returns when it is over, both ends closed."""

    def __init__(self, client: HttpSide, peer: Peer, policy: Policy, engine_path: str):
        self.client = client
        self.peer = peer
        self.policy = policy
        self.engine_path = engine_path
        self.engine: HttpSide | None = None

    async def run(self) -> None:
        try:
            while await self.cycle():
                self.client.conn.start_next_cycle()
                self._next_engine_cycle()
        except (SideClosed, ClientGone, ConnectionError):
            pass
        except Exception as exc:  # one broken connection must never take the gateway down
            print(f"ds01d gateway: connection of uid {self.peer.uid} (pid {self.peer.pid}) ended by "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        finally:
            self.client.close()
            if self.engine is not None:
                self.engine.close()

    def _next_engine_cycle(self) -> None:
        if self.engine is None:
            return
        conn = self.engine.conn
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            self.engine.close()
            self.engine = None

    # ---- one cycle ----------------------------------------------------------

    async def cycle(self) -> bool:
        """One request and its answer; True when the connection can carry another."""
        request = await self.read_request()
        if request is None:
            return False
        self.answer_has_body = request.method != b"HEAD"
        try:
            head = request_head(request)
        except BadTarget as exc:
            return await self.refuse(Refuse(400, str(exc)))
        body = None
        if self.policy.wants_body(self.peer, head):
            body = await self.read_body()
            if body is None:
                return await self.refuse(Refuse(413, f"the request body is over {MAX_JUDGED_BODY // 2**20} MiB, "
                                                     "more than the gateway reads to judge it"))
        verdict = await self.judged(head, body)
        if isinstance(verdict, Refuse):
            return await self.refuse(verdict)
        return await self.forward(request, verdict, body)

    async def read_request(self) -> h11.Request | None:
        """The next request, or None when the caller closed or sent garbage (answered 400)."""
        try:
            if self.client.needs_data() and not self.client.buffered():
                await self.client.read_some()  # idle between requests: no limit, as dockerd
            event = await asyncio.wait_for(self.client.next_event(), HEAD_TIMEOUT)
        except asyncio.TimeoutError:
            return None
        except h11.RemoteProtocolError as exc:
            await self.reply(exc.error_status_hint, f"malformed HTTP request: {exc}", close=True)
            await self.client.linger(MAX_LINGER, SKIP_TIMEOUT)   # so that a client still writing reads it
            return None
        return event if isinstance(event, h11.Request) else None

    async def read_body(self) -> bytes | None:
        """The whole request body for the policy, or None when it is over MAX_JUDGED_BODY."""
        if self.client.conn.they_are_waiting_for_100_continue:
            await self.client.send(h11.InformationalResponse(status_code=100, headers=[]))
        parts: list[bytes] = []
        size = 0
        while True:
            event = await self.client_event()
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_JUDGED_BODY:
                    return None
                parts.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(parts)
            else:
                raise ClientGone("the caller closed the connection mid-body")

    async def client_event(self) -> Any:
        """The caller's next event; its malformed body is answered 400 and ends the exchange."""
        try:
            return await self.client.next_event()
        except h11.RemoteProtocolError as exc:
            await self.malformed_body(exc)

    async def malformed_body(self, exc: h11.RemoteProtocolError) -> NoReturn:
        """Answer a broken request body 400 (when nothing of an answer went out yet); raises ClientGone."""
        if self.client.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            await self.reply(400, f"malformed HTTP request body: {exc}", close=True)
        raise ClientGone(str(exc)) from None

    async def judged(self, head: RequestHead, body: bytes | None) -> Verdict:
        """The policy's verdict; raises ClientGone (the judge cancelled) if the caller hangs up first."""
        judge = asyncio.ensure_future(self.policy.judge(self.peer, head, body))
        gone = asyncio.ensure_future(self.client.wait_gone())
        try:
            await asyncio.wait({judge, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await _cancelled(gone)
            if not judge.done():
                await _cancelled(judge)
                raise ClientGone("the caller hung up while its request was judged")
        try:
            return judge.result()
        except Exception as exc:  # fail closed, in one sentence
            print(f"ds01d gateway: the policy failed on {head.method} {head.path}: {type(exc).__name__}: {exc}",
                  file=sys.stderr, flush=True)
            return Refuse(500, f"the Docker gateway could not judge this request ({type(exc).__name__}); "
                               "tell an admin")

    # ---- answering ourselves -----------------------------------------------

    async def refuse(self, verdict: Refuse) -> bool:
        """Answer with an error; keep the connection when the request's body could be skipped.
        A body still streaming in (`docker cp` into a container) is answered first, then read
        and dropped (bounded); past the bound our side is half-closed and the rest dropped a
        while longer, as Go's server does: a client busy writing would otherwise get a broken
        pipe instead of the sentence."""
        conn = self.client.conn
        if conn.their_state is h11.SEND_BODY and not conn.they_are_waiting_for_100_continue:
            await self.reply(verdict.status, verdict.message)
            if await self.skip_body():
                return conn.our_state is h11.DONE
            await self.client.linger(MAX_LINGER, SKIP_TIMEOUT)
            return False
        complete = await self.skip_body()
        await self.reply(verdict.status, verdict.message, close=not complete)
        return complete and self.client.conn.our_state is h11.DONE

    async def skip_body(self) -> bool:
        """Read and drop the rest of the request body (bounded); True when it ended."""
        conn, skipped = self.client.conn, 0
        if conn.they_are_waiting_for_100_continue or conn.their_state is h11.ERROR:
            return False
        try:
            while conn.their_state is h11.SEND_BODY and skipped <= MAX_SKIPPED:
                event = await asyncio.wait_for(self.client.next_event(), SKIP_TIMEOUT)
                skipped += len(event.data) if isinstance(event, h11.Data) else 0
        except (asyncio.TimeoutError, h11.RemoteProtocolError):
            return False
        return conn.their_state is h11.DONE

    answer_has_body = True

    async def reply(self, status: int, message: str, close: bool = False) -> None:
        """An error answer as dockerd shapes them (when nothing of an answer was sent yet)."""
        if self.client.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        response, data = error_events(status, message, close)
        with contextlib.suppress(h11.LocalProtocolError):
            await self.client.send(response)
            if self.answer_has_body:    # an answer to HEAD has its length but not its body
                await self.client.send(data)
            await self.client.send(h11.EndOfMessage())

    # ---- forwarding --------------------------------------------------------

    async def forward(self, request: h11.Request, verdict: Forward, body: bytes | None) -> bool:
        self.status = 0
        try:
            return await self._forward(request, verdict, body)
        finally:
            if verdict.answered is not None:
                _background(verdict.answered(self.status))

    async def _forward(self, request: h11.Request, verdict: Forward, body: bytes | None) -> bool:
        engine = await self.engine_side()
        if engine is None:
            return await self.refuse(Refuse(503, self._connect_error))
        new_body = verdict.body if verdict.body is not None else body
        target = verdict.target.encode("ascii") if verdict.target is not None else request.target
        await engine.send(h11.Request(method=request.method, target=target,
                                      headers=forwarded_headers(request, new_body)))
        body_task = asyncio.ensure_future(self.send_body(engine, new_body))
        guard = asyncio.ensure_future(self.guard_client(body_task))
        try:
            return await self.relay(request, verdict, engine, body_task, guard)
        finally:
            await _cancelled(guard)
            await _cancelled(body_task)

    status = 0  # the engine's answer to the request being forwarded (0: none yet)

    _connect_error = ""

    async def engine_side(self) -> HttpSide | None:
        """This connection's engine connection, (re)opened when needed; None when the engine is down."""
        if self.engine is not None and not self.engine.gone():
            return self.engine
        if self.engine is not None:
            self.engine.close()
        try:
            self.engine = await asyncio.wait_for(HttpSide.connect(self.engine_path, h11.CLIENT), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "no answer in time"
            self._connect_error = engine_down(f"cannot connect to {self.engine_path}: {why}")
            self.engine = None
            return None
        return self.engine

    async def send_body(self, engine: HttpSide, body: bytes | None) -> None:
        """The request body to the engine: the one in hand, or streamed from the caller."""
        if body is not None:
            if body:
                await engine.send(h11.Data(data=body))
            await engine.send(h11.EndOfMessage())
            return
        if await self.relay_request_body(engine):
            return
        while True:
            event = await self.client_event()
            if isinstance(event, h11.Data):
                await engine.send(h11.Data(data=self.client.data_after(event.data)))
            elif isinstance(event, h11.EndOfMessage):
                await engine.send(h11.EndOfMessage(headers=event.headers))
                return
            else:
                raise ClientGone("the caller closed the connection mid-body")

    async def relay_request_body(self, engine: HttpSide) -> bool:
        """The caller's body to the engine as it came (`body_relay`); False when h11 must carry it."""
        length = relayed_length(self.client, engine)
        if not length:
            return False
        try:
            await relay_body(self.client, engine, length)
        except h11.RemoteProtocolError as exc:
            await self.malformed_body(exc)
        return True

    async def guard_client(self, body_task: asyncio.Future[None]) -> None:
        """Returns when the caller can no longer be served: its body broke off, or, once
        the body is over, it hung up."""
        await asyncio.wait({body_task})
        if not body_task.cancelled() and isinstance(body_task.exception(), ClientGone):
            return
        await self.client.wait_gone()  # also when the engine stopped taking the body: its answer may follow

    async def engine_event(self, engine: HttpSide, guard: asyncio.Future[None]) -> Any:
        """The engine's next event, unless the caller goes first (then ClientGone)."""
        if not engine.needs_data():
            return await engine.next_event()
        get = asyncio.ensure_future(engine.next_event())
        await asyncio.wait({get, guard}, return_when=asyncio.FIRST_COMPLETED)
        if get.done():
            return get.result()
        await _cancelled(get)
        raise ClientGone("the caller hung up while the engine was answering")

    async def relay(self, request: h11.Request, verdict: Forward, engine: HttpSide,
                    body_task: asyncio.Future[None], guard: asyncio.Future[None]) -> bool:
        """The engine's answer to the caller; True when both connections can go on."""
        if request.headers and any(name == b"upgrade" for name, _ in request.headers):
            await asyncio.wait({body_task})  # h11 switches protocols only after a complete request
        try:
            event = await self.engine_event(engine, guard)
            while isinstance(event, h11.InformationalResponse) and event.status_code != 101:
                await self.client.send(event)  # 100 Continue, 102 Processing
                event = await self.engine_event(engine, guard)
        except h11.RemoteProtocolError as exc:
            await self.reply(502, engine_down(f"it sent a malformed answer: {exc}"), close=True)
            return False
        except ClientGone:
            if body_task.done() and not body_task.cancelled() and body_task.exception() is not None:
                raise body_task.exception() from None  # type: ignore[misc]
            raise
        if isinstance(event, h11.InformationalResponse):
            self.status = event.status_code
            await self.client.send(event)
            await self.go_raw(body_task, guard)
            return False
        if not isinstance(event, h11.Response):
            await self.reply(502, engine_down("it closed the connection without answering"), close=True)
            return False
        self.status = event.status_code
        if close_delimited(request.method, event):
            await self.client.write(raw_head(event))
            await self.go_raw(body_task, guard)
            return False
        if verdict.filter_response is not None:
            await self.relay_filtered(event, verdict.filter_response, engine, guard)
        else:
            await self.relay_streamed(event, engine, guard)
        return await self.finished(body_task)

    async def go_raw(self, body_task: asyncio.Future[None], guard: asyncio.Future[None]) -> None:
        """From here on, bytes both ways: what either side sent past its HTTP message first
        (the guard's read-ahead included: it went into h11's buffer)."""
        assert self.engine is not None
        await asyncio.wait({body_task})
        await _cancelled(guard)
        await bridge(self.client, self.engine, self.client.conn.trailing_data[0], self.engine.conn.trailing_data[0])

    async def relay_streamed(self, response: h11.Response, engine: HttpSide, guard: asyncio.Future[None]) -> None:
        await self.client.send(h11.Response(status_code=response.status_code, headers=response.headers.raw_items(),
                                             reason=response.reason))
        if await self.relay_answer_body(engine, guard):
            return
        while True:
            event = await self.engine_event(engine, guard)
            if isinstance(event, h11.Data):
                await self.client.send(h11.Data(data=engine.data_after(event.data)))
            elif isinstance(event, h11.EndOfMessage):
                await self.client.send(h11.EndOfMessage(headers=event.headers))
                return
            else:  # the engine broke off mid-answer: so does the caller's connection
                raise SideClosed("the engine closed the connection mid-answer")

    async def relay_answer_body(self, engine: HttpSide, guard: asyncio.Future[None]) -> bool:
        """The engine's answer body to the caller as it came (`body_relay`), unless the caller
        hangs up while the engine is silent; False when h11 must carry it."""
        length = relayed_length(engine, self.client)
        if not length:
            return False
        try:
            await relay_body(engine, self.client, length, stop=guard)
        except Stopped:
            raise ClientGone("the caller hung up while the engine was answering") from None
        return True

    async def relay_filtered(self, response: h11.Response, rewrite: Any, engine: HttpSide,
                             guard: asyncio.Future[None]) -> None:
        """Buffer the answer (bounded), let the policy rewrite it, send it with its new length."""
        parts: list[bytes] = []
        size = 0
        while True:
            event = await self.engine_event(engine, guard)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_FILTERED_BODY:
                    await self.reply(502, engine_down("its answer is too large for the gateway to check"), close=True)
                    raise SideClosed("answer too large to filter")
                parts.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise SideClosed("the engine closed the connection mid-answer")
        # In a thread: a large listing must not hold up every other caller's connection.
        body = await asyncio.to_thread(rewrite, response.status_code, b"".join(parts))
        dropped = (b"content-length", b"transfer-encoding")
        headers = [(n, v) for n, v in response.headers.raw_items() if n.lower() not in dropped]
        headers.append((b"Content-Length", str(len(body)).encode()))
        await self.client.send(h11.Response(status_code=response.status_code, headers=headers, reason=response.reason))
        await self.client.send(h11.Data(data=body))
        await self.client.send(h11.EndOfMessage())

    async def finished(self, body_task: asyncio.Future[None]) -> bool:
        """After a complete answer: keep-alive only when the request also went up complete."""
        if not body_task.done():
            return False  # the engine answered before reading the whole body: this connection is spent
        if body_task.cancelled() or body_task.exception() is not None:
            return False
        conn = self.client.conn
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE


_BACKGROUND: set[asyncio.Future[Any]] = set()


def _background(awaitable: Any) -> None:
    """Run a policy's after-answer hook on its own: the caller's next request need not wait,
    and a hang-up must not cancel it (an allocation must still be given back)."""
    task = asyncio.ensure_future(awaitable)
    _BACKGROUND.add(task)
    task.add_done_callback(_hook_done)


def _hook_done(task: asyncio.Future[Any]) -> None:
    _BACKGROUND.discard(task)
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        print(f"ds01d gateway: an after-answer hook failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


async def _cancelled(task: asyncio.Future[Any]) -> None:
    """Cancel a task and wait for it to end, whatever it ended with."""
    if not task.done():
        task.cancel()
    with contextlib.suppress(BaseException):
        await task
