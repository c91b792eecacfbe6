"""Thousands of random and malformed requests to ds01d's status socket, as whoever runs it.

    python socket_fuzz.py SOCKET COUNT SEED

Methods, paths, headers (Content-Length -1, huge, twice, missing; chunked; hundreds of
headers; a line over 64 KiB), bodies (JSON of every type, deep nesting, NaN, huge numbers,
bytes that are not UTF-8), truncated requests and hang-ups before, during and after the
answer.  Prints one JSON line: how many requests of each outcome, and the seed, so a
failure can be replayed.
"""

from __future__ import annotations

import json
import random
import socket
import sys
import time
from collections import Counter

METHODS = ["GET", "POST", "POST", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "BREW", "G\x00T", "", "GET" * 400]
PATHS = ["/v1/status", "/v1/status?mine=1", "/v1/status?mine=\x1b[2J", "/v1/admin/status", "/v1/allocate",
         "/v1/release", "/v1/extend", "/v1/reload", "/v1/usage", "/v1/admit", "/v1/free", "/v1/refused", "/v1/", "/", "/v1/%00",
         "/v1/allocate/../release", "*",
         "http://ds01d/v1/status", "/" + "a" * 70000, "/v1/allocate?x=" + "%" * 100]
ACTION_KEYS = ["user", "count", "full", "wait_s", "container", "seconds", "since_s", "since", "until_s", "until", "by", "uid", "build", "id", "devices", "gpus", "__proto__",
               "\x1b]0;x\x07"]


def json_value(rng: random.Random, depth: int = 0):
    kinds = ["null", "bool", "int", "bigint", "float", "str", "list", "dict"] if depth < 4 else ["int", "str"]
    kind = rng.choice(kinds)
    if kind == "null":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.choice([0, 1, -1, 2, 64, 65, 180, 86400, 86401, 2**31, -2**63])
    if kind == "bigint":
        return 10 ** rng.randint(10, 300)
    if kind == "float":
        return rng.choice([0.5, 1e9, -0.0, 3.0, 1e308])
    if kind == "str":
        return rng.choice(["", "soon", "alice", "root", "web", "\x1b[2J", "a" * 500, "../..", "é", "0" * 64])
    if kind == "list":
        return [json_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(ACTION_KEYS): json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def body(rng: random.Random) -> bytes:
    choice = rng.randint(0, 9)
    if choice == 0:
        return b""
    if choice == 1:
        return b"[" * 5000 + b"]" * 5000
    if choice == 2:
        return b'{"wait_s": NaN, "count": Infinity}'
    if choice == 3:
        return b'{"count": ' + b"9" * 5000 + b"}"
    if choice == 4:
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))
    if choice == 5:
        return b'{"container": "web", "seconds": 60, "seconds": "x"}'
    return json.dumps(json_value(rng), allow_nan=True).encode()


def headers(rng: random.Random, data: bytes) -> list[str]:
    choice = rng.randint(0, 9)
    if choice == 0:
        return ["Content-Length: -1"]
    if choice == 1:
        return ["Content-Length: 99999999999"]
    if choice == 2:
        return ["Content-Length: abc"]
    if choice == 3:
        return [f"Content-Length: {len(data)}", "Content-Length: 0"]
    if choice == 4:
        return []
    if choice == 5:
        return ["Transfer-Encoding: chunked"]
    if choice == 6:
        return [f"X-{i}: {'y' * rng.randint(0, 50)}" for i in range(rng.randint(90, 250))]
    if choice == 7:
        return ["X-Long: " + "z" * 70000, f"Content-Length: {len(data)}"]
    return [f"Content-Length: {len(data)}", "Content-Type: application/json"]


def request(rng: random.Random) -> bytes:
    data = body(rng)
    version = rng.choice(["HTTP/1.0", "HTTP/1.1", "HTTP/1.1", "HTTP/9.9", ""])
    line = f"{rng.choice(METHODS)} {rng.choice(PATHS)} {version}".encode("utf-8", "surrogateescape")
    head = b"\r\n".join([line, *(h.encode() for h in headers(rng, data))])
    return head + b"\r\n\r\n" + data


def one(path: str, rng: random.Random) -> str:
    mode = rng.choice(["full", "full", "full", "truncated", "hang-up-early", "hang-up-after-send", "silent"])
    data = request(rng)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(3)
    try:
        sock.connect(path)
        if mode == "silent":
            return "silent"
        if mode == "truncated":
            sock.sendall(data[: rng.randint(0, max(0, len(data) - 1))])
            sock.shutdown(socket.SHUT_WR)
        elif mode == "hang-up-early":
            sock.sendall(data[: len(data) // 2])
            return "hung-up"
        else:
            sock.sendall(data)
            if mode == "hang-up-after-send":
                return "hung-up"
        answer = sock.recv(64)
        return answer.split(b" ")[1].decode() if answer.startswith(b"HTTP/") else "no-answer"
    except socket.timeout:
        return "timeout"
    except OSError as exc:
        return type(exc).__name__
    finally:
        sock.close()


def main() -> int:
    path, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    started = time.monotonic()
    for _ in range(count):
        outcomes[one(path, rng)] += 1
    print(json.dumps({"seed": seed, "count": count, "seconds": round(time.monotonic() - started, 1),
                      "outcomes": dict(outcomes)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
