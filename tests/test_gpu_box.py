"""GPU truth and lifecycle enforcement, end to end: ds01d as a service in the box, real Docker,
and the scenario fake of pynvml whose GPU processes are the containers' real PIDs."""

from __future__ import annotations

import textwrap
import time

import pytest

from tests.nvml_scenarios import mig_gpu, whole_gpu, write
from tests.service import Service, ids_of, notify_output

pytestmark = pytest.mark.box
INTERVAL = 1.0

CONFIG = textwrap.dedent("""\
    daemon: {state_dir: "{state_dir}", sampling_interval: 1s}
    policies:
      idle_threshold: 5
      idle_window: 1s
      grace_after_start: 0s
      warning_lead_times: [4s, 2s]
      keep_alive_file: /tmp/keep-alive
      keep_alive_max_age: 30s
      sigterm_grace: 1s
      gpus_all: stop
      notify_command: [/bin/sh, -c, 'echo "$DS01_ACTION $DS01_USER $DS01_CONTAINER_NAME"']
    defaults:
      gpu_quota: 1
      max_containers: 10
      idle_timeout: 6s
      max_runtime: null
      gpu_hold_after_stop: 5s
      container_hold_after_stop: null
    default_group: users
    groups:
      users: {}
      runners:
        members: [rita, pat]
        idle_timeout: null
        max_runtime: 4s
        container_hold_after_stop: 3s
    """)


class Gpus:
    """The scenario: GPU 0 and 1 whole, GPU 2 MIG with GPM (H100), GPU 3 MIG without (A100)."""

    def __init__(self, path):
        self.path = path
        self.whole = {0: {}, 1: {}}
        self.mig2 = [{"slices": 3}, {"slices": 2}, {"slices": 2}]
        self.mig3 = [{"slices": 7}]
        self.write()

    def write(self) -> None:
        write(self.path, [whole_gpu(0, **self.whole[0]), whole_gpu(1, **self.whole[1]),
                          mig_gpu(2, self.mig2), mig_gpu(3, self.mig3, gpm=False, name="NVIDIA A100-SXM4-80GB")])

    def busy(self, gpu: int, pid: int, util: int) -> None:
        self.whole[gpu] = {"utilization": util, "processes": [{"pid": pid, "used_memory_mib": 1000}]}
        self.write()


@pytest.fixture(scope="module")
def env(box):
    svc = Service(box, CONFIG, fake_nvml=True)
    gpus = Gpus(svc.nvml_scenario)
    svc.reset(CONFIG)
    yield svc, gpus
    svc.stop()


def start(box, cleanup, name, user, *args):
    box.docker("run", "-d", "--name", cleanup(name), "--label", f"ds01.user={user}", *args,
               "busybox:local", "sleep", "600")
    cid = ids_of(box, [name])[name]
    pid = int(box.docker("inspect", "-f", "{{.State.Pid}}", cid).stdout)
    return cid, pid


def running(box, cid) -> bool:
    return box.docker("inspect", "-f", "{{.State.Running}}", cid).stdout.strip() == "true"


def stopped_entry(svc, box, cid, timeout):
    box.wait_until(lambda: not running(box, cid), timeout, what=f"{cid[:12]} stopped")
    return svc.wait_decision(DS01_CONTAINER=cid, DS01_ACTION="stop")


def test_inventory_logged(env):
    svc, _ = env
    entry = svc.wait_decision(DS01_ACTION="gpu-inventory")
    assert entry["DS01_REASON"] == "NVML driver 550.54.15: 4 GPUs, 2 whole, 4 MIG instances"


