"""GPU truth on the paths real hardware takes (issue 13), end to end: ds01d as a service in the
box, real Docker, and the fake pynvml made as unkind as NVML.  Each test is a way a busy (or
unmeasurable) container was judged idle and stopped, or an idle one never was."""

from __future__ import annotations

import json
import textwrap
import time

import pytest

from tests.nvml_scenarios import gpu_uuid, mig_gpu, whole_gpu, write
from tests.service import Service, ids_of

pytestmark = pytest.mark.box
IDLE_TIMEOUT = 6

CONFIG = textwrap.dedent("""\
    daemon: {state_dir: "{state_dir}", sampling_interval: 1s}
    policies:
      idle_threshold: 5
      idle_window: 1s
      grace_after_start: 0s
      warning_lead_times: [2s]
      sigterm_grace: 1s
      gpus_all: stop
    defaults:
      gpu_quota: 1
      max_containers: 10
      idle_timeout: 6s
      max_runtime: null
      gpu_hold_after_stop: 1s
      container_hold_after_stop: null
    default_group: users
    groups:
      users: {}
    """)


class Gpus:
    """GPU 0 and 1 whole H100s; GPU 2 an H100 in three MIG instances; GPU 3 an A30 (4 slices)
    whose 2-slice GPU instance is split into two compute instances (3:0, 3:1), then 3:2 and 3:3."""

    def __init__(self, path):
        self.path = path
        self.top: dict = {}
        self.whole: dict[int, dict] = {0: {}, 1: {}}
        self.mig2: list[dict] = [{"slices": 3}, {"slices": 2}, {"slices": 2}]
        self.a30: list[dict] = [{}, {}, {}, {}]
        self.write()

    def write(self) -> None:
        a30 = mig_gpu(3, [{"slices": 2, "ci": 0, "ci_slices": 1}, {"slices": 2, "ci": 1, "ci_slices": 1},
                          {"slices": 1}, {"slices": 1}], name="NVIDIA A30")
        a30["max_slices"] = 4
        a30["mig"][1]["gi"] = a30["mig"][0]["gi"]
        a30["mig"][2]["gi"], a30["mig"][3]["gi"] = 2, 3
        for inst, extra in zip(a30["mig"], self.a30):
            inst.update(extra)
        gpus = [whole_gpu(0, **self.whole[0]), whole_gpu(1, **self.whole[1]), mig_gpu(2, self.mig2), a30]
        write(self.path, gpus)
        if self.top:
            self.path.write_text(json.dumps({**json.loads(self.path.read_text()), **self.top}))

    def reset(self) -> None:
        self.top, self.whole = {}, {0: {}, 1: {}}
        self.mig2, self.a30 = [{"slices": 3}, {"slices": 2}, {"slices": 2}], [{}, {}, {}, {}]
        self.write()


@pytest.fixture(scope="module")
def env(box):
    svc = Service(box, CONFIG, fake_nvml=True)
    gpus = Gpus(svc.nvml_scenario)
    svc.reset(CONFIG)
    yield svc, gpus
    svc.stop()


@pytest.fixture
def gpus(env):
    svc, gpus = env
    yield gpus
    gpus.reset()


def start(box, cleanup, name, user, *args):
    box.docker("run", "-d", "--name", cleanup(name), "--label", f"ds01.user={user}", *args,
               "busybox:local", "sleep", "600")
    cid = ids_of(box, [name])[name]
    return cid, int(box.docker("inspect", "-f", "{{.State.Pid}}", cid).stdout)


def running(box, cid) -> bool:
    return box.docker("inspect", "-f", "{{.State.Running}}", cid).stdout.strip() == "true"


def verdict_is(svc, cid, expected: str, timeout: float = 8.0, why: str = "") -> dict:
    return svc.box.wait_until(lambda: (s := svc.gpu_state(cid)) and s["verdict"] == expected
                              and why in (s["why"] or "") and s, timeout, what=f"{cid[:12]} {expected} {why}")


