"""Where the state database lives: on disk when it can be, in memory when it cannot.

A damaged or unwritable `state.db` must not stop enforcement: a daemon that crash-loops
on its own bookkeeping enforces nothing.  So this connection moves a damaged file aside
(`state.db.damaged-<time>`, kept for the admin) and starts a fresh one; and when the disk
refuses a write (read-only, full, I/O errors, a newer schema it must not touch) it copies
what it has into memory and goes on there, says so through `trouble`, and writes the
memory back to the file as soon as the disk takes it again (`try_restore`).  What
happened while in memory is lost only if ds01d stops before the disk comes back.

Busy and locked errors are not storage failures (another reader took a lock for a while)
and neither are our own mistakes (constraint or programming errors): those propagate.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any, Callable, Iterable

#: SQLite primary result codes that mean the disk or the file, not the statement.
_STORAGE_CODES = frozenset({3, 8, 10, 11, 13, 14, 26})   # PERM READONLY IOERR CORRUPT FULL CANTOPEN NOTADB
_DAMAGED_CODES = frozenset({11, 26})                      # CORRUPT NOTADB
_STORAGE_WORDS = ("readonly", "read-only", "disk i/o", "disk is full", "malformed", "not a database",
                  "unable to open", "permission")
_DAMAGED_WORDS = ("malformed", "not a database")


class SchemaTooNew(Exception):
    """The file was written by a newer ds01d: it must not be changed, only read by that one."""


def _code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)   # Python 3.11+
    return code & 0xFF if isinstance(code, int) else None


def is_storage_failure(exc: BaseException) -> bool:
    """Whether `exc` says the disk or the file failed (as opposed to the statement)."""
    if not isinstance(exc, sqlite3.DatabaseError) or isinstance(exc, (sqlite3.IntegrityError,
                                                                      sqlite3.ProgrammingError)):
        return False
    code = _code(exc)
    if code is not None:
        return code in _STORAGE_CODES
    return any(word in str(exc).lower() for word in _STORAGE_WORDS)


def is_damaged(exc: BaseException) -> bool:
    """Whether `exc` says the file itself is not a sound SQLite database."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = _code(exc)
    if code is not None:
        return code in _DAMAGED_CODES
    return any(word in str(exc).lower() for word in _DAMAGED_WORDS)


Prepare = Callable[[sqlite3.Connection], None]   # pragmas and migrations for a fresh connection
Tell = Callable[[str, bool], None]               # (message, is it bad news) for the journal


