"""The status socket: HTTP/JSON on a Unix socket under /run/ds01, for every local user.

Who is asking comes from the socket's peer credentials (SO_PEERCRED), never from
the request, so `ds01-gpu-status` needs no docker group and cannot be lied to.
Reads are served from the last `StatusView` the main loop published; admin
actions are handed to the main loop (the only writer) and answered when it has
carried them out.  `curl --unix-socket /run/ds01/ds01d.sock http://x/v1/status`
works too.
"""

from __future__ import annotations

import concurrent.futures
import grp
import json
import os
import pwd
import socket
import socketserver
import struct
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable
from urllib.parse import parse_qs, urlparse

from ds01d.daemon.status_model import Caller, StatusView, build, build_admin

ADMIN_ACTIONS = ("release", "extend", "allocate")


@dataclass
class AdminRequest:
    """An action asked through the socket, to be carried out by the main loop."""

    action: str
    args: dict[str, Any]
    caller: Caller
    reply: concurrent.futures.Future


class StatusApp:
    """What the server needs from the daemon: the published view, and a way to submit actions."""

    def __init__(self, submit: Callable[[AdminRequest], None], admin_group: str | None):
        self.view = StatusView(now=0.0)
        self.submit = submit
        self.admin_group = admin_group

    def caller(self, uid: int) -> Caller:
        try:
            entry = pwd.getpwuid(uid)
            name, gid = entry.pw_name, entry.pw_gid
        except KeyError:
            name, gid = str(uid), -1
        return Caller(name, uid, uid == 0 or self._in_admin_group(name, gid))

    def _in_admin_group(self, user: str, gid: int) -> bool:
        if not self.admin_group:
            return False
        try:
            group = grp.getgrnam(self.admin_group)
        except KeyError:
            return False
        return user in group.gr_mem or gid == group.gr_gid


class _Handler(BaseHTTPRequestHandler):
    server: "StatusServer"
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # requests are not decisions: keep the journal clean
        pass

    def _caller(self) -> Caller:
        creds = self.request.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        return self.server.app.caller(uid)

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = (json.dumps(body, indent=1) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        caller = self._caller()
        view = self.server.app.view
        if url.path == "/v1/status":
            mine = parse_qs(url.query).get("mine", ["0"])[0] in ("1", "true")
            self._send(200, build(view, caller, mine))
        elif url.path == "/v1/admin/status":
            if not caller.admin:
                self._send(403, {"error": f"{caller.user} may not see the admin status; it is for root and "
                                          f"members of {self.server.app.admin_group or 'no group'}"})
            else:
                self._send(200, build_admin(view, caller))
        else:
            self._send(404, {"error": f"no such endpoint {url.path}; try /v1/status"})

    def do_POST(self) -> None:
        action = urlparse(self.path).path.removeprefix("/v1/")
        if action not in ADMIN_ACTIONS:
            self._send(404, {"error": f"no such action {action!r}"})
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
            args = json.loads(self.rfile.read(min(length, 65536)) or b"{}")
            if not isinstance(args, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as exc:
            self._send(400, {"error": f"bad request: {exc}"})
            return
        reply: concurrent.futures.Future = concurrent.futures.Future()
        self.server.app.submit(AdminRequest(action, args, self._caller(), reply))
        waits = args.get("wait_s") if action == "allocate" else 0
        try:
            code, body = reply.result(timeout=10 + (waits if isinstance(waits, int) and waits > 0 else 0))
        except concurrent.futures.TimeoutError:
            code, body = 503, {"error": "ds01d is busy; try again"}
        self._send(code, body)


class StatusServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, app: StatusApp):
        self.app = app
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        super().__init__(path, _Handler)
        os.chmod(path, 0o666)  # every local user may ask; what they may do is decided per request

    def start(self) -> None:
        threading.Thread(target=self.serve_forever, name="status-socket", daemon=True).start()
