"""The gateway's questions to ds01d, over ds01d's own socket as root (it vouches for the
uid it read from the kernel): admit a caller's create, allocate devices for it, give them
back when the create failed.

Fail closed: while ds01d restarts its socket refuses connections for a moment, so the
question is asked again until FAIL_CLOSED_WAIT has passed; then `DaemonDown`, which the
policy turns into a refusal that says so.  A create is never let through unjudged.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from ds01d.gateway.unix_http import Answer, Unreachable, call

#: How long a create waits for ds01d to answer at all (a restart takes about a second).
FAIL_CLOSED_WAIT = 5.0
RETRY_EVERY = 0.2


class DaemonDown(Exception):
    """ds01d did not answer within FAIL_CLOSED_WAIT."""


class DaemonClient:
    def __init__(self, socket_path: str):
        self.socket_path = socket_path

    async def ask(self, action: str, body: dict[str, Any], timeout: float = 30.0,
                  orphan: Any = None) -> Answer:
        """POST /v1/<action>, asked again while ds01d is not there, until FAIL_CLOSED_WAIT."""
        deadline = time.monotonic() + FAIL_CLOSED_WAIT
        while True:
            try:
                return await call(self.socket_path, "POST", f"/v1/{action}", body, timeout, orphan)
            except Unreachable as exc:
                if time.monotonic() + RETRY_EVERY > deadline:
                    raise DaemonDown(str(exc)) from None
            await asyncio.sleep(RETRY_EVERY)   # a poll with a deadline: ds01d says nothing when it is back

    async def allocate(self, user: str, count: int, devices: tuple[str, ...], wait_s: float) -> Answer:
        """Devices for `user` (waiting in ds01d's queue); a grant that arrives as the create's
        caller hangs up is given back at once."""
        body: dict[str, Any] = {"user": user, "count": count}
        if devices:
            body["devices"] = list(devices)
        return await self.ask("allocate", body, timeout=wait_s + 60, orphan=self._give_back_later)

    async def free(self, allocation_id: int) -> None:
        try:
            answer = await self.ask("free", {"id": allocation_id})
        except DaemonDown as exc:
            print(f"ds01d gateway: allocation {allocation_id} could not be given back ({exc}); "
                  "it expires by itself", file=sys.stderr, flush=True)
            return
        if answer.status != 200:
            print(f"ds01d gateway: giving back allocation {allocation_id}: {answer.status} {answer.doc}",
                  file=sys.stderr, flush=True)

    def count_refusal(self, reason: str) -> None:
        """Tell ds01d (for its metrics) that a create was refused, without waiting for it: a
        refusal is answered at once whether ds01d is there or not.  Counts gather here and go
        in one report at a time, however fast refusals come (a flood of them must not fill
        ds01d's connections, which other users' admissions need); a lost count is no loss."""
        _PENDING[reason] = _PENDING.get(reason, 0) + 1
        if _REPORTING:
            return
        _REPORTING.add(self.socket_path)
        task = asyncio.ensure_future(_report(self.socket_path))
        _KEPT.add(task)
        task.add_done_callback(_KEPT.discard)

    def _give_back_later(self, answer: Answer) -> None:
        if answer.status == 200 and isinstance(answer.doc, dict) and isinstance(answer.doc.get("id"), int) \
                and not answer.doc.get("reused"):
            task = asyncio.ensure_future(self.free(answer.doc["id"]))
            _KEPT.add(task)
            task.add_done_callback(_KEPT.discard)


_KEPT: set[asyncio.Future[Any]] = set()
_PENDING: dict[str, int] = {}          # refusals not yet reported, by reason
_REPORTING: set[str] = set()           # a report is under way (at most one)


async def _report(socket_path: str) -> None:
    try:
        while _PENDING:
            reason = next(iter(_PENDING))
            count = _PENDING.pop(reason)
            try:
                await call(socket_path, "POST", "/v1/refused", {"reason": reason, "count": count}, 5.0)
            except Unreachable:
                pass
    finally:
        _REPORTING.clear()
