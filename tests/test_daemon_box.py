"""ds01d as a systemd service in the box, against a real Docker engine.

What an admin would check: the state database and the journal for what ds01d
recorded and decided, `systemctl show` and cgroup files for limits, `docker ps`
and `docker inspect` for what it did to containers.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import time

import pytest

from tests.service import Service, ids_of

pytestmark = pytest.mark.box

CONFIG = textwrap.dedent("""\
    daemon:
      state_dir: {state_dir}
      sampling_interval: 1s
    policies:
      outside_slice: cap
      unowned: warn
      sigterm_grace: 1s
    defaults:
      cpus: 2
      memory_max: 1G
      memory_high: 900M
      tasks_max: 512
      container_cpus: 1
      container_memory: 512M
      max_containers: 2
    default_group: students
    groups:
      students:
        members: [alice, bob, carol, dave, erin, mallory]
    """)


@pytest.fixture(scope="module")
def service(box):
    svc = Service(box, CONFIG)
    svc.reset(CONFIG)
    yield svc
    svc.stop()


@pytest.fixture
def fresh(service):
    """A config back to CONFIG and a running daemon, whatever the previous test did."""
    service.write_config(CONFIG)
    if service.show("ActiveState")["ActiveState"] != "active":
        service.reset(CONFIG)
    else:
        service.box.run(["systemctl", "reload", "ds01d.service"])
    return service


def run(box, cleanup, name, *args, cmd=("sleep", "600")):
    box.docker("run", "-d", "--name", cleanup(name), *args, "busybox:local", *cmd)
    return ids_of(box, [name])[name]


def test_ready_status_line_and_hardening_in_force(fresh):
    shown = fresh.show("ActiveState", "SubState", "StatusText", "Type", "WatchdogUSec", "ProtectSystem")
    assert (shown["ActiveState"], shown["Type"], shown["ProtectSystem"]) == ("active", "notify", "strict")
    assert "Docker connected" in shown["StatusText"] and "last error: none" in shown["StatusText"]


def test_every_way_of_creating_a_container_gets_its_owner(fresh, box, box_cleanup):
    ids = {
        "labelled": run(box, box_cleanup, "labelled", "--label", "ds01.user=alice"),
        "proj._.carol": run(box, box_cleanup, "proj._.carol"),
        "sliced": run(box, box_cleanup, "sliced", "--cgroup-parent", "ds01-students-dave.slice"),
        "composed": run(box, box_cleanup, "composed", "--label", "com.docker.compose.project=p",
                        "--label", "com.docker.compose.project.working_dir=/home/erin/p"),
        "nobody": run(box, box_cleanup, "nobody"),
    }
    expected = {
        "labelled": ("alice", "label:ds01.user", "docker"),
        "proj._.carol": ("carol", "name:aime", "docker"),
        "sliced": ("dave", "cgroup-parent", "docker"),
        "composed": ("erin", "label:compose.working_dir", "compose"),
        "nobody": (None, None, "docker"),
    }
    for name, cid in ids.items():
        owner, signal_, kind = expected[name]
        rec = fresh.wait_record(cid, 1.0, owner=owner, owner_signal=signal_, kind=kind)
        assert rec["status"] == "running"
    assert json.loads(fresh.record(ids["nobody"])["flags"]) == ["unowned"]
    warn = fresh.wait_decision(DS01_CONTAINER=ids["nobody"], DS01_ACTION="warn-unowned")
    assert "no owner signal" in warn["DS01_REASON"]


def test_raw_api_devcontainer(fresh, box, box_cleanup):
    name = box_cleanup("devc")
    code = textwrap.dedent(f"""\
        import docker
        api = docker.APIClient(version="auto")
        c = api.create_container("busybox:local", ["sleep", "600"], name={name!r}, labels={{
            "devcontainer.local_folder": "/home/bob/src/thesis",
            "devcontainer.config_file": "/home/bob/src/thesis/.devcontainer/devcontainer.json"}},
            host_config=api.create_host_config(device_requests=[
                docker.types.DeviceRequest(device_ids=["1"], capabilities=[["gpu"]])]))
        api.start(c["Id"])
        print(c["Id"])
        """)
    cid = box.run([box.python, "-c", code]).stdout.strip()
    rec = fresh.wait_record(cid, 1.0, owner="bob", owner_signal="label:devcontainer.local_folder",
                            kind="devcontainer")
    assert json.loads(rec["gpu_request"]) == {"all_gpus": False, "count": 0, "device_ids": ["1"],
                                              "source": "DeviceRequests"}


@pytest.mark.cgroup_v2
def test_slice_limits_and_live_reload(fresh, box, box_cleanup):
    cid = run(box, box_cleanup, "alice-limits", "--label", "ds01.user=alice",
              "--cgroup-parent", "ds01-students-alice.slice")
    fresh.wait_record(cid, 1.0, owner="alice")
    entry = fresh.wait_decision(DS01_USER="alice", DS01_ACTION="slice-limits")
    assert entry["DS01_SLICE"] == "ds01-students-alice.slice" and entry["DS01_GROUP"] == "students"
    shown = box.systemctl_show("ds01-students-alice.slice", "CPUQuotaPerSecUSec", "TasksMax", "ControlGroup")
    assert (shown["CPUQuotaPerSecUSec"], shown["TasksMax"]) == ("2s", "512")
    cpu_dir = "cpu" if box.cgroup_version() == 1 else None
    cpu_file = "cpu.cfs_quota_us" if cpu_dir else "cpu.max"
    assert box.read_cgroup(cpu_dir, shown["ControlGroup"], cpu_file).split()[0] == "200000"

    fresh.write_config(CONFIG.replace("cpus: 2", "cpus: 3").replace("tasks_max: 512", "tasks_max: 640"))
    box.run(["systemctl", "reload", "ds01d.service"])
    box.wait_until(lambda: box.systemctl_show("ds01-students-alice.slice", "CPUQuotaPerSecUSec",
                                              "TasksMax") == {"CPUQuotaPerSecUSec": "3s", "TasksMax": "640"},
                   5.0, what="reloaded limits on alice's slice")
    assert box.read_cgroup(cpu_dir, shown["ControlGroup"], cpu_file).split()[0] == "300000"


def test_reload_with_broken_yaml_keeps_the_old_config(fresh, box):
    """The refusal reaches the admin where they typed: `systemctl reload` fails, and
    `systemctl status` shows why; a good reload afterwards clears it from STATUS=."""
    fresh.write_config(CONFIG + "defaults: [\n")
    refused = box.run(["systemctl", "reload", "ds01d.service"], check=False)
    assert refused.returncode != 0 and "ds01d.service" in refused.stderr
    entry = fresh.wait_decision(DS01_ACTION="reload-refused")
    assert f"{fresh.config_path}:" in entry["DS01_REASON"]
    assert "bad YAML" in entry["DS01_REASON"] or "duplicate key" in entry["DS01_REASON"]
    status = box.run(["systemctl", "status", "--no-pager", "-n", "20", "ds01d.service"], check=False).stdout
    assert f"ds01d reload: reload refused: {fresh.config_path}:" in status
    assert "the running config stays in force" in status
    assert fresh.show("ActiveState")["ActiveState"] == "active"
    box.wait_until(lambda: "reload refused" in fresh.show("StatusText")["StatusText"], 3.0,
                   what="the refusal in the status line")

    fresh.write_config(CONFIG)
    box.run(["systemctl", "reload", "ds01d.service"])
    box.wait_until(lambda: "reload refused" not in fresh.show("StatusText")["StatusText"], 3.0,
                   what="a good reload clearing the refusal")


def test_only_admins_reload(fresh, box):
    box.add_user("mallory", 2301)
    out = box.run_as(2301, [box.tool("ds01d"), "reload", "--config", str(fresh.config_path)], check=False)
    assert out.returncode == 1 and "mallory may not reload ds01d" in out.stderr
    ok = box.run([box.tool("ds01d"), "reload", "--config", str(fresh.config_path)])
    assert ok.stdout.startswith(f"ds01d: applied {fresh.config_path}")


def test_containers_beyond_max_are_stopped(fresh, box, box_cleanup):
    first = [run(box, box_cleanup, f"mallory-{i}", "--label", "ds01.user=mallory") for i in range(2)]
    for cid in first:
        fresh.wait_record(cid, 1.0, status="running")
    third = run(box, box_cleanup, "mallory-2", "--label", "ds01.user=mallory")
    box.wait_until(lambda: box.docker("inspect", "-f", "{{.State.Running}}", third).stdout.strip() == "false",
                   10.0, what="third container stopped")
    entry = fresh.wait_decision(DS01_CONTAINER=third, DS01_ACTION="stop")
    assert "max_containers" in entry["DS01_REASON"] and entry["DS01_USER"] == "mallory"
    running = box.docker("ps", "-q", "--no-trunc", "--filter", "label=ds01.user=mallory").stdout.split()
    assert sorted(running) == sorted(first)


@pytest.mark.cgroup_v2
def test_container_outside_its_slice_gets_the_per_container_caps(fresh, box, box_cleanup):
    cid = run(box, box_cleanup, "bob-loose", "--label", "ds01.user=bob")
    box.wait_until(lambda: box.docker("inspect", "-f", "{{.HostConfig.CpuQuota}} {{.HostConfig.Memory}}",
                                      cid).stdout.split() == ["100000", str(512 * 2**20)],
                   5.0, what="caps applied with docker update")
    entry = fresh.wait_decision(DS01_CONTAINER=cid, DS01_ACTION="cap")
    assert "outside its owner's slice ds01-students-bob.slice" in entry["DS01_REASON"]


def test_hostile_names_and_labels(fresh, box, box_cleanup):
    ids = {
        "escaped": run(box, box_cleanup, "escaped-user", "--label", "ds01.user=jean-luc.dupont@lab"),
        "unicode": run(box, box_cleanup, "unicode-user", "--label", "ds01.user=ünïcødé"),
        "huge": run(box, box_cleanup, "huge-label", "--label", "ds01.user=" + "x" * 10_000,
                    "--label", "note=" + "y" * 10_000),
        "claims": run(box, box_cleanup, "claims-bobs-slice", "--label", "ds01.user=mallory",
                      "--cgroup-parent", "ds01-students-bob.slice"),
        "dots": run(box, box_cleanup, "a.b-c._.carol"),
        "root": run(box, box_cleanup, "claims-root", "--label", "ds01.user=root"),
        "daemon": run(box, box_cleanup, "claims-daemon", "--label", "ds01.user=daemon"),
        "escapes": run(box, box_cleanup, "escapes", "--label", "ds01.user=\x1b]0;owned\x07",
                       "--gpus", "device=\x1b[2J"),
    }
    assert fresh.wait_record(ids["escaped"], 1.0)["owner"] == "jean-luc.dupont@lab"
    unicode = fresh.wait_record(ids["unicode"], 1.0)
    assert unicode["owner"] is None and "not a plausible user name" in unicode["flags"]
    huge = fresh.wait_record(ids["huge"], 1.0)
    assert huge["owner"] is None and "not a plausible user name" in huge["flags"]
    claims = fresh.wait_record(ids["claims"], 1.0, owner="mallory")
    assert "conflicting owners: mallory (label:ds01.user) vs bob" in claims["flags"]
    assert fresh.wait_record(ids["dots"], 1.0)["owner"] == "carol"
    for who in ("root", "daemon"):  # system accounts own nothing, whatever a label says
        rec = fresh.wait_record(ids[who], 1.0)
        assert rec["owner"] is None and f"{who} is a system account" in rec["flags"]
    fresh.wait_record(ids["escapes"], 1.0)
    # What people read never carries another user's escape sequences.
    shown = [box.run(["journalctl", "-u", "ds01d.service", "-o", "cat", "--no-pager"]).stdout,
             box.run([box.tool("ds01d"), "status"]).stdout,
             box.run([box.tool("ds01-gpu-status")]).stdout]
    assert all("\x1b" not in text and "\x07" not in text for text in shown)
    assert any("\\x1b]0;owned\\x07" in text for text in shown)
    assert box.systemctl_show(r"ds01-students-jean\x2dluc.dupont\x40lab.slice", "ActiveState") == \
        {"ActiveState": "active"}
    assert fresh.show("ActiveState", "NRestarts")["ActiveState"] == "active"


def test_kill_9_is_restarted_and_reconciles(fresh, box, box_cleanup):
    restarts = int(fresh.show("NRestarts")["NRestarts"])
    pid = fresh.main_pid()
    box.run(["kill", "-KILL", str(pid)])
    # A container created while ds01d is down must be found by the reconcile after the restart.
    cid = run(box, box_cleanup, "while-down", "--label", "ds01.user=alice")
    box.wait_until(lambda: int(fresh.show("NRestarts")["NRestarts"]) > restarts and
                   fresh.show("ActiveState")["ActiveState"] == "active", 20.0, what="restart after kill -9")
    assert fresh.main_pid() != pid
    fresh.wait_record(cid, 5.0, owner="alice", status="running")


def test_frozen_loop_is_killed_by_the_watchdog(fresh, box):
    restarts = int(fresh.show("NRestarts")["NRestarts"])
    pid = fresh.main_pid()
    box.run(["kill", "-STOP", str(pid)])
    box.wait_until(lambda: int(fresh.show("NRestarts")["NRestarts"]) > restarts and
                   fresh.show("ActiveState")["ActiveState"] == "active", 30.0, what="watchdog restart")
    assert fresh.main_pid() != pid
    said = box.run(["journalctl", "-u", "ds01d.service", "-o", "cat", "--grep", "Watchdog timeout"]).stdout
    assert "Watchdog timeout" in said


def test_dockerd_restart_in_a_burst_misses_nothing(fresh, box, box_cleanup):
    names = [box_cleanup(f"burst-{i}") for i in range(40)]
    script = " ; ".join(f"docker create --label ds01.user=alice --name {n} busybox:local true >/dev/null 2>&1"
                        for n in names)
    burst = subprocess.Popen(box.command(["sh", "-c", script]), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    box.wait_until(lambda: len(box.docker("ps", "-aq", "--filter", "name=burst-").stdout.split()) >= 10,
                   30.0, what="burst under way")
    box.run(["systemctl", "restart", "docker.service"], timeout=120)
    burst.wait(timeout=180)
    created = box.docker("ps", "-aq", "--no-trunc", "--filter", "name=burst-").stdout.split()
    assert len(created) >= 30
    for cid in created:
        fresh.wait_record(cid, 10.0, owner="alice")


def test_rename_and_destroy_are_followed(fresh, box, box_cleanup):
    cid = run(box, box_cleanup, "before-rename", "--label", "ds01.user=carol")
    fresh.wait_record(cid, 1.0, name="before-rename")
    box.docker("rename", "before-rename", box_cleanup("after-rename"))
    fresh.wait_record(cid, 1.0, name="after-rename")
    assert fresh.wait_decision(DS01_CONTAINER=cid, DS01_ACTION="rename")["DS01_REASON"] == \
        "renamed from before-rename"
    box.docker("rm", "-f", "after-rename")
    fresh.wait_record(cid, 1.0, status="removed")


def test_docker_down_then_back(fresh, box, box_cleanup):
    box.run(["systemctl", "stop", "docker.socket", "docker.service"], timeout=120)
    try:
        box.wait_until(lambda: "Docker unreachable" in fresh.show("StatusText")["StatusText"], 10.0,
                       what="ds01d noticing Docker is gone")
        assert fresh.show("ActiveState")["ActiveState"] == "active"
    finally:
        box.run(["systemctl", "start", "docker.socket", "docker.service"], timeout=120)
    box.wait_until(lambda: box.docker("version", check=False).returncode == 0, 30.0, what="dockerd back")
    back = time.monotonic()
    box.wait_until(lambda: "Docker connected" in fresh.show("StatusText")["StatusText"], 3.0,
                   what="ds01d noticing Docker's return within a second or two")
    assert time.monotonic() - back < 3.0
    cid = run(box, box_cleanup, "after-outage", "--label", "ds01.user=dave")
    fresh.wait_record(cid, 1.0, owner="dave")


def test_sigterm_stops_cleanly(fresh, box):
    box.run(["systemctl", "stop", "ds01d.service"], timeout=30)
    shown = fresh.show("ActiveState", "Result", "ExecMainStatus")
    assert shown == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}
    fresh.start()
