"""The per-container rules, as tables of cases."""

import dataclasses
import datetime as dt

from ds01d.config import OutsideSlicePolicy, Policies, UnownedPolicy, parse_config
from ds01d.rules.enforcement import excess_running, outside_slice_action, unowned_action
from ds01d.rules.limits import resolve
from ds01d.rules.records import ContainerRecord

REC = ContainerRecord(id="a", name="a", image="busybox", owner="alice", owner_signal="label:ds01.user",
                      kind="docker", group="default", slice="ds01-default-alice.slice", cgroup_parent="",
                      gpu_request={}, flags=(), status="running", started_at=1.0)


def rec(cid, status="running", started=1.0, **kw):
    return dataclasses.replace(REC, id=cid, name=cid, status=status, started_at=started, **kw)


def test_excess_running_stops_the_newest():
    records = [rec("a", started=3), rec("b", started=1), rec("c", status="exited", started=5), rec("d", started=2)]
    assert [r.id for r in excess_running(records, 2)] == ["a"]
    assert [r.id for r in excess_running(records, 0)] == ["b", "d", "a"]
    assert excess_running(records, 3) == [] and excess_running(records, None) == []


def test_unowned():
    unowned = rec("u", owner=None)
    assert unowned_action(unowned, Policies()).kind == "warn"
    assert unowned_action(unowned, Policies(unowned=UnownedPolicy.STOP)).kind == "stop"
    assert unowned_action(rec("x"), Policies()) is None
    assert unowned_action(rec("u", owner=None, status="exited"), Policies()) is None


LIMITS = resolve(parse_config("defaults: {container_cpus: 2, container_memory: 4G}\n", "c"), "alice",
                 dt.date(2026, 1, 1))


def test_outside_slice_caps_once():
    action = outside_slice_action(rec("a"), LIMITS, Policies(), {})
    assert (action.kind, action.cpus, action.memory) == ("cap", 2.0, 4 * 2**30)
    assert "outside its owner's slice ds01-default-alice.slice" in action.reason
    # Already capped (by us or tighter by the user): nothing more to do.
    assert outside_slice_action(rec("a"), LIMITS, Policies(), {"NanoCpus": 2 * 10**9, "Memory": 4 * 2**30}) is None
    assert outside_slice_action(rec("a"), LIMITS, Policies(), {"CpuQuota": 50_000, "CpuPeriod": 100_000,
                                                                "Memory": 2**30}) is None
    partial = outside_slice_action(rec("a"), LIMITS, Policies(), {"NanoCpus": 10**9})
    assert (partial.cpus, partial.memory) == (None, 4 * 2**30)


def test_outside_slice_warn_and_inside():
    warn = Policies(outside_slice=OutsideSlicePolicy.WARN)
    assert outside_slice_action(rec("a"), LIMITS, warn, {}).kind == "warn"
    inside = rec("a", cgroup_parent="ds01-default-alice.slice")
    assert outside_slice_action(inside, LIMITS, Policies(), {}) is None
    nocaps = resolve(parse_config("", "c"), "alice", dt.date(2026, 1, 1))
    assert outside_slice_action(rec("a"), nocaps, Policies(), {}).kind == "warn"
