"""The key of the gateway's admission marks (`ds01d.rules.admission_mark`): 32 random bytes in
a root-only file beside the state database, made on first use and kept across restarts
(marks on existing containers must still verify)."""

from __future__ import annotations

import os
import secrets

KEY_BYTES = 32


def load_or_create(path: str) -> bytes:
    """The key at `path`, made (0600, atomically) if there is none or it is not a key."""
    try:
        with open(path, "rb") as f:
            key = f.read(KEY_BYTES + 1)
        if len(key) == KEY_BYTES:
            return key
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(KEY_BYTES)
    tmp = f"{path}.new"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return key


def load(path: str) -> bytes | None:
    """The key at `path` as ds01d made it, or None (not made yet, unreadable, not a key): the
    gateway only reads it, so a missing key means no mark verifies, never a key of its own."""
    try:
        with open(path, "rb") as f:
            key = f.read(KEY_BYTES + 1)
    except OSError:
        return None
    return key if len(key) == KEY_BYTES else None
