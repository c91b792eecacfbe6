"""The socket systemd passes to a socket-activated service (sd_listen_fds(3), fd 3 on)."""

from __future__ import annotations

import os
import socket

SD_LISTEN_FDS_START = 3


def passed_socket(environ: dict[str, str] | None = None) -> socket.socket | None:
    """systemd's first passed socket, or None when this process was not activated.  The
    LISTEN_* variables are removed so that no child takes the socket for its own."""
    env = os.environ if environ is None else environ
    pid, fds = env.get("LISTEN_PID", ""), env.get("LISTEN_FDS", "")
    if not (pid.isdigit() and int(pid) == os.getpid() and fds.isdigit() and int(fds) >= 1):
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    return socket.socket(fileno=SD_LISTEN_FDS_START)
