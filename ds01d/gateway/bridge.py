"""Raw bytes both ways, once a connection has been hijacked (attach, exec start, BuildKit
sessions, any 101 or close-delimited response).

Each direction is copied through one reused buffer with backpressure (`pump`: a
direction reads again only once the other side took what it read).  End of input on one side is passed
on as a half-close (`shutdown(SHUT_WR)`), not a close: `echo hi | docker exec -i c cat`
sends stdin EOF that way and still reads the output.  A side that is gone for good (both
its directions shut) ends the bridge once what it sent has been passed on: nothing more
can flow, and a silent container must not keep a dead client's connection open.
"""

from __future__ import annotations

import asyncio
import contextlib

from ds01d.gateway.http_side import HANGUP_POLL, HttpSide, SideClosed, relay_buffer
from ds01d.gateway.pump import Pump, UntilEof


async def pipe(src: HttpSide, dst: HttpSide, pending: bytes) -> None:
    """Copy src to dst until src's EOF, then half-close dst."""
    if pending:
        await dst.send_all(pending)
    with relay_buffer() as buf:
        await Pump(src, dst, UntilEof(), buf).run()
    dst.shutdown_write()


async def bridge(client: HttpSide, engine: HttpSide, from_client: bytes, from_engine: bytes) -> None:
    """Copy until both directions ended or one side is gone; the caller closes both."""
    up = asyncio.ensure_future(pipe(client, engine, from_client))
    down = asyncio.ensure_future(pipe(engine, client, from_engine))
    running = {up, down}
    try:
        while running:
            done, running = await asyncio.wait(running, timeout=HANGUP_POLL if len(running) == 1 else None,
                                               return_when=asyncio.FIRST_COMPLETED)
            if any(task.exception() for task in done):
                return  # a write failed: that side closed
            if (client.eof and client.gone()) or (engine.eof and engine.gone()):
                return
    finally:
        for task in (up, down):
            task.cancel()
        for task in (up, down):
            with contextlib.suppress(asyncio.CancelledError, SideClosed, OSError):
                await task
