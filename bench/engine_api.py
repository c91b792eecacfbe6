"""The Docker Engine API over a Unix socket with http.client, for the benchmarks (from the
host through the box's root, or inside the box): kept free of test imports, so a script
run inside the box can use it."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any


class UnixHTTP(http.client.HTTPConnection):
    """http.client on a Unix socket."""

    def __init__(self, path: str):
        super().__init__("docker", timeout=60)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(60)
        self.sock.connect(self.path)


def call(conn: UnixHTTP, method: str, target: str, body: dict | None = None) -> Any:
    """One request; its decoded JSON answer, or RuntimeError with the status for an error."""
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, target, body=data, headers={"Content-Type": "application/json"} if data else {})
    response = conn.getresponse()
    payload = response.read()
    if response.status >= 300:
        raise RuntimeError(f"{method} {target}: {response.status} {payload[:300]!r}")
    return json.loads(payload) if payload else None
