"""A person at a terminal, for box tests: run a command on a new pseudo-terminal and relay
this process's stdin to it and its output to stdout, unbuffered, until the command ends;
exit with its status.  Standard library only: it runs as an unprivileged user.

    python pty_session.py docker exec -it c sh
"""

from __future__ import annotations

import os
import pty
import select
import sys


def relay(master: int) -> None:
    """Copy stdin -> terminal and terminal -> stdout until the terminal closes (EIO)."""
    inputs = [master, 0]
    while True:
        ready, _, _ = select.select(inputs, [], [])
        if master in ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the command and every holder of the terminal are gone
                return
            if not data:
                return
            os.write(1, data)
        if 0 in ready:
            data = os.read(0, 65536)
            if data:
                os.write(master, data)
            else:
                inputs.remove(0)  # our input ended; the terminal stays open


def main() -> int:
    pid, master = pty.fork()
    if pid == 0:
        os.execvp(sys.argv[1], sys.argv[1:])
    relay(master)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
