"""The state database when the disk or the file fails: damaged files are kept aside, an
unwritable disk means memory until it takes writes again, and nothing is lost meanwhile."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ds01d.host.state_db import Store
from ds01d.host.state_file import is_damaged, is_storage_failure
from ds01d.rules.records import ContainerRecord

REC = ContainerRecord(id="c1", name="n", image="busybox:local", owner="alice", owner_signal="label:ds01.user",
                      kind="docker", group="g", slice="ds01-g-alice.slice", cgroup_parent="",
                      gpu_request={}, flags=(), status="running", started_at=5.0)
REPO = Path(__file__).resolve().parent.parent


def test_a_damaged_file_is_kept_aside_and_a_new_one_started(tmp_path):
    path = tmp_path / "state.db"
    path.write_bytes(os.urandom(8192))
    garbage = path.read_bytes()
    store = Store(str(path))
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("state.db.damaged-")]
    assert len(aside) == 1 and aside[0].read_bytes() == garbage
    assert store.file.trouble is None
    store.upsert_container(REC, now=1.0)
    assert Store(str(path)).container("c1") == REC
    message, bad = store.file.told[0]
    assert bad and str(aside[0]) in message and "damaged" in message


def test_a_damaged_wal_is_kept_aside_with_its_file(tmp_path):
    path = tmp_path / "state.db"
    path.write_bytes(b"SQLite format 4\x00" + os.urandom(4000))
    (tmp_path / "state.db-wal").write_bytes(os.urandom(100))
    Store(str(path)).upsert_container(REC, now=1.0)
    names = sorted(p.name.split("-20")[0] + ("-wal" if p.name.endswith("-wal") else "")
                   for p in tmp_path.iterdir() if "damaged" in p.name)
    assert names == ["state.db.damaged", "state.db.damaged-wal"]


def test_no_directory_for_the_file_means_memory_until_there_is_one(tmp_path):
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    store = Store(str(blocker / "state.db"))
    assert store.file.trouble and "running from memory" in store.file.told[0][0]
    store.upsert_container(REC, now=1.0)
    store.add_audit(2.0, "stop", "because", user="alice")
    assert not store.file.try_restore()
    blocker.unlink()
    assert store.file.try_restore()
    assert store.file.trouble is None and "nothing was lost" in store.file.told[-1][0]
    again = Store(str(blocker / "state.db"))
    assert again.container("c1") == REC and [r["action"] for r in again.audit()] == ["stop"]


def test_the_file_and_its_wal_are_root_only(tmp_path):
    path = tmp_path / "state.db"
    path.touch(mode=0o644)
    store = Store(str(path))
    store.upsert_container(REC, now=1.0)
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name


# A disk that fills up mid-run, for real: RLIMIT_FSIZE makes write(2) fail with EFBIG, which
# SQLite reports as a full or failing disk.  In a child process, so pytest keeps its limits.
DISK_FILLS = textwrap.dedent("""\
    import dataclasses, json, os, resource, signal, sys
    from ds01d.host.state_db import Store
    from ds01d.rules.records import ContainerRecord
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    path = sys.argv[1]
    store = Store(path)
    rec = ContainerRecord(id="c0", name="n", image="i", owner="alice", owner_signal="x", kind="docker",
                          group="g", slice=None, cgroup_parent="", gpu_request={}, flags=(), status="running")
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(path) + 64 * 1024, hard))
    n = 0
    while store.file.trouble is None and n < 10000:
        store.upsert_container(dataclasses.replace(rec, id=f"c{n}", name="x" * 500), now=float(n))
        n += 1
    with store.transaction():      # transactions go on in memory too
        store.add_audit(1.0, "stop", "in memory", user="alice")
    written = n
    failed_restore = store.file.try_restore()
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    restored = store.file.try_restore()
    print(json.dumps({"written": written, "trouble_told": store.file.told[0][0], "failed_restore": failed_restore,
                      "restored": restored, "live": len(store.live_ids())}))
    """)


def test_a_disk_that_fills_mid_run_loses_nothing(tmp_path):
    import json
    path = tmp_path / "state.db"
    out = subprocess.run([sys.executable, "-c", DISK_FILLS, str(path)], capture_output=True, text=True,
                         cwd=REPO, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert 0 < got["written"] < 10000 and "running from memory" in got["trouble_told"]
    assert got["failed_restore"] is False and got["restored"] is True
    after = Store(str(path))
    assert len(after.live_ids()) == got["written"] == got["live"]
    assert [r["reason"] for r in after.audit()] == ["in memory"]


@pytest.mark.parametrize("exc, storage, damaged", [
    (sqlite3.OperationalError("attempt to write a readonly database"), True, False),
    (sqlite3.OperationalError("database or disk is full"), True, False),
    (sqlite3.OperationalError("disk I/O error"), True, False),
    (sqlite3.DatabaseError("database disk image is malformed"), True, True),
    (sqlite3.DatabaseError("file is not a database"), True, True),
    (sqlite3.OperationalError("database is locked"), False, False),
    (sqlite3.IntegrityError("UNIQUE constraint failed"), False, False),
    (sqlite3.OperationalError("no such table: x"), False, False),
    (OSError("not sqlite"), False, False),
])
def test_which_errors_are_the_disks(exc, storage, damaged):
    assert (is_storage_failure(exc), is_damaged(exc)) == (storage, damaged)


def test_a_file_that_could_not_be_opened_keeps_its_history_when_it_can(tmp_path, monkeypatch):
    """Opening failed for a reason other than damage (a read-only mount at boot, a lock): ds01d ran
    from an empty memory.  When the file is readable again its history must not be written over:
    what was recorded meanwhile is added to it."""
    import ds01d.host.state_file as state_file
    path = tmp_path / "state.db"
    before = Store(str(path))
    for i in range(5):
        before.add_audit(float(i), "stop", f"old {i}", user="alice")
    before.close()
    real = state_file._has_sqlite_header
    calls = []

    def refuse_once(p):
        calls.append(p)
        if len(calls) == 1:
            raise PermissionError(13, "Permission denied", p)
        return real(p)
    monkeypatch.setattr(state_file, "_has_sqlite_header", refuse_once)
    store = Store(str(path))
    assert store.file.trouble and not store.file.holds_file and store.audit() == []
    store.add_audit(10.0, "stop", "while in memory", user="alice")
    assert store.file.try_restore()
    assert "history is kept" in store.file.told[-1][0]
    assert [r["reason"] for r in Store(str(path)).audit(100)] == ["while in memory"] + [f"old {i}" for i in
                                                                                         range(4, -1, -1)]