def outlives_the_idle_timeout(svc, box, cid) -> None:
    """Nothing may stop it: wait past the idle timeout (a non-event has no state to poll)."""
    time.sleep(IDLE_TIMEOUT + 3)
    assert running(box, cid), svc.decisions(DS01_CONTAINER=cid, DS01_ACTION="stop")


def test_an_nvml_error_on_a_busy_gpu_is_unknown_not_idle(env, gpus, box, box_cleanup):
    svc, _ = env
    cid, pid = start(box, box_cleanup, "nvml-error", "erin", "--gpus", "device=0")
    gpus.whole[0] = {"utilization": 90, "processes": [{"pid": pid, "used_memory_mib": 500}]}
    gpus.write()
    verdict_is(svc, cid, "busy")
    gpus.whole[0]["errors"] = {"nvmlDeviceGetComputeRunningProcesses": "UNKNOWN",
                               "nvmlDeviceGetUtilizationRates": "TIMEOUT"}
    gpus.write()
    verdict_is(svc, cid, "unknown", why="Unknown Error")
    entry = svc.wait_decision(DS01_CONTAINER=cid, DS01_ACTION="gpu-unknown")
    assert "idle clock paused" in entry["DS01_REASON"] and entry["DS01_USER"] == "erin"
    outlives_the_idle_timeout(svc, box, cid)


def test_a_lost_gpu_keeps_its_container_unknown_and_nvml_starts_again(env, gpus, box, box_cleanup):
    svc, _ = env
    cid, pid = start(box, box_cleanup, "on-lost-gpu", "lars", "--gpus", "device=1")
    gpus.whole[1] = {"utilization": 70, "processes": [{"pid": pid, "used_memory_mib": 500}]}
    gpus.write()
    verdict_is(svc, cid, "busy")
    gpus.whole[1]["fail"] = "fell off the bus"
    gpus.write()
    verdict_is(svc, cid, "unknown", why="GPU is lost")
    svc.wait_decision(DS01_ACTION="gpu-nvml")
    outlives_the_idle_timeout(svc, box, cid)
    del gpus.whole[1]["fail"]
    gpus.write()
    verdict_is(svc, cid, "busy", timeout=20.0)   # NVML started again within its backoff


def test_a_driver_reload_to_a_driver_without_gpm_keeps_the_mig_gpu(env, gpus, box, box_cleanup):
    svc, _ = env
    cid, pid = start(box, box_cleanup, "mig-reload", "rhea", "--gpus", "device=2:0")
    gpus.mig2[0] = {"slices": 3, "utilization": 60, "sm_activity": 60,
                    "processes": [{"pid": pid, "used_memory_mib": 10}]}
    gpus.write()
    verdict_is(svc, cid, "busy")
    gpus.top = {"driver_epoch": 1, "driver": "535.54.03", "driver_lacks": ["nvmlGpm*"]}
    gpus.write()
    entry = svc.wait_decision(DS01_ACTION="gpu-nvml")
    assert "started again" in entry["DS01_REASON"]
    verdict_is(svc, cid, "unknown", why="no GPM")
    outlives_the_idle_timeout(svc, box, cid)


def test_a_low_parallelism_mig_job_is_busy(env, gpus, box, box_cleanup):
    """Kernels run all the time on few SMs: GPM GRAPHICS_UTIL 95 %, SM_UTIL 2 %."""
    svc, _ = env
    cid, pid = start(box, box_cleanup, "one-stream", "lena", "--gpus", "device=2:1")
    gpus.mig2[1] = {"slices": 2, "utilization": 95, "sm_activity": 2,
                    "processes": [{"pid": pid, "used_memory_mib": 10}]}
    gpus.write()
    assert verdict_is(svc, cid, "busy")["activity"] == 95.0
    outlives_the_idle_timeout(svc, box, cid)


