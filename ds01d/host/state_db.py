"""ds01d's state database: what Docker cannot tell after a restart.

Docker is the truth for which containers exist; SQLite keeps what ds01d inferred
or decided about them (owner and the signal that decided, kind, GPU request,
flags), the audit trail of every action, and where in the event stream ds01d
stopped reading.  One process writes it (the daemon's main loop); WAL lets the
status readers in without blocking that writer, and each change is one
transaction, so a kill -9 loses at most the change in flight.  Where the file
lives, and what happens when it is damaged or the disk refuses, is
`ds01d.host.state_file`'s concern.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from typing import Any

from ds01d.host.state_file import SchemaTooNew, StateFile, Tell
from ds01d.rules.records import ContainerRecord, GpuState

_MIGRATIONS: tuple[str, ...] = (
    # 1: containers, audit, meta
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE containers (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        image TEXT NOT NULL DEFAULT '',
        owner TEXT,
        owner_signal TEXT,
        kind TEXT NOT NULL,
        grp TEXT,
        slice TEXT,
        cgroup_parent TEXT NOT NULL DEFAULT '',
        gpu_request TEXT NOT NULL DEFAULT '{}',
        flags TEXT NOT NULL DEFAULT '[]',
        status TEXT NOT NULL,
        created_at REAL,
        started_at REAL,
        finished_at REAL,
        first_seen REAL NOT NULL,
        updated REAL NOT NULL,
        removed_at REAL
    );
    CREATE INDEX containers_owner ON containers(owner) WHERE removed_at IS NULL;
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        action TEXT NOT NULL,
        user TEXT,
        container TEXT,
        container_name TEXT,
        grp TEXT,
        slice TEXT,
        reason TEXT NOT NULL,
        details TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_user ON audit(user, ts);
    """,
    # 2: GPU state per container, warnings sent, GPU-seconds
    """
    ALTER TABLE containers ADD COLUMN pid INTEGER;
    ALTER TABLE containers ADD COLUMN protected INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE gpu_state (
        container TEXT PRIMARY KEY,
        units TEXT NOT NULL DEFAULT '[]',
        idle_since REAL,
        verdict TEXT,
        why TEXT,
        activity REAL,
        released REAL,
        updated REAL NOT NULL
    );
    CREATE TABLE warnings (
        container TEXT NOT NULL,
        rule TEXT NOT NULL,
        deadline INTEGER NOT NULL,
        lead INTEGER NOT NULL,
        sent REAL NOT NULL,
        PRIMARY KEY (container, rule, deadline, lead)
    );
    CREATE TABLE usage (
        day TEXT NOT NULL,
        user TEXT NOT NULL,
        container TEXT NOT NULL,
        busy_s REAL NOT NULL DEFAULT 0,
        idle_s REAL NOT NULL DEFAULT 0,
        unknown_s REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (day, user, container)
    );
    """,
    # 3: deadline extensions granted through the status socket
    """
    CREATE TABLE extensions (
        container TEXT NOT NULL,
        rule TEXT NOT NULL,
        seconds INTEGER NOT NULL,
        by_user TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX extensions_container ON extensions(container, rule);
    """,
    # 4: allocations handed out by `ds01d allocate` / `ds01 run`
    """
    CREATE TABLE allocations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user TEXT NOT NULL,
        units TEXT NOT NULL,
        created REAL NOT NULL,
        expires REAL NOT NULL,
        container TEXT,
        status TEXT NOT NULL
    );
    CREATE INDEX allocations_pending ON allocations(status) WHERE status = 'pending';
    """,
    # 5: the run (State.StartedAt) whose start was judged, so a replayed start event or a
    # restart never judges it again (nor clears its extensions and idle clock)
    """
    ALTER TABLE gpu_state ADD COLUMN judged_run REAL;
    """,
    # 6: GPU energy (joules, shared out per container) and GPU-seconds on GPUs without an energy
    # counter; the owner's group at the time, for the monthly report per group
    """
    ALTER TABLE usage ADD COLUMN energy_j REAL NOT NULL DEFAULT 0;
    ALTER TABLE usage ADD COLUMN unmetered_s REAL NOT NULL DEFAULT 0;
    ALTER TABLE usage ADD COLUMN grp TEXT;
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)


class StateError(Exception):
    """The database cannot be read (`ds01d usage` before ds01d ever ran)."""


def prepare(db: sqlite3.Connection) -> None:
    """Pragmas and migrations for a fresh connection; SchemaTooNew leaves the file alone."""
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=5000")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(f"it has schema {version}, newer than this ds01d's ({SCHEMA_VERSION})")
    for number in range(version, SCHEMA_VERSION):
        # executescript commits what is open first, so the script carries its own transaction.
        db.executescript(f"BEGIN IMMEDIATE; {_MIGRATIONS[number]}; PRAGMA user_version={number + 1}; COMMIT;")


class Store:
    """The state database at `path`, created and migrated on open.

    `tell` hears what happened to the file (moved aside, in memory, back on disk); until
    one is given, `file.told` keeps it."""

    def __init__(self, path: str, readonly: bool = False, tell: Tell | None = None):
        self.path = path
        self.file: StateFile | None = None
        if readonly:
            if not os.path.exists(path):
                raise StateError("no state database yet (has ds01d run?)")
            self._ro = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
            self._ro.row_factory = sqlite3.Row
            return
        self.file = StateFile(path, prepare, tell)

    @property
    def db(self) -> sqlite3.Connection:
        return self.file.db if self.file is not None else self._ro

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        return self.file.execute(sql, params) if self.file is not None else self._ro.execute(sql, params)

    def close(self) -> None:
        self.db.close()

    def transaction(self) -> "_Transaction":
        return _Transaction(self)

    # --- meta ---------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.execute("INSERT INTO meta(key, value) VALUES(?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value))

    # --- containers ---------------------------------------------------------

    def upsert_container(self, rec: ContainerRecord, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.execute(
            """INSERT INTO containers(id, name, image, owner, owner_signal, kind, grp, slice, cgroup_parent,
                   gpu_request, flags, status, created_at, started_at, finished_at, first_seen, updated,
                   pid, protected)
               VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
               ON CONFLICT(id) DO UPDATE SET name=excluded.name, image=excluded.image, owner=excluded.owner,
                   owner_signal=excluded.owner_signal, kind=excluded.kind, grp=excluded.grp,
                   slice=excluded.slice, cgroup_parent=excluded.cgroup_parent,
                   gpu_request=excluded.gpu_request, flags=excluded.flags, status=excluded.status,
                   created_at=excluded.created_at, started_at=excluded.started_at,
                   finished_at=excluded.finished_at, updated=excluded.updated, removed_at=NULL,
                   pid=excluded.pid, protected=excluded.protected""",
            (rec.id, rec.name, rec.image, rec.owner, rec.owner_signal, rec.kind, rec.group, rec.slice,
             rec.cgroup_parent, json.dumps(rec.gpu_request, sort_keys=True), json.dumps(list(rec.flags)),
             rec.status, rec.created_at, rec.started_at, rec.finished_at, now, now, rec.pid, int(rec.protected)))

    def mark_removed(self, container_id: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.execute("UPDATE containers SET removed_at=?, status='removed', updated=? "
                        "WHERE id=? AND removed_at IS NULL", (now, now, container_id))

    def live_containers(self) -> list[ContainerRecord]:
        rows = self.execute("SELECT * FROM containers WHERE removed_at IS NULL ORDER BY first_seen")
        return [_record(r) for r in rows]

    def containers_of(self, owner: str) -> list[ContainerRecord]:
        rows = self.execute("SELECT * FROM containers WHERE removed_at IS NULL AND owner=?", (owner,))
        return [_record(r) for r in rows]

    def summary(self) -> dict[str, int]:
        """Counts for the daemon's STATUS= line, in one query."""
        row = self.execute(
            """SELECT count(*), coalesce(sum(status='running'), 0), count(DISTINCT owner),
                      coalesce(sum(status='running' AND gpu_request LIKE '%"source": "%'), 0)
               FROM containers WHERE removed_at IS NULL""").fetchone()
        return {"containers": row[0], "running": row[1], "users": row[2], "gpu_running": row[3]}

    def container(self, container_id: str) -> ContainerRecord | None:
        row = self.execute("SELECT * FROM containers WHERE id=?", (container_id,)).fetchone()
        return _record(row) if row else None

    def live_ids(self) -> set[str]:
        return {r[0] for r in self.execute("SELECT id FROM containers WHERE removed_at IS NULL")}

    # --- audit --------------------------------------------------------------

    def add_audit(self, ts: float, action: str, reason: str, *, user: str | None = None,
                  container: str | None = None, container_name: str | None = None, group: str | None = None,
                  slice_name: str | None = None, details: dict[str, Any] | None = None) -> None:
        self.execute(
            "INSERT INTO audit(ts, action, user, container, container_name, grp, slice, reason, details) "
            "VALUES(?,?,?,?,?,?,?,?,?)",
            (ts, action, user, container, container_name, group, slice_name, reason,
             json.dumps(details or {}, sort_keys=True)))

    def prune(self, before: float) -> dict[str, int]:
        """Forget audit entries, and containers removed, before `before`, with what ds01d kept
        about those containers; GPU-seconds (`usage`) stay for the monthly report."""
        with self.transaction():
            gone = "SELECT id FROM containers WHERE removed_at IS NOT NULL AND removed_at < ?"
            counts = {"audit": self.execute("DELETE FROM audit WHERE ts < ?", (before,)).rowcount}
            for table in ("gpu_state", "warnings", "extensions"):
                self.execute(f"DELETE FROM {table} WHERE container IN ({gone})", (before,))
            self.execute("DELETE FROM allocations WHERE status != 'pending' AND created < ?", (before,))
            counts["containers"] = self.execute(
                "DELETE FROM containers WHERE removed_at IS NOT NULL AND removed_at < ?", (before,)).rowcount
        return counts

    def audit(self, limit: int = 100, user: str | None = None) -> list[sqlite3.Row]:
        if user is None:
            return self.execute("SELECT * FROM audit ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        return self.execute("SELECT * FROM audit WHERE user=? ORDER BY seq DESC LIMIT ?",
                               (user, limit)).fetchall()


