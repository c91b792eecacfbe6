"""A message on every terminal a user is looking at, written without ever blocking.

Which terminals: each pseudo-terminal that is the controlling terminal of one of the
user's processes *and* that the user owns.  utmp (`who`, psutil.users()) lists login
sessions only, while people on a GPU server read tmux and screen panes, VS Code's
integrated terminals and `docker exec -t` shells, none of which log in; every one of
them is the controlling terminal of a shell of the user, which /proc shows.  Ownership
of /dev/pts/N is checked too: it keeps a message for alice off a terminal that bob owns
where one of alice's processes runs (`sudo -u alice`), and off a pty of a container's
own devpts instance whose device number happens to equal a host pty's.  Only /dev/pts:
a serial line's close can wait half a minute for its output to drain; a pty's never does.

Why ds01d may write: a pty accepting messages (`mesg y`) is 0620 user:tty, and
ds01d.service runs with SupplementaryGroups=tty, the same group write(1) and wall(1)
are setgid to.  No CAP_DAC_OVERRIDE is needed, and a user who ran `mesg n` (0600) is
left alone, as with write(1).

Never blocking: the pty is opened O_NONBLOCK, so a full output buffer (its reader
stopped with Ctrl-Z, or the terminal paused with Ctrl-S) is EAGAIN and skipped.
"""

from __future__ import annotations

import errno
import os
import pwd
import stat

from ds01d.rules.safe_text import printable

PTS_MAJORS = range(136, 144)  # UNIX98_PTY_SLAVE_MAJOR and the 7 majors after it
MAX_TEXT = 400                # characters of the message shown; a terminal line, not a report


def terminal_line(text: str) -> bytes:
    """What is written: a line of its own, a bell, the text with control characters escaped."""
    shown = printable(text)
    if len(shown) > MAX_TEXT:
        shown = shown[:MAX_TEXT - 3] + "..."
    return f"\r\n\a*** ds01d: {shown} ***\r\n".encode()


def _tty_of(proc: str, pid: str) -> int | None:
    """The controlling terminal's device number (tty_nr) of a process, None if it has none."""
    try:
        with open(os.path.join(proc, pid, "stat"), "rb") as f:
            after_comm = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    tty = int(after_comm[4])  # state, ppid, pgrp, session, tty_nr
    return tty if tty and os.major(tty) in PTS_MAJORS else None


def _real_uid(proc: str, pid: str) -> int | None:
    """The real uid (not /proc/PID's owner, which is root for non-dumpable processes)."""
    try:
        with open(os.path.join(proc, pid, "status"), "rb") as f:
            for line in f:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def controlling_ptys(uid: int, proc: str = "/proc") -> set[int]:
    """Device numbers of the ptys that are controlling terminals of `uid`'s processes."""
    found: set[int] = set()
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        tty = _tty_of(proc, pid)
        if tty is not None and tty not in found and _real_uid(proc, pid) == uid:
            found.add(tty)
    return found


def user_terminals(uid: int, proc: str = "/proc", pts: str = "/dev/pts") -> list[str]:
    """Paths of the ptys `uid` owns and one of its processes has as controlling terminal."""
    wanted = {(os.major(d), os.minor(d)) for d in controlling_ptys(uid, proc)}
    if not wanted:
        return []
    paths = []
    with os.scandir(pts) as entries:
        for entry in entries:
            try:
                st = entry.stat()
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) and st.st_uid == uid \
                    and (os.major(st.st_rdev), os.minor(st.st_rdev)) in wanted:
                paths.append(entry.path)
    return sorted(paths)


def write_terminal(path: str, data: bytes) -> bool:
    """Write `data` to a terminal if that can be done at once; whether any of it arrived."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False  # gone, or `mesg n`
    try:
        return os.write(fd, data) > 0
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EIO):  # full (reader stopped), or hung up
            raise
        return False
    finally:
        os.close(fd)


def tell_user(user: str, text: str) -> int:
    """Write `text` to every terminal of `user` (see the module's docstring); the number reached."""
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        return 0
    line = terminal_line(text)
    return sum(write_terminal(path, line) for path in user_terminals(uid))
