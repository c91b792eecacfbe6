"""A local SMTP receiver, for box tests: accepts every mail a real client (msmtp) sends and
keeps it as OUT/<n>.json ({"mail_from", "rcpt_to", "data"}).  Writes OUT/ready once it
listens.  Speaks the few commands of RFC 5321 a submission without TLS or AUTH uses.

    python3 smtp_sink.py --port 2525 --out DIR
"""

from __future__ import annotations

import argparse
import itertools
import socketserver
from pathlib import Path

from sink_files import keep  # beside this script


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    numbers = itertools.count()

    class Session(socketserver.StreamRequestHandler):
        def say(self, line: str) -> None:
            self.wfile.write(line.encode() + b"\r\n")
            self.wfile.flush()

        def handle(self) -> None:
            envelope: dict = {"mail_from": None, "rcpt_to": []}
            self.say("220 smtp-sink ESMTP")
            for raw in self.rfile:
                line = raw.decode(errors="replace").rstrip("\r\n")
                verb = line[:4].upper()
                if verb in ("EHLO", "HELO"):
                    self.say("250 smtp-sink")
                elif verb == "MAIL":
                    envelope = {"mail_from": line.split(":", 1)[1].strip(), "rcpt_to": []}
                    self.say("250 OK")
                elif verb == "RCPT":
                    envelope["rcpt_to"].append(line.split(":", 1)[1].strip())
                    self.say("250 OK")
                elif verb == "DATA":
                    self.say("354 end with <CRLF>.<CRLF>")
                    lines = []
                    for data in self.rfile:
                        if data in (b".\r\n", b".\n"):
                            break
                        lines.append(data[1:] if data.startswith(b"..") else data)
                    kept = {**envelope, "data": b"".join(lines).decode(errors="replace")}
                    keep(args.out, next(numbers), kept)
                    self.say("250 OK kept")
                elif verb in ("RSET", "NOOP"):
                    self.say("250 OK")
                elif verb == "QUIT":
                    self.say("221 bye")
                    return
                else:
                    self.say("502 not here")

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer(("127.0.0.1", args.port), Session)
    (args.out / "ready").touch()
    server.serve_forever()


if __name__ == "__main__":
    main()