class GpuStore:
    """The GPU tables: per-container state, warnings sent, GPU-seconds."""

    def __init__(self, store: Store):
        self.store = store

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        return self.store.execute(sql, params)

    def get(self, container: str) -> GpuState:
        row = self.execute("SELECT * FROM gpu_state WHERE container=?", (container,)).fetchone()
        if row is None:
            return GpuState(container)
        return GpuState(container, tuple(json.loads(row["units"])), row["idle_since"], row["verdict"], row["why"],
                        row["activity"], row["released"])

    def all(self) -> dict[str, GpuState]:
        return {r["container"]: GpuState(r["container"], tuple(json.loads(r["units"])), r["idle_since"],
                                         r["verdict"], r["why"], r["activity"], r["released"])
                for r in self.execute("SELECT * FROM gpu_state")}

    def put(self, state: GpuState, now: float) -> None:
        self.execute(
            """INSERT INTO gpu_state(container, units, idle_since, verdict, why, activity, released, updated)
               VALUES(?,?,?,?,?,?,?,?) ON CONFLICT(container) DO UPDATE SET units=excluded.units,
               idle_since=excluded.idle_since, verdict=excluded.verdict, why=excluded.why,
               activity=excluded.activity, released=excluded.released, updated=excluded.updated""",
            (state.container, json.dumps(list(state.units)), state.idle_since, state.verdict, state.why,
             state.activity, state.released, now))

    def judged_run(self, container: str) -> float | None:
        row = self.execute("SELECT judged_run FROM gpu_state WHERE container=?", (container,)).fetchone()
        return row[0] if row else None

    def set_judged_run(self, container: str, started_at: float, now: float) -> None:
        self.execute("INSERT INTO gpu_state(container, judged_run, updated) VALUES(?,?,?) ON CONFLICT(container) "
                     "DO UPDATE SET judged_run=excluded.judged_run", (container, started_at, now))

    def warned(self, container: str, rule: str, deadline: float) -> set[int]:
        rows = self.execute("SELECT lead FROM warnings WHERE container=? AND rule=? AND deadline=?",
                               (container, rule, int(deadline)))
        return {r[0] for r in rows}

    def add_warning(self, container: str, rule: str, deadline: float, lead: int, now: float) -> None:
        self.execute("INSERT OR IGNORE INTO warnings(container, rule, deadline, lead, sent) VALUES(?,?,?,?,?)",
                        (container, rule, int(deadline), lead, now))

    def extensions(self) -> dict[tuple[str, str], int]:
        """Seconds granted per (container, rule), for the containers' current run."""
        rows = self.execute("SELECT container, rule, sum(seconds) FROM extensions GROUP BY container, rule")
        return {(r[0], r[1]): r[2] for r in rows}

    def add_extension(self, container: str, rule: str, seconds: int, by_user: str, now: float) -> None:
        self.execute("INSERT INTO extensions(container, rule, seconds, by_user, at) VALUES(?,?,?,?,?)",
                        (container, rule, seconds, by_user, now))

    def clear_extensions(self, container: str) -> None:
        self.execute("DELETE FROM extensions WHERE container=?", (container,))

    def add_allocation(self, user: str, units: list[str], now: float, expires: float) -> int:
        cur = self.execute("INSERT INTO allocations(user, units, created, expires, status) "
                              "VALUES(?,?,?,?,'pending')", (user, json.dumps(units), now, expires))
        return int(cur.lastrowid or 0)

    def pending_allocations(self) -> list[tuple[int, str, tuple[str, ...], float]]:
        """(id, user, unit uuids, expires) of allocations no container has claimed yet."""
        rows = self.execute("SELECT id, user, units, expires FROM allocations WHERE status='pending'")
        return [(r[0], r[1], tuple(json.loads(r[2])), r[3]) for r in rows]

    def close_allocation(self, allocation_id: int, status: str, container: str | None = None) -> bool:
        """Close a pending allocation; False if it was not pending (claimed, expired, unknown)."""
        cur = self.execute("UPDATE allocations SET status=?, container=? WHERE id=? AND status='pending'",
                              (status, container, allocation_id))
        return cur.rowcount > 0

    def first_warned(self, container: str, rule: str) -> float | None:
        row = self.execute("SELECT min(sent) FROM warnings WHERE container=? AND rule=?", (container, rule))
        return row.fetchone()[0]

    def add_usage(self, day: str, user: str, container: str, state: str, gpu_seconds: float,
                  energy_j: float = 0.0, unmetered_s: float = 0.0, group: str | None = None) -> None:
        """GPU-seconds of one container on one day, by verdict (busy, idle, unknown), with the
        energy shared out to it (`energy_j`) and its GPU-seconds on GPUs without an energy
        counter (`unmetered_s`: energy unknown there, not 0)."""
        column = {"busy": "busy_s", "idle": "idle_s"}.get(state, "unknown_s")
        self.execute(f"INSERT INTO usage(day, user, container, {column}, energy_j, unmetered_s, grp) "
                     "VALUES(?,?,?,?,?,?,?) ON CONFLICT(day, user, container) DO UPDATE SET "
                     f"{column}={column}+excluded.{column}, energy_j=energy_j+excluded.energy_j, "
                     "unmetered_s=unmetered_s+excluded.unmetered_s, grp=coalesce(excluded.grp, grp)",
                     (day, user, container, gpu_seconds, energy_j, unmetered_s, group))

    def usage_totals(self) -> list[sqlite3.Row]:
        """Every user's totals since ds01d began (the metrics' counters start from them, so they
        survive restarts): user, a group it was in (grp), busy_s, idle_s, unknown_s, energy_j, unmetered_s."""
        return self.execute(
            """SELECT user, max(grp) AS grp, sum(busy_s) AS busy_s, sum(idle_s) AS idle_s,
                      sum(unknown_s) AS unknown_s, sum(energy_j) AS energy_j, sum(unmetered_s) AS unmetered_s
               FROM usage GROUP BY user""").fetchall()

    def usage_rows(self, since_day: str, until_day: str, by: str = "user") -> list[sqlite3.Row]:
        """GPU-seconds, energy and unmetered GPU-seconds per user or per group (`by`) on the days
        from `since_day` up to, not including, `until_day` (ISO dates), the largest first.

        The column is picked from USAGE_KEYS (a KeyError for anything else), never written
        from the caller's text; the days go in as parameters.  A row recorded before migration 6
        has no group: it counts under "(unknown)" rather than vanishing.  Nor has it any energy:
        a container's day with GPU time but neither joules nor unmetered seconds was never
        metered (a GPU draws tens of watts even idle), so all its GPU time counts as unmetered,
        and its energy shows as unknown, not as 0."""
        key = USAGE_KEYS[by]
        return self.execute(
            f"""SELECT {key} AS usage_key, count(DISTINCT container) AS containers, sum(busy_s) AS busy_s,
                       sum(idle_s) AS idle_s, sum(unknown_s) AS unknown_s, sum(energy_j) AS energy_j,
                       sum(CASE WHEN energy_j = 0 AND unmetered_s = 0 THEN busy_s + idle_s + unknown_s
                                ELSE unmetered_s END) AS unmetered_s
                FROM usage WHERE day >= ? AND day < ? GROUP BY usage_key
                ORDER BY sum(busy_s + idle_s + unknown_s) DESC, usage_key""", (since_day, until_day)).fetchall()

    def usage_summary(self, since_day: str, until_day: str, by: str = "user") -> list[dict[str, Any]]:
        """`usage_rows` as `ds01d usage --json` shows them (GPU-seconds and joules, rounded).

        `energy_joules` is None where all of a row's GPU time was on GPUs without an energy
        counter: its energy is unknown, and 0 would say it used none."""
        return [{by: r["usage_key"], "containers": r["containers"], "busy_gpu_seconds": round(r["busy_s"], 1),
                 "idle_gpu_seconds": round(r["idle_s"], 1), "unknown_gpu_seconds": round(r["unknown_s"], 1),
                 "energy_joules": None if all_unmetered(r) else round(r["energy_j"], 1),
                 "unmetered_gpu_seconds": round(r["unmetered_s"], 1)}
                for r in self.usage_rows(since_day, until_day, by)]


