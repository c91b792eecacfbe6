"""Users' terminals: which ptys are theirs (from a /proc and /dev/pts laid out as the kernel
does), what is written (escaped, one line), and a write that never blocks (real ptys)."""

from __future__ import annotations

import errno
import os
import threading

import pytest

from ds01d.host.terminals import MAX_TEXT, terminal_line, user_terminals, write_terminal


def test_the_line_escapes_what_a_user_controls():
    line = terminal_line("web-\x1b]0;owned\x07 asks for GPU \x1b[2J\u202e")
    assert line == b"\r\n\a*** ds01d: web-\\x1b]0;owned\\x07 asks for GPU \\x1b[2J\\u202e ***\r\n"
    assert terminal_line("x" * 10_000).count(b"x") == MAX_TEXT - 3


def fake_proc(root, processes):
    """/proc/PID/stat and status for (pid, comm, real uid, tty_nr)."""
    for pid, comm, uid, tty in processes:
        d = root / str(pid)
        d.mkdir(parents=True)
        (d / "stat").write_text(f"{pid} ({comm}) S 1 {pid} {pid} {tty} -1 4194560 0 0\n")
        (d / "status").write_text(f"Name:\t{comm}\nUid:\t{uid}\t0\t0\t0\nGid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
    (root / "self").mkdir()
    return str(root)


@pytest.fixture
def ptys():
    pairs = [os.openpty() for _ in range(3)]
    yield [(master, os.ttyname(slave)) for master, slave in pairs]
    for pair in pairs:
        for fd in pair:
            os.close(fd)


def test_terminals_are_controlling_ptys_the_user_owns(tmp_path, ptys):
    """tmux panes and VS Code terminals are not in utmp; a process's controlling pty is. Only
    ptys the user owns count: not one where a process of another user runs (sudo -u)."""
    me, other = os.getuid(), 4242
    rdev = [os.stat(path).st_rdev for _, path in ptys]
    proc = fake_proc(tmp_path / "proc", [
        (10, "bash", me, rdev[0]),                  # login shell
        (11, "tmux: server) x (", me, 0),           # no terminal; a comm with parentheses and spaces
        (12, "bash", me, rdev[1]),                  # a tmux pane
        (13, "sudo-ed", other, rdev[2]),            # another user's process on my pty
        (15, "getty", me, os.makedev(4, 1)),        # a virtual console: not a pty
    ])
    assert user_terminals(me, proc) == sorted(path for _, path in ptys[:2])
    assert user_terminals(other, proc) == []
    assert user_terminals(other + 1, proc) == []


@pytest.fixture
def pty():
    master, slave = os.openpty()
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


def test_the_text_arrives_on_a_real_pty(pty):
    master, path = pty
    assert write_terminal(path, terminal_line("stopping web"))
    assert b"*** ds01d: stopping web ***" in os.read(master, 4096)


def test_a_pty_nobody_reads_is_skipped_at_once(pty):
    """A reader stopped with Ctrl-Z (or a terminal paused with Ctrl-S) fills the pty's buffer:
    the next write is EAGAIN, not a worker blocked forever."""
    master, path = pty
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    try:
        for size in (4096, 1):     # to the last byte: a short line still fits after a 4096-byte EAGAIN
            try:
                while True:
                    os.write(fd, b"x" * size)
            except OSError as exc:
                assert exc.errno == errno.EAGAIN
    finally:
        os.close(fd)
    done = threading.Event()
    result = []
    worker = threading.Thread(target=lambda: (result.append(write_terminal(path, terminal_line("hi"))), done.set()),
                              daemon=True)
    worker.start()
    # Whether it arrived depends on how fast the kernel moves the buffer to the reader's side:
    # what matters is that the worker came back at once.
    assert done.wait(5.0), "write_terminal blocked on a full pty"
    assert result in ([False], [True])


def test_a_terminal_that_refuses_is_not_reached(tmp_path):
    assert not write_terminal(str(tmp_path / "gone"), b"x")
