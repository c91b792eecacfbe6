"""The contract between the gateway's transport and the rules that judge requests.

The transport (this package) knows HTTP; a `Policy` knows Docker's rules.  The policy
is consulted once per request, before anything is forwarded, with the caller taken from
the socket (never from the request) and the request's head already parsed the way
dockerd routes it (`api_paths`).  It may ask for the body (bounded), and answer
`Forward` (optionally with a new body, or with a filter for a JSON response) or
`Refuse` (the gateway answers like dockerd answers errors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable, Protocol

#: The largest request body a policy may ask to read; a larger one is refused with 413.
MAX_JUDGED_BODY = 4 * 1024 * 1024


@dataclass(frozen=True)
class Peer:
    """The caller, from SO_PEERCRED at accept."""

    uid: int
    gid: int
    pid: int


@dataclass(frozen=True)
class RequestHead:
    """A request as dockerd will route it."""

    method: str              # "POST"
    target: str              # as sent, e.g. "/v1.41/containers/create?name=x"
    path: str                # percent-decoded, API version prefix removed: "/containers/create"
    query: str               # raw query string
    api_version: str | None  # "1.41", or None when the path had no /vX.Y prefix
    headers: tuple[tuple[str, str], ...]  # as sent, lower-cased names


@dataclass(frozen=True)
class Forward:
    """Send it on; `body` replaces the request body and `target` the request target when not None."""

    body: bytes | None = None
    #: Rewrites a (bounded, buffered) JSON response body, given the status.
    filter_response: Callable[[int, bytes], bytes] | None = None
    target: str | None = None
    #: Told the engine's status once it answered, or 0 when the request never reached it
    #: (engine down, caller gone first): a create's allocation is given back on failure.
    answered: Callable[[int], Awaitable[None]] | None = None


@dataclass(frozen=True)
class Refuse:
    """Answer the client ourselves, the way dockerd answers errors."""

    status: int
    message: str  # body {"message": message}, Content-Type application/json
    reason: str = ""   # for a refused create: the rule or cause it is counted under (the metrics)


Verdict = Forward | Refuse


class Policy(Protocol):
    """What the gateway asks about each request."""

    def wants_body(self, peer: Peer, head: RequestHead) -> bool:
        """Buffer this request's body (bounded, MAX_JUDGED_BODY; beyond: Refuse 413) and pass it to judge."""
        ...

    async def judge(self, peer: Peer, head: RequestHead, body: bytes | None) -> Verdict:
        """The verdict; may take long (waiting for a GPU): the gateway cancels it when the client hangs up."""
        ...


class AllowAll:
    """Forwards everything untouched: the transport alone, for tests and benchmarks."""

    def wants_body(self, peer: Peer, head: RequestHead) -> bool:
        return False

    async def judge(self, peer: Peer, head: RequestHead, body: bytes | None) -> Verdict:
        return Forward()


ALLOW_ALL: Policy = AllowAll()