#: `ds01d usage --by`: the SQL expression each key is grouped on.
USAGE_KEYS = {"user": "user", "group": "coalesce(grp, '(unknown)')"}


def all_unmetered(row: sqlite3.Row) -> bool:
    """No GPU-second of the row was metered (sums of many small floats: a relative tolerance)."""
    total = row["busy_s"] + row["idle_s"] + row["unknown_s"]
    return row["unmetered_s"] > 0 and row["unmetered_s"] >= total * (1 - 1e-9)


def _record(row: sqlite3.Row) -> ContainerRecord:
    return ContainerRecord(
        id=row["id"], name=row["name"], image=row["image"], owner=row["owner"],
        owner_signal=row["owner_signal"], kind=row["kind"], group=row["grp"], slice=row["slice"],
        cgroup_parent=row["cgroup_parent"], gpu_request=json.loads(row["gpu_request"]),
        flags=tuple(json.loads(row["flags"])), status=row["status"], created_at=row["created_at"],
        started_at=row["started_at"], finished_at=row["finished_at"], pid=row["pid"],
        protected=bool(row["protected"]))


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on an exception; never finished on a
    connection other than the one it began on (the state moved to memory meanwhile)."""

    def __init__(self, store: Store):
        self.store = store
        self.generation = -1

    def __enter__(self) -> None:
        self.store.execute("BEGIN IMMEDIATE")
        self.generation = self.store.file.generation if self.store.file else 0

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if self.store.file is not None and self.store.file.generation != self.generation:
            return
        self.store.execute("ROLLBACK" if exc_type else "COMMIT")