def test_restarts_pause_the_idle_clock_of_an_idle_mig_container_but_do_not_reset_it(env, gpus, box, box_cleanup):
    """Every restart's first GPM sample is unknown: restarted more often than the idle timeout,
    an idle MIG container must still be stopped."""
    svc, _ = env
    cid, pid = start(box, box_cleanup, "mig-idle-restarts", "ria", "--gpus", "device=2:2")
    gpus.mig2[2] = {"slices": 2, "utilization": 0, "processes": [{"pid": pid, "used_memory_mib": 10}]}
    gpus.write()
    svc.box.wait_until(lambda: (s := svc.gpu_state(cid)) and s["idle_since"], 8.0, what="idle")
    deadline = time.monotonic() + 4 * IDLE_TIMEOUT
    while running(box, cid) and time.monotonic() < deadline:
        pid_before, restarted_at = svc.main_pid(), time.time()
        box.run(["systemctl", "reset-failed", "ds01d.service"], check=False)  # systemd's start rate limit
        box.run(["systemctl", "restart", "ds01d.service"])
        box.wait_until(lambda: svc.main_pid() not in (0, pid_before), 20.0, what="ds01d back")
        box.wait_until(lambda: not running(box, cid) or ((s := svc.gpu_state(cid) or {}).get("verdict") == "idle"
                                                         and s["updated"] > restarted_at),
                       10.0, what="the restarted daemon's first known verdict")
    assert not running(box, cid)
    entry = svc.wait_decision(DS01_CONTAINER=cid, DS01_ACTION="stop")
    assert "GPU idle since" in entry["DS01_REASON"]


def test_a_shared_gpu_without_new_utilization_samples_stops_no_one(env, gpus, box, box_cleanup):
    """NVML's per-process samples come on the driver's tick: with none newer than the last pass
    (NOT_FOUND) nobody's part is known, and a GPU 80 % busy is nobody's idle."""
    svc, _ = env
    busy, busy_pid = start(box, box_cleanup, "shared-busy", "sana", "--gpus", "device=1")
    quiet, quiet_pid = start(box, box_cleanup, "shared-quiet", "sami", "--gpus", "device=1")
    gpus.whole[1] = {"utilization": 80, "process_util_period_s": 3600,
                     "processes": [{"pid": busy_pid, "used_memory_mib": 10, "sm_util": 80},
                                   {"pid": quiet_pid, "used_memory_mib": 10, "sm_util": 0}]}
    gpus.write()
    verdict_is(svc, busy, "unknown", timeout=10.0, why="per-process utilization")
    outlives_the_idle_timeout(svc, box, busy)


def test_compute_instances_of_one_gpu_instance_count_once_against_the_quota(env, gpus, box, box_cleanup):
    """A30: GPU instance 1 (2 of 4 slices) split into two compute instances is 0.5 GPU, not 1.0;
    with 3:2 (0.25) the owner holds 0.75 of a quota of 1."""
    svc, _ = env
    first, _ = start(box, box_cleanup, "a30-ci0", "quinn", "--gpus", "device=3:0")
    svc.wait_record(first, 5.0, status="running")
    second, _ = start(box, box_cleanup, "a30-ci1", "quinn", "--gpus", "device=3:1")
    svc.wait_record(second, 5.0, status="running")
    third, _ = start(box, box_cleanup, "a30-gi2", "quinn", "--gpus", "device=3:2")
    svc.box.wait_until(lambda: svc.gpu_state(third) and svc.gpu_state(third)["verdict"], 8.0, what="judged")
    assert not svc.decisions(DS01_CONTAINER=third, DS01_ACTION="stop")   # the start check logs before it stops
    assert running(box, third)
    doc = json.loads(box.run([box.tool("ds01-gpu-status"), "--json"]).stdout)
    shares = {u["index"]: u["share"] for g in doc["gpus"] for u in g["units"] if g["index"] == "3"}
    assert shares == {"3:0": 0.5, "3:1": 0.5, "3:2": 0.25, "3:3": 0.25}


