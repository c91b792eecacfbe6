"""A local incoming-webhook receiver, for box tests: keeps every POST as OUT/<n>.json
({"path", "content_type", "body"}) and answers 200, or `--status`, after `--delay` seconds.
Writes OUT/ready once it listens.

    python3 webhook_sink.py --port 8089 --out DIR [--delay 30] [--status 500]
"""

from __future__ import annotations

import argparse
import http.server
import itertools
import threading
from pathlib import Path

from sink_files import keep  # beside this script


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--status", type=int, default=200)
    args = parser.parse_args()
    numbers = itertools.count()
    never = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            kept = {"path": self.path, "content_type": self.headers.get("Content-Type"), "body": body.decode()}
            keep(args.out, next(numbers), kept)
            never.wait(args.delay)
            try:
                self.send_response(args.status)
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:
                pass  # the client gave up waiting

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    (args.out / "ready").touch()
    server.serve_forever()


if __name__ == "__main__":
    main()
