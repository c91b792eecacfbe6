"""The listening socket: systemd's (socket activation), or one bound here for tests and
development.

From systemd the socket outlives the gateway: while the service restarts, callers'
connections wait in its backlog instead of being refused, and the new process takes
them from there.
"""

from __future__ import annotations

import os
import socket
import stat

from ds01d.host.socket_activation import passed_socket


class ListenerError(Exception):
    """No socket to listen on; the message says why in one sentence."""


def activated_socket(environ: dict[str, str] | None = None) -> socket.socket | None:
    """systemd's first passed socket, or None when this process was not activated."""
    sock = passed_socket(environ)
    if sock is not None and (sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM):
        raise ListenerError("the socket systemd passed is not a Unix stream socket; check ds01-gateway.socket")
    return sock


def bound_socket(path: str, mode: int = 0o660) -> socket.socket:
    """A Unix socket bound at `path` (a stale socket file there is replaced, anything else is not)."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, mode)
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        raise ListenerError(f"cannot listen on {path}: {exc.strerror}") from None
    return sock


def listening_socket(fallback_path: str | None) -> socket.socket:
    """systemd's socket when activated, else one bound at `fallback_path`."""
    sock = activated_socket()
    if sock is not None:
        return sock
    if fallback_path:
        return bound_socket(fallback_path)
    raise ListenerError("no socket from systemd (start ds01-gateway.socket) and no --listen path given")
