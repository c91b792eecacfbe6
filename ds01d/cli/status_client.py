"""Talking to ds01d's status socket from the command line (HTTP over a Unix socket)."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

from ds01d.rules.safe_text import printable_tree


class DaemonDown(Exception):
    """Nothing answers on the socket: ds01d is not running (or the path is wrong)."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("ds01d", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


def call(socket_path: str, method: str, path: str, body: dict[str, Any] | None = None,
         timeout: float = 15.0) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of one request; DaemonDown when nobody answers.

    Every string of the answer is made printable here, the one door through which the
    daemon's text reaches a terminal: names and labels are other users' words."""
    conn = _UnixConnection(socket_path, timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, printable_tree(json.loads(response.read() or b"{}"))
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise DaemonDown(f"ds01d is not running (nothing answers on {socket_path})") from exc
    except PermissionError as exc:
        raise DaemonDown(f"cannot open {socket_path}: permission denied") from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise DaemonDown(f"ds01d did not answer properly on {socket_path}: {exc}") from exc
    finally:
        conn.close()
