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


def _usage(tmp_path):
    from ds01d.host.state_db import GpuStore

    gpu = GpuStore(Store(str(tmp_path / "state.db")))
    gpu.add_usage("2026-09-30", "alice", "c0", "busy", 500, energy_j=1e6, group="vision")
    gpu.add_usage("2026-10-01", "alice", "c1", "busy", 3600, energy_j=2e6, unmetered_s=600, group="vision")
    gpu.add_usage("2026-10-01", "alice", "c1", "idle", 600, energy_j=1e5, group="vision")
    gpu.add_usage("2026-10-31", "bob", "c2", "unknown", 1200, unmetered_s=1200, group="nlp")
    gpu.add_usage("2026-10-31", "carol", "c3", "busy", 300)        # a row from before migration 6
    gpu.add_usage("2026-11-01", "bob", "c4", "busy", 500, energy_j=1e6, group="nlp")
    return gpu


def test_usage_counts_from_since_up_to_but_not_until(tmp_path):
    gpu = _usage(tmp_path)
    rows = {r["usage_key"]: dict(r) for r in gpu.usage_rows("2026-10-01", "2026-11-01")}
    assert rows["alice"] == {"usage_key": "alice", "containers": 1, "busy_s": 3600.0, "idle_s": 600.0,
                             "unknown_s": 0.0, "energy_j": 2.1e6, "unmetered_s": 600.0}
    assert rows["bob"]["unknown_s"] == 1200.0 and rows["bob"]["busy_s"] == 0.0       # not November's
    assert rows["carol"]["unmetered_s"] == 300.0       # no energy and no unmetered time: never metered
    assert [r["usage_key"] for r in gpu.usage_rows("2026-10-01", "2026-10-02")] == ["alice"]
    assert gpu.usage_rows("2026-10-02", "2026-10-31") == []


def test_usage_per_group_and_energy_known_or_not(tmp_path):
    gpu = _usage(tmp_path)
    groups = gpu.usage_summary("2026-10-01", "2026-11-01", "group")
    assert [(g["group"], g["busy_gpu_seconds"], g["energy_joules"], g["unmetered_gpu_seconds"]) for g in groups] == \
        [("vision", 3600.0, 2.1e6, 600.0), ("nlp", 0.0, None, 1200.0), ("(unknown)", 300.0, None, 300.0)]
    users = gpu.usage_summary("2026-09-01", "2026-12-01")
    assert [(u["user"], u["energy_joules"]) for u in users] == [("alice", 3.1e6), ("bob", 1e6), ("carol", None)]


@pytest.mark.parametrize("by", ["grp; DROP TABLE usage", "container", "User", ""])
def test_usage_groups_only_on_its_own_columns(tmp_path, by):
    gpu = _usage(tmp_path)
    with pytest.raises(KeyError):
        gpu.usage_rows("2026-10-01", "2026-11-01", by)
    assert len(gpu.usage_rows("2026-01-01", "2027-01-01")) == 3


def test_usage_keys_are_the_reports():
    from ds01d.host.state_db import USAGE_KEYS
    from ds01d.rules.usage_window import USAGE_KEYS as REPORT_KEYS

    assert tuple(USAGE_KEYS) == REPORT_KEYS