class StateFile:
    """The SQLite connection behind the Store, with the fallbacks above.

    `generation` changes whenever the connection is replaced, so a transaction begun on
    one connection is never committed on another.
    """

    def __init__(self, path: str, prepare: Prepare, tell: Tell | None = None):
        self.path = path
        self.prepare = prepare
        self.told: list[tuple[str, bool]] = []   # what happened before anyone listened
        self.tell: Tell = tell or (lambda message, bad: self.told.append((message, bad)))
        self.trouble: str | None = None          # why the state is in memory; None when on disk
        self.since: float | None = None
        self.restorable = True
        self.holds_file = True   # the memory (while in trouble) started as a copy of the file
        self.generation = 0
        self.db: sqlite3.Connection
        self._open()

    # --- opening --------------------------------------------------------------------------

    def _open(self) -> None:
        try:
            self.db = self._open_file()
            return
        except SchemaTooNew as exc:
            self.restorable = False
            self._to_memory(None, str(exc))
            return
        except (OSError, sqlite3.DatabaseError) as exc:
            if not is_damaged(exc):
                self._to_memory(None, _why(exc))
                return
        aside = self._move_aside()
        if aside is None:
            self._to_memory(None, "it is damaged and cannot be moved aside")
            return
        self.tell(f"{self.path} was damaged (not a sound SQLite database): kept as {aside} for inspection, "
                  "and a new one started; containers are relearnt from Docker, while GPU idle clocks, warnings "
                  "sent, extensions and the audit trail before now are in the old file", True)
        try:
            self.db = self._open_file()
        except (OSError, sqlite3.DatabaseError, SchemaTooNew) as exc:
            self._to_memory(None, _why(exc))

    def _open_file(self) -> sqlite3.Connection:
        if not _has_sqlite_header(self.path):
            # Checked before SQLite opens it: closing a connection to a bad file deletes its WAL.
            raise sqlite3.DatabaseError("file is not a database")
        self._create()
        for name in (self.path, f"{self.path}-wal", f"{self.path}-shm"):
            if os.path.exists(name):
                os.chmod(name, 0o600)
        db = _connect(self.path)
        try:
            self.prepare(db)
        except BaseException:
            db.close()
            raise
        return db

    def _create(self) -> None:
        """The file, root-only from its first byte: the audit trail names users and their containers."""
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o755, exist_ok=True)
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600))

    def _move_aside(self) -> str | None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = f"{self.path}.damaged-{stamp}"
        try:
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(self.path + suffix):
                    os.replace(self.path + suffix, aside + suffix)
        except OSError:
            return None
        return aside

    # --- in memory ------------------------------------------------------------------------------

    def _to_memory(self, source: sqlite3.Connection | None, why: str) -> None:
        """Go on in a memory database with what `source` holds (or a fresh one), and say so
        (after the switch: whoever hears it may write to the state)."""
        memory = _connect(":memory:")
        copied = False
        if source is not None:
            try:
                source.backup(memory)
                copied = True
            except sqlite3.Error:
                memory.close()
                memory = _connect(":memory:")
        self.prepare(memory)
        self.db = memory
        self.holds_file = copied
        self.trouble = why
        self.since = time.time()
        self.generation += 1
        kept = "what it held is kept in memory" if copied or source is None else \
            "what it held could not be read back"
        self.tell(f"state database {self.path} unavailable ({why}); running from memory ({kept}): slices, "
                  "stops and allocations go on, and what happens now is written to the file when it can be; "
                  + ("move the file away or upgrade ds01d, then restart" if not self.restorable else
                     "check the disk (space, read-only mount, permissions)"), True)

    def fail_over(self, exc: sqlite3.Error) -> None:
        """The disk refused: go on in memory with the committed state."""
        old = self.db
        try:
            if old.in_transaction:
                old.rollback()
        except sqlite3.Error:
            pass
        damaged = is_damaged(exc)
        self._to_memory(None if damaged else old, _why(exc))
        try:
            old.close()
        except sqlite3.Error:
            pass
        if damaged:
            aside = self._move_aside()
            if aside:
                self.tell(f"{self.path} was damaged: kept as {aside}", True)

    def try_restore(self) -> bool:
        """Back on disk if the disk takes it now (True).  A memory copied from the file is
        written over it; a memory that started empty (the file could not be opened) must not
        be: the file's history is kept, and what was recorded meanwhile is added to it."""
        if self.trouble is None:
            return True
        if not self.restorable:
            return False
        try:
            exists = os.path.exists(self.path)
            if exists and not self._sound():
                if self._move_aside() is None:
                    return False
                exists = False
            rejoin = exists and not self.holds_file
            disk = self._disk_from_memory(rejoin)
        except (OSError, sqlite3.Error, SchemaTooNew):
            return False
        memory, self.db = self.db, disk
        memory.close()
        gap = time.time() - (self.since or time.time())
        self.trouble, self.since, self.holds_file = None, None, True
        self.generation += 1
        self.tell(f"state database {self.path} readable again after {gap:.0f}s: its history is kept and the "
                  "decisions and GPU time recorded meanwhile were added to it" if rejoin else
                  f"state database {self.path} written again after {gap:.0f}s in memory; nothing was lost", False)
        return True

    def _disk_from_memory(self, rejoin: bool) -> sqlite3.Connection:
        self._create()
        disk = _connect(self.path)
        try:
            if rejoin:
                self.prepare(disk)
                _add_records(self.db, disk)
            else:
                self.db.backup(disk)
                self.prepare(disk)
        except BaseException:
            disk.close()
            raise
        return disk

    def _sound(self) -> bool:
        try:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            try:
                return db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
            finally:
                db.close()
        except sqlite3.Error as exc:
            return not is_damaged(exc)

    # --- statements ----------------------------------------------------------------------------

    def execute(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        """Run one statement; a storage failure moves to memory and runs it there.

        Inside a transaction the statements before it are gone with the file's connection,
        so the failure is raised instead (`TransactionLost`) and the caller's step fails whole.
        """
        in_transaction = self.db.in_transaction   # before: SQLite may roll back on the failure itself
        try:
            return self.db.execute(sql, tuple(params))
        except sqlite3.DatabaseError as exc:
            if self.trouble is not None or not is_storage_failure(exc):
                raise
            self.fail_over(exc)
            if in_transaction:
                raise TransactionLost(f"the state database failed mid-transaction ({_why(exc)})") from exc
            return self.db.execute(sql, tuple(params))

    def close(self) -> None:
        self.db.close()


class TransactionLost(sqlite3.OperationalError):
    """A transaction's connection was replaced (storage failed): its changes are gone."""


def _add_records(memory: sqlite3.Connection, disk: sqlite3.Connection) -> None:
    """The audit entries and GPU time recorded in memory, added to the file's (one transaction).
    The rest (containers, GPU states) the daemon relearns from Docker and the next pass."""
    audit = memory.execute("SELECT ts, action, user, container, container_name, grp, slice, reason, details "
                           "FROM audit ORDER BY seq").fetchall()
    usage = memory.execute("SELECT day, user, container, busy_s, idle_s, unknown_s FROM usage").fetchall()
    with disk:
        disk.execute("BEGIN IMMEDIATE")
        disk.executemany("INSERT INTO audit(ts, action, user, container, container_name, grp, slice, reason, "
                         "details) VALUES(?,?,?,?,?,?,?,?,?)", [tuple(r) for r in audit])
        disk.executemany("INSERT INTO usage(day, user, container, busy_s, idle_s, unknown_s) VALUES(?,?,?,?,?,?) "
                         "ON CONFLICT(day, user, container) DO UPDATE SET busy_s=busy_s+excluded.busy_s, "
                         "idle_s=idle_s+excluded.idle_s, unknown_s=unknown_s+excluded.unknown_s",
                         [tuple(r) for r in usage])
        disk.execute("COMMIT")


def _has_sqlite_header(path: str) -> bool:
    """False for a file that exists, is not empty and is not SQLite's; True otherwise."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except FileNotFoundError:
        return True
    return not head or head == b"SQLite format 3\x00"


def _connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    return db


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
