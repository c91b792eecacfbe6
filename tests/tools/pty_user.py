"""A user sitting at terminals, for box tests: run it as that user.

Opens `--ttys` pseudo-terminals, each the controlling terminal of a session of its own (a
child that called setsid() and sleeps, as a shell in a tmux pane would), and prints one
JSON line {"ttys": [...]} naming their slave devices.  The first `--stalled` of them are
filled until a write would block and never read (a reader stopped with Ctrl-Z); the
others are read from their master.  Once every read terminal has shown `--expect`
messages of ds01d (or after `--timeout` seconds), it prints {"read": {tty: text}} and
exits, taking its sessions with it.

Standard library only: it runs under the box's /usr/bin/python3 as an unprivileged user.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sys
import time

END = b" ***\r"  # the end of a message of ds01d (the pty turns its \r\n into \r\r\n)


def session(slave_name: str) -> int:
    """A child whose controlling terminal is `slave_name`; its pid."""
    pid = os.fork()
    if pid == 0:
        os.setsid()
        fd = os.open(slave_name, os.O_RDWR)  # the first tty a session leader opens becomes its own
        os.dup2(fd, 0)
        signal.pause()
        os._exit(0)
    return pid


def fill(slave_name: str) -> None:
    fd = os.open(slave_name, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        while True:
            os.write(fd, b"." * 4096)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ttys", type=int, default=1)
    parser.add_argument("--stalled", type=int, default=0)
    parser.add_argument("--expect", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    pairs = [os.openpty() for _ in range(args.ttys)]
    names = [os.ttyname(slave) for _, slave in pairs]
    children = [session(name) for name in names]
    for name in names[:args.stalled]:
        fill(name)
    print(json.dumps({"ttys": names, "stalled": names[:args.stalled]}), flush=True)
    reading = {master: name for (master, _), name in list(zip(pairs, names))[args.stalled:]}
    got = {name: b"" for name in reading.values()}
    deadline = time.monotonic() + args.timeout
    while any(text.count(END) < args.expect for text in got.values()) and time.monotonic() < deadline:
        ready, _, _ = select.select(list(reading), [], [], max(0.0, deadline - time.monotonic()))
        for master in ready:
            got[reading[master]] += os.read(master, 65536)
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    print(json.dumps({"read": {name: text.decode(errors="replace") for name, text in got.items()}}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