def test_busy_then_idle_is_warned_then_stopped_on_time(env, box, box_cleanup):
    svc, gpus = env
    cid, pid = start(box, box_cleanup, "idle-on-1", "ivan", "--gpus", "device=1")
    gpus.busy(1, pid, 80)
    svc.box.wait_until(lambda: (svc.gpu_state(cid) or {}).get("verdict") == "busy", 5.0, what="busy verdict")
    time.sleep(3 * INTERVAL)  # stays busy: nothing may happen meanwhile
    assert running(box, cid) and not svc.decisions(DS01_CONTAINER=cid, DS01_ACTION="stop")
    gpus.busy(1, pid, 0)
    state = svc.box.wait_until(lambda: (s := svc.gpu_state(cid)) and s["idle_since"] and s, 5.0, what="idle")
    deadline = state["idle_since"] + 6
    entry = stopped_entry(svc, box, cid, 15.0)
    assert "GPU idle since" in entry["DS01_REASON"] and entry["DS01_USER"] == "ivan"
    stopped_at = int(entry["__REALTIME_TIMESTAMP"]) / 1e6
    assert deadline <= stopped_at <= deadline + INTERVAL + 0.5
    warnings = svc.decisions(DS01_CONTAINER=cid, DS01_ACTION="warn-idle")
    assert [w["DS01_REASON"].split("(in ")[1].split(")")[0] for w in warnings] == ["4s", "2s"]
    box.wait_until(lambda: "stop ivan idle-on-1" in notify_output(box), 5.0, what="notify command")
    assert [line for line in notify_output(box) if "ivan" in line] == [  # outside-slice: at its start
        "warn-outside-slice ivan idle-on-1", "warn-idle ivan idle-on-1", "warn-idle ivan idle-on-1",
        "stop ivan idle-on-1"]
    gpus.whole[1] = {}
    gpus.write()


def test_keep_alive_fresh_protects_and_stale_does_not(env, box, box_cleanup):
    svc, _ = env
    cid, _ = start(box, box_cleanup, "kept-alive", "kate", "--gpus", "device=0")
    box.docker("exec", cid, "touch", "/tmp/keep-alive")
    svc.box.wait_until(lambda: (s := svc.gpu_state(cid)) and s["idle_since"], 5.0, what="idle (no GPU process)")
    time.sleep(6 + 3 * INTERVAL)  # past the idle timeout
    assert running(box, cid)
    box.docker("exec", cid, "touch", "-d", "@%d" % (time.time() - 120), "/tmp/keep-alive")
    entry = stopped_entry(svc, box, cid, 10.0)
    assert "keep-alive" not in entry["DS01_REASON"]


def test_a_keep_alive_symlink_to_a_fresh_host_file_keeps_nothing_alive(env, box, box_cleanup):
    """The file is resolved inside the container's root: a symlink to a host path that is fresh
    on the host and absent in the container is no keep-alive (kate again: her hold on GPU 0)."""
    svc, _ = env
    host_file = svc.dir / "fresh-on-the-host"
    host_file.write_text("")
    cid, _ = start(box, box_cleanup, "keep-alive-escape", "kate", "--gpus", "device=0")
    box.docker("exec", cid, "ln", "-s", str(host_file), "/tmp/keep-alive")
    state = svc.box.wait_until(lambda: (s := svc.gpu_state(cid)) and s["idle_since"] and s, 5.0, what="idle")
    entry = stopped_entry(svc, box, cid, 6 + 4 * INTERVAL)
    assert "GPU idle since" in entry["DS01_REASON"] and "keep-alive" not in entry["DS01_REASON"]
    assert int(entry["__REALTIME_TIMESTAMP"]) / 1e6 <= state["idle_since"] + 6 + INTERVAL + 0.5


@pytest.mark.cgroup_v2
def test_mig_only_the_idle_user_is_stopped_and_unknown_is_never_idle(env, box, box_cleanup):
    svc, gpus = env
    # Each container's GPU activity is in the scenario from its start: on a slow host (the
    # emulated cgroup v2 VM) starting the next container takes longer than the idle timeout.
    busy, busy_pid = start(box, box_cleanup, "mig-busy", "mona", "--gpus", "device=2:0")
    gpus.mig2[0] = {"slices": 3, "sm_activity": 60, "processes": [{"pid": busy_pid, "used_memory_mib": 10}]}
    gpus.write()
    blind, blind_pid = start(box, box_cleanup, "mig-a100", "olga", "--gpus", "device=3:0")
    gpus.mig3[0] = {"slices": 7, "processes": [{"pid": blind_pid, "used_memory_mib": 10}]}
    gpus.write()
    idle, idle_pid = start(box, box_cleanup, "mig-idle", "nils", "--gpus", "device=2:1")
    gpus.mig2[1] = {"slices": 2, "sm_activity": 0, "processes": [{"pid": idle_pid, "used_memory_mib": 10}]}
    gpus.write()
    entry = stopped_entry(svc, box, idle, 15.0)
    assert entry["DS01_USER"] == "nils"
    assert running(box, busy) and running(box, blind)
    blind_state = svc.gpu_state(blind)
    assert blind_state["verdict"] == "unknown" and "without GPM" in blind_state["why"]
    # Unknown pauses the idle clock: whatever idle time it had (before its process showed up)
    # does not grow while it is unknown.
    later = box.wait_until(lambda: (s := svc.gpu_state(blind))["updated"] >= blind_state["updated"] + 2 and s,
                           10.0, what="two more passes")
    idle_for = [(s["updated"] - s["idle_since"]) if s["idle_since"] else 0.0 for s in (blind_state, later)]
    assert later["verdict"] == "unknown" and idle_for[1] <= idle_for[0] + 0.5, idle_for
    assert svc.gpu_state(busy)["verdict"] == "busy"
    gpus.mig2, gpus.mig3 = [{"slices": 3}, {"slices": 2}, {"slices": 2}], [{"slices": 7}]
    gpus.write()


