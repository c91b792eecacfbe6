"""Shared fixtures: the session's test box and per-test container cleanup.

Tests that need a real systemd and Docker engine are marked `@pytest.mark.box` and
take the `box` fixture.  Where the box cannot exist (not root, no dockerd), those
tests are skipped with the reason; in CI everything is there, so they run.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `pytest` (not `python -m pytest`) leaves the repo off sys.path
    sys.path.insert(0, str(REPO))

from tests.box import Box, ContainerTracker, missing_requirements  # noqa: E402

#: The session box's name; set DS01_TEST_BOX to run two checkouts' suites side by side.
SESSION_BOX = os.environ.get("DS01_TEST_BOX", "pytest")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip box tests up front, with the reason, where no box can be booted."""
    reason = missing_requirements()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if item.get_closest_marker("box"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def python_sigpipe() -> Iterator[None]:
    """The CLIs run in-process here set SIGPIPE to SIG_DFL (right for a command, `| head`);
    put back Python's SIG_IGN after each test, or a later test's server thread writing to a
    client that left would kill pytest itself."""
    yield
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)


@pytest.fixture(scope="session")
def box() -> Iterator[Box]:
    """One box for the whole session: booting is cheap (~1 s) but not free."""
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    the_box = Box.boot(SESSION_BOX)
    try:
        yield the_box
    finally:
        the_box.shutdown()


@pytest.fixture
def box_cleanup(box: Box) -> Iterator[ContainerTracker]:
    """Containers named through it (`box_cleanup("web")` returns "web", `.unique("web")`
    a fresh name) and any labelled ds01.test=1 are removed after the test, pass or fail."""
    tracker = ContainerTracker(box)
    try:
        yield tracker
    finally:
        tracker.cleanup()