def test_a_container_without_gpus_found_computing_on_one_is_judged(env, gpus, box, box_cleanup):
    """No --gpus (CDI, --privileged, -v /dev:/dev): NVML shows its process on GPU 0.  Over its
    owner's quota it is stopped; otherwise its idle clock runs and the allocator sees GPU 0 taken."""
    svc, _ = env
    asked, _ = start(box, box_cleanup, "asked-for-1", "fred", "--gpus", "device=1")
    svc.wait_record(asked, 5.0, status="running")
    sneaky, sneaky_pid = start(box, box_cleanup, "no-gpus-flag", "fred")
    idle, idle_pid = start(box, box_cleanup, "no-gpus-idle", "gina")
    gpus.whole[0] = {"utilization": 50, "processes": [{"pid": sneaky_pid, "used_memory_mib": 10},
                                                      {"pid": idle_pid, "used_memory_mib": 10}]}
    gpus.write()
    entry = svc.wait_decision(10.0, DS01_CONTAINER=sneaky, DS01_ACTION="stop")
    assert "without asking" in entry["DS01_REASON"] and "quota is 1" in entry["DS01_REASON"]
    gpus.whole[0] = {"utilization": 0, "processes": [{"pid": idle_pid, "used_memory_mib": 10}]}
    gpus.write()
    state = svc.box.wait_until(lambda: (s := svc.gpu_state(idle)) and s["idle_since"] and s, 10.0,
                               what="idle clock of a container without --gpus")
    assert json.loads(state["units"]) == [gpu_uuid(0)]
    stopped = svc.wait_decision(IDLE_TIMEOUT + 6.0, DS01_CONTAINER=idle, DS01_ACTION="stop")
    assert "GPU idle since" in stopped["DS01_REASON"]


def test_a_container_without_gpus_found_on_a_device_held_for_someone_else_is_stopped(env, gpus, box, box_cleanup):
    """Judged as a start on that device: hana's stopped container holds GPU 1 (for a while), so a
    container that reaches it without asking is stopped with the start check's own reason."""
    svc, _ = env
    held, _ = start(box, box_cleanup, "hana-holds-1", "hana", "--gpus", "device=1")
    box.wait_until(lambda: (svc.gpu_state(held) or {}).get("units"), 5.0, what="hana's units recorded")
    svc.write_config(CONFIG.replace("gpu_hold_after_stop: 1s", "gpu_hold_after_stop: 1h"))
    box.run(["systemctl", "reload", "ds01d.service"])
    box.docker("stop", "-t", "0", held)
    svc.wait_record(held, 5.0, status="exited")
    try:
        sneaky, pid = start(box, box_cleanup, "ivy-no-gpus", "ivy")
        gpus.whole[1] = {"utilization": 40, "processes": [{"pid": pid, "used_memory_mib": 10}]}
        gpus.write()
        entry = svc.wait_decision(10.0, DS01_CONTAINER=sneaky, DS01_ACTION="stop")
        assert "without asking for a GPU" in entry["DS01_REASON"] and "held for hana" in entry["DS01_REASON"]
    finally:
        svc.write_config(CONFIG)
        box.run(["systemctl", "reload", "ds01d.service"])


def test_nvml_that_hangs_costs_unknowns_not_the_loop(env, gpus, box, box_cleanup):
    """Every NVML call blocks (a GPU fallen off the bus): the pass waits 10 s at most, the watchdog
    (3 s here) is fed meanwhile, units are unknown with the reason, nobody is stopped for idle,
    and the socket answers; when NVML answers again, measuring goes on."""
    svc, _ = env
    cid, _ = start(box, box_cleanup, "while-nvml-hangs", "kim", "--gpus", "device=0")
    verdict_is(svc, cid, "idle")
    before = svc.show("MainPID", "NRestarts")
    cursor = box.journal_cursor()
    gpus.top = {"hang_s": 14}           # longer than the idle timeout: unknown taken as idle would stop it
    gpus.write()
    state = verdict_is(svc, cid, "unknown", timeout=20.0, why="NVML")
    assert "did not answer within 10s" in state["why"] or "has not answered since" in state["why"]
    assert json.loads(box.run([box.tool("ds01-gpu-status"), "--json"]).stdout)["gpus"]
    gpus.top = {}
    gpus.write()
    verdict_is(svc, cid, "idle", timeout=30.0)
    assert running(box, cid)
    assert not box.journal(f"DS01_CONTAINER={cid}", "DS01_ACTION=stop", since_cursor=cursor)
    assert svc.show("MainPID", "NRestarts") == before
