"""Send raw bytes to a Unix socket and print what comes back, for tests that must send
what no well-behaved client would.

    python raw_http.py SOCKET [--hang-up] < request-bytes

--hang-up closes the connection as soon as the request is sent, without reading.
"""

from __future__ import annotations

import socket
import sys


def main() -> int:
    path, hang_up = sys.argv[1], "--hang-up" in sys.argv[2:]
    request = sys.stdin.buffer.read()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(20)
    sock.connect(path)
    sock.sendall(request)
    if hang_up:
        sock.close()
        return 0
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    sys.stdout.buffer.write(b"".join(chunks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
