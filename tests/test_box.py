"""The test box itself: what other tests rely on must hold, and it must leave no trace.

Every fact here is one SANDBOX.md promises and ds01d's tests build on: systemd as
PID 1, Docker on the systemd cgroup driver, containers landing in user slices, GPU
requests recorded as on a GPU host, journald with custom fields, and a teardown that
removes every process, mount and cgroup of the box.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.box import IMAGE, TEST_LABEL, Box, CommandError, wait_until
from tests.box.box import CGROUP_FS, RUN_ROOT, STATE_ROOT

REPO = Path(__file__).resolve().parent.parent
SLICE_PATH = "ds01.slice/ds01-students.slice/ds01-students-alice.slice"


# ----------------------------------------------------------------------------
# the session box


@pytest.mark.box
def test_systemd_is_pid_1_and_the_system_is_up(box: Box) -> None:
    assert box.run(["cat", "/proc/1/comm"]).stdout.strip() == "systemd"
    state = box.run(["systemctl", "is-system-running"], check=False).stdout.strip()
    assert state in ("running", "degraded")
    for unit in ("docker.service", "containerd.service", "dbus.service", "systemd-journald.service"):
        assert box.systemctl_show(unit, "ActiveState") == {"ActiveState": "active"}, unit


@pytest.mark.cgroup_v2
@pytest.mark.box
def test_docker_uses_the_systemd_cgroup_driver(box: Box) -> None:
    assert "Cgroup Driver: systemd" in box.docker("info").stdout


@pytest.mark.cgroup_v2
@pytest.mark.box
def test_cgroup_parent_puts_the_container_in_the_user_slice(box: Box, box_cleanup) -> None:
    name = box_cleanup("slice")
    box.docker("run", "-d", "--name", name, "--label", TEST_LABEL,
               "--cgroup-parent", "ds01-students-alice.slice", IMAGE, "sleep", "600")
    cid = box.docker("inspect", "-f", "{{.Id}}", name).stdout.strip()
    pid = box.docker("inspect", "-f", "{{.State.Pid}}", name).stdout.strip()
    scope = f"/{SLICE_PATH}/docker-{cid}.scope"
    lines = box.run(["cat", f"/proc/{pid}/cgroup"]).stdout.splitlines()
    # The box's cgroup namespace makes paths look as on a real server: no host prefix.
    assert scope in {line.split(":", 2)[2] for line in lines}, lines
    assert box.cgroup_path(f"docker-{cid}.scope") == scope
    procs = box.read_cgroup("pids" if box.cgroup_version() == 1 else None, scope, "cgroup.procs")
    assert pid in procs.split()


@pytest.mark.box
@pytest.mark.parametrize("gpus, request_", [
    ("device=1", {"Driver": "", "Count": 0, "DeviceIDs": ["1"], "Capabilities": [["gpu"]], "Options": {}}),
    ("all", {"Driver": "", "Count": -1, "DeviceIDs": None, "Capabilities": [["gpu"]], "Options": {}}),
])
def test_gpu_requests_are_recorded_as_on_a_gpu_host(box: Box, box_cleanup, gpus: str,
                                                   request_: dict) -> None:
    name = box_cleanup("gpu")
    box.docker("run", "--name", name, "--gpus", gpus, IMAGE, "true")
    state = json.loads(box.docker("inspect", "-f", "{{json .State}}", name).stdout)
    assert state["ExitCode"] == 0
    requests = box.docker("inspect", "-f", "{{json .HostConfig.DeviceRequests}}", name).stdout
    assert json.loads(requests) == [request_]


@pytest.mark.box
def test_journald_keeps_custom_fields(box: Box) -> None:
    tag = uuid.uuid4().hex
    cursor = box.journal_cursor()
    box.run(["logger", "--journald"], input=f"MESSAGE=hello {tag}\nDS01_TEST={tag}\n")
    box.run(f"echo 'via systemd-cat {tag}' | systemd-cat -t ds01-box-test")
    entries = box.wait_until(lambda: box.journal(f"DS01_TEST={tag}"), 10, what="the logged entry")
    assert [e["MESSAGE"] for e in entries] == [f"hello {tag}"]
    later = box.wait_until(lambda: box.journal("SYSLOG_IDENTIFIER=ds01-box-test", since_cursor=cursor),
                           10, what="the systemd-cat entry")
    assert f"via systemd-cat {tag}" in [e["MESSAGE"] for e in later]


@pytest.mark.cgroup_v2
@pytest.mark.box
def test_read_cgroup_sees_the_limits_systemd_applied(box: Box) -> None:
    unit = f"ds01-boxtest-{uuid.uuid4().hex[:6]}"
    v1 = box.cgroup_version() == 1
    prop = "MemoryLimit=64M" if v1 else "MemoryMax=64M"
    box.run(["systemd-run", f"--unit={unit}", "--slice=ds01-boxtest.slice", "-p", prop,
             "sleep", "300"])
    try:
        path = box.cgroup_path(f"{unit}.service")
        assert path == f"/ds01.slice/ds01-boxtest.slice/{unit}.service"  # "-" nests slices
        limit = box.read_cgroup("memory", path, "memory.limit_in_bytes" if v1 else "memory.max")
        assert limit.strip() == str(64 * 2**20)
        main_pid = box.systemctl_show(f"{unit}.service", "MainPID")["MainPID"]
        assert main_pid in box.read_cgroup("pids" if v1 else None, path, "cgroup.procs").split()
    finally:
        box.run(["systemctl", "stop", f"{unit}.service"], check=False)


@pytest.mark.box
def test_installed_unit_runs_and_logs(box: Box) -> None:
    box.install_unit("ds01-boxtest.service",
                     "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/echo installed\n")
    box.run(["systemctl", "restart", "ds01-boxtest.service"])
    assert box.systemctl_show("ds01-boxtest.service", "ActiveState")["ActiveState"] == "active"
    box.wait_until(lambda: any(e.get("MESSAGE") == "installed"
                               for e in box.journal(unit="ds01-boxtest.service")),
                   10, what="the unit's output in the journal")


@pytest.mark.box
def test_failed_command_reports_everything(box: Box) -> None:
    with pytest.raises(CommandError) as err:
        box.run("echo out; echo err >&2; exit 7")
    message = str(err.value)
    assert err.value.returncode == 7
    for part in ("echo out; echo err >&2; exit 7", "code 7", "out", "err"):
        assert part in message
    assert box.run("exit 7", check=False).returncode == 7


def test_wait_until_names_what_it_waited_for() -> None:
    with pytest.raises(TimeoutError, match="the impossible"):
        wait_until(lambda: False, 0.1, what="the impossible")
    assert wait_until(lambda: 42, 1) == 42


# ----------------------------------------------------------------------------
# boxes of their own: teardown, reboot, stale boxes, the CLI


def host_mounts() -> set[str]:
    return set(Path("/proc/self/mountinfo").read_text().splitlines())


def host_cgroup_dirs() -> set[str]:
    found: set[str] = set()
    for hierarchy in CGROUP_FS.iterdir():
        if hierarchy.is_dir() and not hierarchy.is_symlink():
            found.update(root for root, _dirs, _files in os.walk(hierarchy))
    return found


def descendants(pid: int) -> dict[int, str]:
    """Host PIDs of a process and all its descendants, with their start times."""
    parents: dict[int, int] = {}
    starts: dict[int, str] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(entry)], starts[int(entry)] = int(fields[1]), fields[19]
    tree, todo = {}, [pid]
    while todo:
        p = todo.pop()
        tree[p] = starts.get(p, "")
        todo += [c for c, parent in parents.items() if parent == p]
    return tree


def still_alive(pids: dict[int, str]) -> list[int]:
    alive = []
    for pid, start in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[19] == start and fields[0] != "Z":
            alive.append(pid)
    return alive


def changed_under_etc(since: float) -> list[str]:
    changed = []
    for root, dirs, files in os.walk("/etc"):
        for entry in [root, *(os.path.join(root, f) for f in files)]:
            st = os.lstat(entry)
            if max(st.st_mtime, st.st_ctime) >= since:
                changed.append(entry)
    return changed


@pytest.mark.box
def test_teardown_leaves_no_process_mount_or_cgroup_behind() -> None:
    name = "pytest-teardown"
    Box.destroy(name)
    mounts, cgroups, since = host_mounts(), host_cgroup_dirs(), time.time()
    dev_log = os.path.lexists("/dev/log")
    extra = {"ds01-extra.service":
             "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n"}
    started = time.monotonic()
    box = Box.boot(name, extra_units=extra)
    boot_s = time.monotonic() - started
    try:
        assert box.systemctl_show("ds01-extra.service", "ActiveState")["ActiveState"] == "active"
        box.docker("run", "-d", "--cgroup-parent", "ds01-students-alice.slice",
                   IMAGE, "sleep", "600")
        box.run("setsid sleep 600 </dev/null >/dev/null 2>&1 &")
        procs = descendants(box.pid)
        names = {Path(f"/proc/{p}/comm").read_text().strip() for p in procs}
        assert {"systemd", "dockerd", "containerd", "containerd-shim", "sleep"} <= names, names
        assert any(f"ds01-box/{name}/" in d for d in host_cgroup_dirs() - cgroups)
    finally:
        started = time.monotonic()
        box.shutdown()
        teardown_s = time.monotonic() - started
    assert still_alive(procs) == []
    assert host_mounts() - mounts == set()
    # Neither the box's own groups nor any unit's group elsewhere on the host survive.
    assert [d for d in host_cgroup_dirs() - cgroups if f"ds01-box/{name}" in d
            or d.endswith((".slice", ".scope", ".service"))] == []
    assert not (RUN_ROOT / name).exists()
    assert changed_under_etc(since) == []
    assert os.path.lexists("/dev/log") == dev_log  # journald's socket unit links it
    assert box.leftovers() == []
    box.shutdown()  # idempotent
    print(f"boot {boot_s:.2f} s, teardown {teardown_s:.2f} s")


@pytest.mark.box
def test_reboot_and_stale_boxes_of_the_same_name() -> None:
    name = "pytest-stale"
    Box.boot(name).shutdown()
    second = Box.boot(name)  # boot after shutdown
    second.docker("run", "-d", IMAGE, "sleep", "600")
    second_procs = descendants(second.pid)
    second.detach()  # as if its test run had crashed: left running, pid file in place

    third = Box.boot(name)  # must clear the stale live box first
    try:
        assert still_alive(second_procs) == []
        assert third.docker("ps", "-aq").stdout.strip() == ""  # its containers are gone too
        os.kill(third.pid, signal.SIGKILL)  # crash: pid file, cgroups, run dir stay
        wait_until(lambda: not third.is_running(), 10, what="the killed box to die")
        assert (RUN_ROOT / name / "box.json").exists()
        fourth = Box.boot(name)  # must clear the dead box's traces
        assert fourth.run(["systemctl", "is-system-running"], check=False).stdout.strip() in (
            "running", "degraded")
        third.shutdown()  # a stale handle must not touch the newer box
        assert fourth.is_running()
        fourth.shutdown()
        assert fourth.leftovers() == []
        assert (STATE_ROOT / name / "docker").is_dir()  # the data-root (and image) persists
    finally:
        Box.destroy(name)


def box_cli(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tests.box", *args], cwd=REPO, input=input,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.box
def test_cli_up_exec_status_down() -> None:
    name = "pytest-cli"
    try:
        up = box_cli("up", name)
        assert up.returncode == 0, up.stderr
        assert f"exec {name}" in up.stdout
        assert box_cli("status", name).returncode == 0  # survived the `up` process
        assert box_cli("exec", name, "--", "sh", "-c", "exit 3").returncode == 3
        assert box_cli("exec", name, "--", "cat", input="through\n").stdout == "through\n"
        assert box_cli("exec", name, "--", "hostname").stdout.strip() == f"ds01-box-{name}"
        again = box_cli("up", name)
        assert again.returncode == 1 and "already running" in again.stderr
        assert box_cli("down", name).returncode == 0
        gone = box_cli("status", name)
        assert gone.returncode == 1 and gone.stderr.count("\n") == 1
        assert "Traceback" not in gone.stderr and "not running" in gone.stderr
    finally:
        Box.destroy(name)
