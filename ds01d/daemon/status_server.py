"""The status socket: HTTP/JSON on a Unix socket under /run/ds01, for every local user.

Who is asking comes from the socket's peer credentials (SO_PEERCRED), never from
the request, so `ds01-gpu-status` needs no docker group and cannot be lied to.
Reads are served from the last `StatusView` the main loop published; admin
actions are handed to the main loop (the only writer) and answered when it has
carried them out.  `curl --unix-socket /run/ds01/ds01d.sock http://x/v1/status`
works too.

Every local user can connect, so the server is built to be leaned on: connections are
capped in total and per user (a 503 beyond), each has a read timeout, a body needs a
`Content-Length` and is bounded, arguments are checked here (`request_args`) before the
main loop sees them, and a caller who hangs up while waiting takes the request with them.
"""

from __future__ import annotations

import concurrent.futures
import errno
import json
import os
import select
import socket
import socketserver
import struct
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable
from urllib.parse import parse_qs, urlparse

from ds01d.daemon.request_args import ACTIONS, ActionArgs, BadRequest, parse_args
from ds01d.daemon.status_model import Caller, StatusView, build, build_admin, reader
from ds01d.host.unix_groups import is_admin
from ds01d.rules.privacy import NOBODY_HIDDEN, Redactor

ADMIN_ACTIONS = ACTIONS
MAX_BODY = 16 * 1024              # the largest action body is well under 1 KiB
READ_TIMEOUT = 10.0               # seconds a client may take for each read of its request
MAX_CONNECTIONS = 128             # open at once, all users together
MAX_CONNECTIONS_PER_UID = 16      # open at once by one user (root is not capped)
CLIENT_POLL = 0.25                # how often a waiting request checks that its client is still there
#: How long a handler waits for the main loop's answer at most.  The loop answers every
#: request (a waiting allocation at its own deadline); this only guards against a loop that
#: died, and then the watchdog restarts ds01d anyway.
LONGEST_ANSWER = 25 * 3600.0
Answer = tuple[int, dict[str, Any]]


@dataclass
class AdminRequest:
    """An action asked through the socket, its arguments checked, for the main loop to carry out."""

    action: str
    args: ActionArgs
    caller: Caller
    reply: concurrent.futures.Future


@dataclass(frozen=True)
class AbandonedGrant:
    """An allocation was granted to a client that left before reading it: give the devices back."""

    allocation_id: int
    user: str


def deliver(reply: concurrent.futures.Future, answer: Answer) -> bool:
    """Answer a request; False when its client already left (the request was cancelled)."""
    try:
        reply.set_result(answer)
    except concurrent.futures.InvalidStateError:
        return False
    return True


class StatusApp:
    """What the server needs from the daemon: the published view, and a way to submit actions."""

    def __init__(self, submit: Callable[[object], None], admin_group: str | None,
                 report: Callable[[str], None] = lambda message: None):
        self.view = StatusView(now=0.0)
        self.submit = submit
        self.admin_group = admin_group
        self.report = report    # a request that failed for a reason other than its client

    def caller(self, uid: int) -> Caller:
        name, admin = is_admin(uid, self.admin_group)
        return Caller(name, uid, admin)