def test_over_quota_start_is_stopped_with_the_reason(env, box, box_cleanup):
    svc, _ = env
    first, _ = start(box, box_cleanup, "quota-1", "quinn", "--gpus", "device=2:0")
    svc.wait_record(first, 2.0, status="running")
    second, _ = start(box, box_cleanup, "quota-2", "quinn", "--gpus", "device=1")
    entry = stopped_entry(svc, box, second, 10.0)
    assert "quota is 1" in entry["DS01_REASON"] and "0.428571 already held" in entry["DS01_REASON"]
    assert running(box, first)


def test_gpus_all_is_stopped(env, box, box_cleanup):
    svc, _ = env
    cid, _ = start(box, box_cleanup, "greedy", "gus", "--gpus", "all")
    assert "--gpus all" in stopped_entry(svc, box, cid, 10.0)["DS01_REASON"]


def test_hold_blocks_others_until_it_ends_even_across_kill_9(env, box, box_cleanup):
    svc, _ = env
    cid, _ = start(box, box_cleanup, "holder", "hana", "--gpus", "device=0")
    svc.wait_record(cid, 2.0, status="running")
    box.docker("stop", "-t", "0", cid)
    rec = svc.wait_record(cid, 5.0, status="exited")
    hold_ends = rec["finished_at"] + 5
    intruder, _ = start(box, box_cleanup, "intruder", "ida", "--gpus", "device=0")
    assert "held for hana" in stopped_entry(svc, box, intruder, 5.0)["DS01_REASON"]
    box.run(["systemctl", "kill", "-s", "KILL", "ds01d.service"])
    released = svc.wait_decision(15.0, DS01_CONTAINER=cid, DS01_ACTION="release")
    at = int(released["__REALTIME_TIMESTAMP"]) / 1e6
    assert hold_ends <= at <= hold_ends + INTERVAL + 2.5  # + the restart after kill -9
    later, _ = start(box, box_cleanup, "after-hold", "ida", "--gpus", "device=0")
    time.sleep(2 * INTERVAL)
    assert running(box, later)


def test_max_runtime_and_removal_on_time_but_never_a_protected_one(env, box, box_cleanup):
    svc, _ = env
    plain, _ = start(box, box_cleanup, "runner", "rita", "--gpus", "device=2:2")
    kept, _ = start(box, box_cleanup, "runner-kept", "pat", "--gpus", "device=2:1", "--label",
                    "ds01.protected=true")
    rec = svc.wait_record(plain, 2.0, status="running")
    entry = stopped_entry(svc, box, plain, 10.0)
    assert "max_runtime 4s" in entry["DS01_REASON"]
    assert rec["started_at"] + 4 <= int(entry["__REALTIME_TIMESTAMP"]) / 1e6 <= rec["started_at"] + 4 + INTERVAL + 0.5
    removed = svc.wait_decision(10.0, DS01_CONTAINER=plain, DS01_ACTION="remove")
    assert "image busybox:local" in removed["DS01_REASON"] and removed["DS01_USER"] == "rita"
    box.wait_until(lambda: plain not in box.docker("ps", "-aq", "--no-trunc").stdout, 5.0, what="removed")
    box.wait_until(lambda: not running(box, kept), 10.0, what="protected one stopped by its runtime")
    time.sleep(3 + 2 * INTERVAL)
    assert kept in box.docker("ps", "-aq", "--no-trunc").stdout
    assert not svc.decisions(DS01_CONTAINER=kept, DS01_ACTION="remove")
