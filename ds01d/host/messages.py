"""Telling people: a message on a user's terminals, and the admin's notify command.

Both are best effort and never block the main loop: a user with no session simply
reads the journal or `ds01-gpu-status` later, and a slow notify command runs on a
worker thread.
"""

from __future__ import annotations

import os
import subprocess
from typing import Mapping, Sequence

import psutil


def tell_user(user: str, text: str) -> int:
    """Write `text` to every terminal `user` is logged in on; the number reached."""
    reached = 0
    for session in psutil.users():
        if session.name != user or not session.terminal:
            continue
        path = os.path.join("/dev", session.terminal)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            os.write(fd, f"\r\n\a*** ds01d: {text} ***\r\n".encode())
            reached += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return reached


def run_notify_command(argv: Sequence[str], fields: Mapping[str, str], timeout: float = 30) -> str | None:
    """Run the admin's notify command with DS01_* fields in its environment; its error, if any."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **fields}
    try:
        done = subprocess.run(list(argv), env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"notify command {argv[0]}: {exc}"
    if done.returncode != 0:
        return f"notify command {argv[0]} exited {done.returncode}: {done.stderr.strip()[:200]}"
    return None
