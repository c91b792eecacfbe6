"""The test box: real systemd as PID 1 and a real Docker engine in private namespaces.

Tests use it through the `box` fixture (tests/conftest.py); people through
`python -m tests.box up|down|exec|status NAME`.
"""

from .box import (
    IMAGE,
    TEST_LABEL,
    Box,
    BoxError,
    CommandError,
    ContainerTracker,
    missing_requirements,
    wait_until,
)

__all__ = [
    "IMAGE",
    "TEST_LABEL",
    "Box",
    "BoxError",
    "CommandError",
    "ContainerTracker",
    "missing_requirements",
    "wait_until",
]
