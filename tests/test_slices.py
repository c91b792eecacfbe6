"""How limits become systemd properties on each cgroup version (the D-Bus calls run in the box tests)."""

from ds01d.host.slices import INFINITY, CgroupMode, SliceResult, dbus_properties, detect_cgroup_mode

LIMITS = {"CPUQuotaPerSecUSec": 2_000_000, "MemoryMax": 2**30, "MemoryHigh": None, "TasksMax": 100}


def test_v2_uses_memory_max_and_high():
    props, ignored = dbus_properties(LIMITS, CgroupMode.V2)
    assert props == {"CPUQuotaPerSecUSec": 2_000_000, "MemoryMax": 2**30, "MemoryHigh": INFINITY, "TasksMax": 100}
    assert ignored == ()


def test_v1_uses_memory_limit_and_says_high_is_not_enforced():
    props, ignored = dbus_properties(LIMITS, CgroupMode.V1)
    assert props == {"CPUQuotaPerSecUSec": 2_000_000, "MemoryLimit": 2**30, "TasksMax": 100}
    assert ignored == ("MemoryHigh",)


def test_mismatches_are_spelled_out():
    result = SliceResult("s.slice", False, {"TasksMax": 100, "MemoryLimit": INFINITY},
                         {"TasksMax": 90, "MemoryLimit": INFINITY})
    assert result.mismatches == ["TasksMax: wanted 100, systemd has 90"]


def test_detect(tmp_path):
    assert detect_cgroup_mode(str(tmp_path)) is CgroupMode.V1
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    assert detect_cgroup_mode(str(tmp_path)) is CgroupMode.V2
