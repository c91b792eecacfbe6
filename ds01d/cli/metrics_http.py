"""`ds01d metrics-http`: ds01d's metrics over HTTP, for a Prometheus that scrapes it directly.

Run by ds01-metrics.service, socket-activated on the address of ds01-metrics.socket (the
admin sets it: `systemctl edit ds01-metrics.socket`), as a dynamic unprivileged user with
no network of its own: the root daemon opens no listener.  It serves `GET /metrics` from
the file ds01d rewrites every sampling interval (`daemon.metrics_file`), and nothing else.
"""

from __future__ import annotations

import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ds01d.config import ConfigError, load_config
from ds01d.host.socket_activation import passed_socket

MAX_BYTES = 64 << 20       # a metrics file larger than this is not one ds01d wrote
#: The file is Prometheus's classic text format (what prometheus_client's generate_latest writes).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Handler(BaseHTTPRequestHandler):
    server_version = "ds01d-metrics"
    timeout = 10               # a client that sends nothing is dropped, not waited on
    path_to_serve = ""

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        if self.path.split("?", 1)[0] != "/metrics":
            return self._say(404, "only /metrics is served here", body)
        try:
            with open(self.path_to_serve, "rb") as f:
                data = f.read(MAX_BYTES + 1)
        except FileNotFoundError:
            return self._say(503, f"no metrics at {self.path_to_serve}: ds01d is not running", body)
        except OSError as exc:
            return self._say(503, f"cannot read {self.path_to_serve}: {exc.strerror} (with show_other_users: false "
                                  "it is for the prometheus group: give this unit SupplementaryGroups=prometheus)",
                             body)
        if len(data) > MAX_BYTES:
            return self._say(503, f"{self.path_to_serve} is larger than {MAX_BYTES} bytes", body)
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _say(self, status: int, message: str, body: bool) -> None:
        data = (message + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not news; errors reach the journal through stderr."""


def serve(config_path: str, sock: socket.socket | None = None) -> int:
    try:
        path = load_config(config_path).daemon.metrics_file
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    if path is None:
        print(f"ds01d metrics-http: daemon.metrics_file is null in {config_path}: there are no metrics to serve",
              file=sys.stderr)
        return 1
    sock = sock or passed_socket()
    if sock is None:
        print("ds01d metrics-http: no socket from systemd; start ds01-metrics.socket", file=sys.stderr)
        return 1
    handler = type("Handler", (_Handler,), {"path_to_serve": path})
    server = ThreadingHTTPServer(sock.getsockname(), handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    server.daemon_threads = True
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0
