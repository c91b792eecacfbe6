"""Files inside a container, looked at from the host through `/proc/<pid>/root`.

ds01d runs as root with CAP_DAC_READ_SEARCH, and the container's owner controls every
name in the container's filesystem.  A plain `os.stat("/proc/<pid>/root/workspace/x")`
enters the container's root but resolves an absolute symlink in it (`x -> /etc/shadow`,
or `/workspace -> /`) against the daemon's own root, the host's; `..` can climb out
the same way.  Here every path is resolved with the container's root as "/": with the
kernel's `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` (Linux >= 5.6, in systemd's
@file-system set that the unit's @system-service filter allows), else by walking it one
component at a time with O_NOFOLLOW and reading each symlink ourselves.  Files are only
ever opened with O_PATH: a FIFO or a device in the container cannot block the daemon,
and nothing in them is read.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import stat
from typing import Callable

MAX_LINKS = 40                      # the kernel's MAXSYMLINKS: the same limit by both ways
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
# System calls added since Linux 5.1 have one number on every architecture but alpha.
_SYS_OPENAT2 = None if platform.machine() == "alpha" else 437
_O_PATH = os.O_PATH | os.O_CLOEXEC


class KernelResolverUnavailable(Exception):
    """openat2 is missing (kernel < 5.6) or refused (a seccomp filter): walk instead."""


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)


def regular_file_mtime(root: str, path: str,
                       resolve: Callable[[int, str], int] | None = None) -> float | None:
    """mtime of `path` resolved inside `root` (a directory, or `/proc/<pid>/root`), when it is a
    regular file; None when it is missing, is anything else, or cannot be resolved inside."""
    try:
        root_fd = os.open(root, _O_PATH | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        fd = (resolve or open_in_root)(root_fd, path)
        try:
            info = os.fstat(fd)
        finally:
            os.close(fd)
    except OSError:
        return None
    finally:
        os.close(root_fd)
    return info.st_mtime if stat.S_ISREG(info.st_mode) else None


def open_in_root(root_fd: int, path: str) -> int:
    """An O_PATH descriptor of `path` resolved with `root_fd` as "/": the kernel's way where
    there is one, else the walk; OSError when it does not resolve."""
    try:
        return kernel_open_in_root(root_fd, path)
    except KernelResolverUnavailable:
        return walk_in_root(root_fd, path)


def kernel_open_in_root(root_fd: int, path: str) -> int:
    """openat2(2) with RESOLVE_IN_ROOT (absolute symlinks and `..` stay inside) and
    RESOLVE_NO_MAGICLINKS (no /proc/<pid>/fd-style jumps); Python has no wrapper for it."""
    if _SYS_OPENAT2 is None:
        raise KernelResolverUnavailable("no openat2 number for this architecture")
    how = _OpenHow(_O_PATH, 0, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(root_fd), ctypes.c_char_p(os.fsencode(path)),
                       ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd >= 0:
        return fd
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EPERM):   # EPERM: SystemCallErrorNumber= of a filter that refuses it
        raise KernelResolverUnavailable(os.strerror(err))
    raise OSError(err, os.strerror(err), path)


def walk_in_root(root_fd: int, path: str) -> int:
    """The same resolution by hand: each component opened with O_NOFOLLOW relative to the
    directory walked so far; a symlink's text is read and walked in its place (an absolute
    one from `root_fd`), `..` never climbs above `root_fd`, at most MAX_LINKS symlinks.
    Magic links are read as text like any other, so their jump is never taken."""
    todo = _components(path)[::-1]  # a stack, next component last: a long link text costs no shifting
    walked = [os.dup(root_fd)]      # the directories walked so far, the root first
    links = 0
    try:
        while todo:
            name = todo.pop()
            if name == "..":
                if len(walked) > 1:
                    os.close(walked.pop())
                continue
            fd = os.open(name, _O_PATH | os.O_NOFOLLOW, dir_fd=walked[-1])
            if not stat.S_ISLNK(os.fstat(fd).st_mode):
                walked.append(fd)
                continue
            os.close(fd)
            links += 1
            if links > MAX_LINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
            target = os.readlink(name, dir_fd=walked[-1])
            if target.startswith("/"):
                while len(walked) > 1:
                    os.close(walked.pop())
            todo.extend(_components(target)[::-1])
        return walked.pop()
    finally:
        for fd in walked:
            os.close(fd)


def _components(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]
