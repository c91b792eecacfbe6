"""A user's slice, created through systemd's D-Bus API, really limits their containers.

Checked as an admin would: `systemctl show` on the slice and the cgroup files of
the container's own cgroup, in a real systemd with a real Docker engine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
USER = "jean-luc.dupont@lab"
SLICE = r"ds01-students-jean\x2dluc.dupont\x40lab.slice"

pytestmark = pytest.mark.box

CONFIG = """\
default_group: students
groups:
  students:
    members: ["jean-luc.dupont@lab"]
    cpus: 1.5
    memory_max: 768M
    memory_high: 640M
    tasks_max: 300
"""


@pytest.fixture
def config_file(box, tmp_path: Path) -> Path:
    path = tmp_path / "ds01.yaml"
    path.write_text(CONFIG)
    return path


def ds01d(box, *args: str, check: bool = True):
    return box.run([box.tool("ds01d"), *args], check=check)


@pytest.mark.cgroup_v2
def test_slice_limits_reach_systemd_and_the_container_cgroup(box, box_cleanup, config_file: Path):
    out = ds01d(box, "limits", USER, "--config", str(config_file), "--apply").stdout
    assert out.startswith(f"{SLICE}: ")
    assert SLICE in box.run(["systemctl", "list-units", "--all", "--plain", "--no-legend", SLICE]).stdout

    v1 = box.cgroup_version() == 1
    memory_prop = "MemoryLimit" if v1 else "MemoryMax"
    shown = box.systemctl_show(SLICE, "CPUQuotaPerSecUSec", memory_prop, "TasksMax", "ActiveState",
                               "ControlGroup")
    assert shown["ActiveState"] == "active"
    assert shown["CPUQuotaPerSecUSec"] == "1.500000s"
    assert shown[memory_prop] == str(768 * 2**20)
    assert shown["TasksMax"] == "300"
    assert shown["ControlGroup"] == rf"/ds01.slice/ds01-students.slice/{SLICE}"

    name = box_cleanup("slice-limits")
    box.docker("run", "-d", "--name", name, "--label", f"ds01.user={USER}",
               f"--cgroup-parent={SLICE}", "busybox:local", "sleep", "600")
    cid = box.docker("inspect", "-f", "{{.Id}}", name).stdout.strip()
    pid = box.docker("inspect", "-f", "{{.State.Pid}}", name).stdout.strip()
    cgroups = box.run(["cat", f"/proc/{pid}/cgroup"]).stdout
    assert f"/ds01.slice/ds01-students.slice/{SLICE}/docker-{cid}.scope" in cgroups

    slice_path = shown["ControlGroup"]
    if v1:
        assert box.read_cgroup("cpu", slice_path, "cpu.cfs_quota_us").strip() == "150000"
        assert box.read_cgroup("memory", slice_path, "memory.limit_in_bytes").strip() == str(768 * 2**20)
        assert box.read_cgroup("pids", slice_path, "pids.max").strip() == "300"
    else:
        assert box.read_cgroup(None, slice_path, "cpu.max").split()[0] == "150000"
        assert box.read_cgroup(None, slice_path, "memory.max").strip() == str(768 * 2**20)
        assert box.read_cgroup(None, slice_path, "memory.high").strip() == str(640 * 2**20)
        assert box.read_cgroup(None, slice_path, "pids.max").strip() == "300"


@pytest.mark.cgroup_v2
def test_changed_limits_are_applied_to_a_live_slice(box, config_file: Path):
    ds01d(box, "limits", USER, "--config", str(config_file), "--apply")
    config_file.write_text(CONFIG.replace("tasks_max: 300", "tasks_max: 222").replace("cpus: 1.5", "cpus: 3"))
    out = ds01d(box, "limits", USER, "--config", str(config_file), "--apply").stdout
    assert f"{SLICE}: updated:" in out
    shown = box.systemctl_show(SLICE, "CPUQuotaPerSecUSec", "TasksMax")
    assert shown == {"CPUQuotaPerSecUSec": "3s", "TasksMax": "222"}


@pytest.mark.cgroup_v2
def test_unlimited_is_infinity(box, tmp_path: Path):
    path = tmp_path / "ds01.yaml"
    path.write_text("defaults: {cpus: null, memory_max: null, memory_high: null, tasks_max: null}\n")
    ds01d(box, "limits", "nolimits", "--config", str(path), "--apply")
    shown = box.systemctl_show("ds01-default-nolimits.slice", "CPUQuotaPerSecUSec", "TasksMax")
    assert shown == {"CPUQuotaPerSecUSec": "infinity", "TasksMax": "infinity"}
    data = json.loads(ds01d(box, "limits", "nolimits", "--config", str(path), "--json").stdout)
    assert data["settings"]["cpus"]["value"] is None