def peer_uid(sock: socket.socket) -> int:
    """The connecting process's uid, from the kernel (SO_PEERCRED), never from the request."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


class _Handler(BaseHTTPRequestHandler):
    server: "StatusServer"
    client_address: int            # the peer's uid, filled in by StatusServer.process_request
    protocol_version = "HTTP/1.0"
    timeout = READ_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:  # requests are not decisions: keep the journal clean
        pass

    def _caller(self) -> Caller:
        """Who asks (from the kernel), and from then on what of other users' names they may read."""
        caller = self.server.app.caller(self.client_address)
        self.reader = reader(self.server.app.view, caller)
        return caller

    reader: Redactor = NOBODY_HIDDEN

    def _send(self, code: int, body: dict[str, Any]) -> None:
        """Every answer, errors included, passes the caller's reader: no other user's name
        leaks through a refusal when show_other_users is false."""
        data = (json.dumps(self.reader.tree(body), indent=1) + "\n").encode()
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
            self._send(404, {"error": "no such endpoint; try /v1/status"})

    def do_POST(self) -> None:
        action = urlparse(self.path).path.removeprefix("/v1/")
        if action not in ADMIN_ACTIONS:
            self._send(404, {"error": f"no such action; the actions are {', '.join(ADMIN_ACTIONS)}"})
            return
        try:
            args = parse_args(action, self._json_body())
        except _Refused as exc:
            self._send(exc.code, {"error": str(exc)})
            return
        except BadRequest as exc:
            self._send(400, {"error": f"bad request: {exc}"})
            return
        reply: concurrent.futures.Future = concurrent.futures.Future()
        caller = self._caller()
        self.reader = self.reader.sparing(v for v in vars(args).values() if isinstance(v, str))
        self.server.app.submit(AdminRequest(action, args, caller, reply))
        answer = self._await(reply)
        if answer is None:
            return  # the client left; the main loop drops the cancelled request
        try:
            self._send(*answer)
        except OSError:
            self._abandon(action, answer, caller)
            raise

    def _json_body(self) -> Any:
        """The request's JSON body, with its length declared and bounded."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raise _Refused(411, "send the body with a Content-Length, not chunked")
        declared = self.headers.get("Content-Length")
        if declared is None:
            raise _Refused(411, "a request with a body needs a Content-Length")
        if not (declared.strip().isascii() and declared.strip().isdigit()):   # not "²": int() refuses it
            raise _Refused(400, "bad request: Content-Length must be a number of bytes")
        length = int(declared)
        if length > MAX_BODY:
            raise _Refused(413, f"the body may be at most {MAX_BODY} bytes")
        data = self.rfile.read(length)
        if len(data) < length:
            raise _Refused(400, "bad request: the body is shorter than its Content-Length")
        try:
            return json.loads(data) if data else {}
        except (ValueError, RecursionError):
            raise _Refused(400, "bad request: the body is not JSON") from None

    def _await(self, reply: concurrent.futures.Future) -> Answer | None:
        """The main loop's answer; None if the client hung up first (the request is then cancelled)."""
        deadline = time.monotonic() + LONGEST_ANSWER
        while True:
            try:
                return reply.result(timeout=CLIENT_POLL)
            except concurrent.futures.TimeoutError:
                if self._client_gone() or time.monotonic() > deadline:
                    if reply.cancel():
                        return None
                    # answered in the meantime: take that answer

    def _client_gone(self) -> bool:
        poller = select.poll()
        poller.register(self.connection, select.POLLRDHUP)
        return any(mask & (select.POLLRDHUP | select.POLLHUP | select.POLLERR) for _, mask in poller.poll(0))

    def _abandon(self, action: str, answer: Answer, caller: Caller) -> None:
        """A grant nobody will read must not keep devices from everyone until it expires."""
        code, body = answer
        if action == "allocate" and code == 200 and isinstance(body.get("id"), int):
            self.server.app.submit(AbandonedGrant(body["id"], str(body.get("user") or caller.user)))


class _Refused(Exception):
    """A request refused before it reaches the main loop: the HTTP status and one sentence."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class StatusServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The socket's accept loop; one thread per connection, within the caps."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, path: str, app: StatusApp, max_connections: int = MAX_CONNECTIONS,
                 max_per_uid: int = MAX_CONNECTIONS_PER_UID):
        self.app = app
        self.max_connections = max_connections
        self.max_per_uid = max_per_uid
        self._open: Counter[int] = Counter()
        self._lock = threading.Lock()
        self.refused = 0                # connections turned away at the caps
        self.dropped = 0                # connections that failed mid-request (hang-ups, timeouts)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        super().__init__(path, _Handler)
        os.chmod(path, 0o666)  # every local user may ask; what they may do is decided per request

    def start(self) -> None:
        threading.Thread(target=self.serve_forever, name="status-socket", daemon=True).start()

    def open_connections(self) -> int:
        with self._lock:
            return sum(self._open.values())

    def get_request(self) -> tuple[socket.socket, Any]:
        try:
            return super().get_request()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                time.sleep(0.1)  # out of descriptors: wait for some to close instead of spinning
            raise

    def process_request(self, request: Any, client_address: Any) -> None:
        """Count the connection against its user's cap, or turn it away with a 503."""
        try:
            uid = peer_uid(request)
        except OSError:
            self.shutdown_request(request)
            return
        with self._lock:
            full = sum(self._open.values()) >= self.max_connections or \
                (uid != 0 and self._open[uid] >= self.max_per_uid)
            if not full:
                self._open[uid] += 1
        if full:
            self.refused += 1
            self._turn_away(request)
            return
        try:
            super().process_request(request, uid)
        except BaseException:
            self._closed(uid)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._closed(client_address)

    def _closed(self, uid: int) -> None:
        with self._lock:
            self._open[uid] -= 1
            if self._open[uid] <= 0:
                del self._open[uid]

    def _turn_away(self, request: socket.socket) -> None:
        body = b'{"error": "ds01d has too many open connections (yours or everyone\'s); try again"}\n'
        head = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body))
        try:
            request.send(head + body, socket.MSG_DONTWAIT)
        except OSError:
            pass
        self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up or stalls is normal on a shared machine: count it, say nothing.
        Anything else is a bug in answering, and the daemon's journal hears of it."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # BrokenPipe, ConnectionReset, socket timeouts
            self.dropped += 1
        else:
            self.app.report(f"status request failed: {type(exc).__name__}: {exc}")
