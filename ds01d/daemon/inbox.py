"""The main loop's inbox: everything other threads hand to the one writer, Docker first.

Docker's events say what exists and who owns it; a request on the status socket can be
sent by any local user, as fast as they like.  So items are taken by priority, then in
arrival order: a flood of requests delays other requests, never the handling of events.
"""

from __future__ import annotations

import itertools
import queue
from typing import Callable

#: Lower is sooner.  Anything not named here (socket requests among them) comes last.
EVENTS, RESULTS, REQUESTS = 0, 1, 2


class Inbox:
    """A thread-safe queue with `put(item)` and `get(timeout)`, ordered by `rank(item)`."""

    def __init__(self, rank: Callable[[object], int]):
        self._queue: queue.PriorityQueue[tuple[int, int, object]] = queue.PriorityQueue()
        self._arrivals = itertools.count()
        self._rank = rank

    def put(self, item: object) -> None:
        self._queue.put((self._rank(item), next(self._arrivals), item))

    def get(self, timeout: float) -> object:
        """The most urgent item; raises queue.Empty when none arrives within `timeout`."""
        return self._queue.get(timeout=timeout)[2]
