"""Where dockerd itself listens: behind the gateway, its own root-only socket.

Kept apart from `docker_engine` (which loads docker-py) so the CLI and the gateway can
name the socket without loading it.
"""

from __future__ import annotations

import os
import socket

#: dockerd's own socket once the gateway stands on the standard one (`ds01d gateway enable`):
#: root-only, and the one ds01d itself talks to then, so that it never waits on the gateway.
ENGINE_SOCKET = "/run/ds01-engine/docker.sock"
#: The socket Docker's clients use; the gateway's once it is enabled.
STANDARD_SOCKET = "/run/docker.sock"


def engine_url(environ: dict[str, str] | None = None, engine_socket: str = ENGINE_SOCKET) -> str | None:
    """dockerd's own socket where the gateway is in front of it (it answers), else None: the
    environment's DOCKER_HOST or the standard socket.  An explicit DOCKER_HOST always wins."""
    env = os.environ if environ is None else environ
    if env.get("DOCKER_HOST"):
        return None
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(engine_socket)
    except OSError:
        return None   # no gateway, or a socket file left behind by a stopped docker.socket
    finally:
        probe.close()
    return f"unix://{engine_socket}"
