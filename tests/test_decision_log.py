"""The decision log: what users provoke at will is throttled, and says what it left out."""

from __future__ import annotations

import dataclasses

from ds01d.host.decision_log import DecisionLog, Throttle
from ds01d.host.state_db import Store
from ds01d.rules.records import ContainerRecord


def test_throttle_lets_a_burst_through_then_counts():
    t = Throttle(burst=3, window=60)
    assert [t.admit("allocate-refused", "mallory", 100.0 + i) for i in range(5)] == [0, 0, 0, None, None]
    assert t.admit("allocate-refused", "alice", 105.0) == 0          # others are not held up
    assert t.admit("allocate-wait", "mallory", 105.0) == 0           # nor other actions
    assert t.admit("allocate-refused", "mallory", 161.0) == 2        # the window moved: two were left out
    assert t.admit("allocate-refused", "mallory", 161.5) == 0


def test_throttled_records_reach_neither_journal_nor_audit_beyond_the_burst(tmp_path):
    sent = []
    now = [1000.0]
    log = DecisionLog(Store(str(tmp_path / "state.db")), lambda message, **f: sent.append(f), lambda: now[0])
    for _ in range(50):
        log.record("allocate-refused", "GPU 0 is in use", user="mallory", throttled=True)
        log.record("stop", "not throttled", user="mallory")
    assert sum(f["DS01_ACTION"] == "allocate-refused" for f in sent) == 5
    assert sum(f["DS01_ACTION"] == "stop" for f in sent) == 50
    now[0] += 61
    log.record("allocate-refused", "GPU 0 is in use", user="mallory", throttled=True)
    assert "and 45 more like this before it" in sent[-1]["DS01_REASON"]
    assert len([r for r in log.store.audit(1000) if r["action"] == "allocate-refused"]) == 6


def test_prune_forgets_old_audit_and_long_removed_containers_but_not_usage(tmp_path):
    store = Store(str(tmp_path / "state.db"))
    rec = ContainerRecord(id="old", name="n", image="i", owner="alice", owner_signal="x", kind="docker",
                          group="g", slice=None, cgroup_parent="", gpu_request={}, flags=(), status="exited")
    store.upsert_container(rec, now=10.0)
    store.upsert_container(dataclasses.replace(rec, id="recent"), now=10.0)
    store.upsert_container(dataclasses.replace(rec, id="live", status="running"), now=10.0)
    store.mark_removed("old", now=50.0)
    store.mark_removed("recent", now=150.0)
    store.add_audit(50.0, "stop", "old news", user="alice", container="old")
    store.add_audit(150.0, "stop", "recent news", user="alice", container="recent")
    store.execute("INSERT INTO warnings VALUES ('old', 'idle', 1, 1, 40.0)")
    store.execute("INSERT INTO usage(day, user, container, busy_s) VALUES ('2026-01-01', 'alice', 'old', 5)")
    assert store.prune(100.0) == {"audit": 1, "containers": 1}
    assert [r["reason"] for r in store.audit()] == ["recent news"]
    assert store.container("old") is None and store.container("recent") and store.container("live")
    assert store.execute("SELECT count(*) FROM warnings").fetchone()[0] == 0
    assert store.execute("SELECT count(*) FROM usage").fetchone()[0] == 1
