"""The state database: schema versioning, WAL, and records that survive a reopen."""

import dataclasses
import sqlite3

import pytest

from ds01d.host.state_db import SCHEMA_VERSION, StateError, Store
from ds01d.rules.records import ContainerRecord

REC = ContainerRecord(id="c1", name="n", image="busybox:local", owner="alice", owner_signal="label:ds01.user",
                      kind="docker", group="g", slice="ds01-g-alice.slice", cgroup_parent="",
                      gpu_request={"all_gpus": False, "device_ids": ["1"], "count": 0, "source": "DeviceRequests"},
                      flags=("x",), status="running", started_at=5.0)


def test_round_trip_and_reopen(tmp_path):
    path = str(tmp_path / "state.db")
    store = Store(path)
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.upsert_container(REC, now=1.0)
    store.upsert_container(dataclasses.replace(REC, id="c2", owner=None, status="exited"), now=2.0)
    store.set_meta("last_event", "123.000000001")
    store.add_audit(3.0, "stop", "because", user="alice", container="c1")
    store.close()
    again = Store(path)
    assert again.container("c1") == REC
    assert again.summary() == {"containers": 2, "running": 1, "users": 1, "gpu_running": 1}
    assert again.get_meta("last_event") == "123.000000001"
    assert [tuple(r)[2:5] for r in again.audit()] == [("stop", "alice", "c1")]
    again.mark_removed("c1")
    assert again.live_ids() == {"c2"} and again.containers_of("alice") == []
    again.upsert_container(REC)  # a container that comes back (replayed events) is live again
    assert again.live_ids() == {"c1", "c2"}


def test_newer_schema_is_left_alone_and_ds01d_goes_on_in_memory(tmp_path):
    path = str(tmp_path / "state.db")
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    store = Store(path)
    assert store.file.trouble and "newer than this ds01d" in store.file.trouble
    store.upsert_container(REC, now=1.0)
    assert store.container("c1") == REC
    assert not store.file.try_restore()     # never overwrites a newer ds01d's file
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    assert any("upgrade ds01d" in message for message, bad in store.file.told if bad)
