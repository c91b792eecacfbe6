"""ds01-gpu-status and the status socket for a user who is neither root nor in the docker group."""

from __future__ import annotations

import json
import re
import textwrap

import pytest

from tests.nvml_scenarios import mig_gpu, whole_gpu, write
from tests.service import Service, ids_of

pytestmark = pytest.mark.box
ALICE, BOB = 2001, 2002

CONFIG = textwrap.dedent("""\
    daemon: {state_dir: "{state_dir}", sampling_interval: 1s, admin_group: ds01-admin}
    policies: {grace_after_start: 0s, idle_window: 1s, max_extension: 2h, sigterm_grace: 1s}
    defaults: {gpu_quota: 1, idle_timeout: 30m, max_runtime: 8h, gpu_hold_after_stop: 1h}
    """)


@pytest.fixture(scope="module")
def env(box):
    box.add_user("alice", ALICE)
    box.add_user("bob", BOB)
    svc = Service(box, CONFIG, fake_nvml=True)
    write(svc.nvml_scenario, [whole_gpu(0), whole_gpu(1), mig_gpu(2, [{"slices": 3}, {"slices": 4}])])
    svc.reset(CONFIG)
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def scene(env, box):
    """alice busy on GPU 1, bob idle on MIG 2:0, carol's stopped container holding GPU 0."""
    names = {"alice-train": ("alice", "device=1"), "bob-notebook": ("bob", "device=2:0"),
             "carol-held": ("carol", "device=0")}
    for name, (user, gpus) in names.items():
        box.docker("run", "-d", "--name", name, "--label", f"ds01.user={user}", "--label", "ds01.test=1",
                   "--gpus", gpus, "busybox:local", "sleep", "600")
    ids = ids_of(box, list(names))
    pid = {n: int(box.docker("inspect", "-f", "{{.State.Pid}}", n).stdout) for n in names}
    write(env.nvml_scenario, [
        whole_gpu(0),
        whole_gpu(1, utilization=91, processes=[{"pid": pid["alice-train"], "used_memory_mib": 30000}]),
        mig_gpu(2, [{"slices": 3, "sm_activity": 0, "processes": [{"pid": pid["bob-notebook"],
                                                                   "used_memory_mib": 500}]},
                    {"slices": 4}])])
    box.docker("stop", "-t", "0", "carol-held")
    env.wait_record(ids["carol-held"], 5.0, status="exited")
    box.wait_until(lambda: (env.gpu_state(ids["alice-train"]) or {}).get("verdict") == "busy", 10.0,
                   what="alice busy")

    def published() -> bool:
        doc = json.loads(box.run([box.tool("ds01-gpu-status"), "--json"]).stdout)
        units = {u["index"]: u for g in doc["gpus"] for u in g["units"]}
        return units["0"]["state"] == "held" and units["1"]["containers"][0]["verdict"] == "busy"
    box.wait_until(published, 10.0, what="the scene in the published status")
    yield ids
    box.docker("rm", "-f", *names, check=False)


def as_user(box, uid, *argv, check=True):
    return box.run_as(uid, [box.tool(argv[0]), *argv[1:]], check=check)


def test_user_outside_the_docker_group_sees_the_truth(env, box, scene):
    assert "permission denied" in box.run_as(ALICE, ["docker", "ps"], check=False).stderr
    screen = box.wait_until(lambda: (out := as_user(box, ALICE, "ds01-gpu-status").stdout)
                            and "busy 91%" in out and "bob-notebook" in out and out, 10.0, what="screen")
    lines = screen.splitlines()
    assert any(line.startswith("GPU 0") and "held for carol until" in line for line in lines)
    assert any("alice-train (alice, docker, up" in line and "busy 91%" in line and
               re.search(r"stops in (7h 59m|8h) \(runtime\)", line) for line in lines), screen
    assert any("bob-notebook (bob, docker" in line and "idle for" in line and
               re.search(r"stops in (29m \d+s|30m) \(idle\)", line) for line in lines), screen
    assert any(line.strip().startswith("2:1") and line.endswith("free") for line in lines)
    assert "alice: 1 of 1 GPU-equivalents in use or held, 1 GPU container" in screen
    assert "\033[" not in screen  # not a terminal: no colour


def test_json_for_a_user(env, box, scene):
    doc = json.loads(as_user(box, ALICE, "ds01-gpu-status", "--json").stdout)
    assert doc["caller"] == {"user": "alice", "uid": ALICE, "admin": False}
    units = {u["index"]: u for g in doc["gpus"] for u in g["units"]}
    assert units["0"]["state"] == "held" and units["0"]["held_for"]["user"] == "carol"
    assert units["1"]["containers"][0]["owner"] == "alice"
    assert units["1"]["containers"][0]["next"]["action"] == "stop"
    assert units["1"]["containers"][0]["next"]["rule"] == "runtime"
    assert units["2:0"]["containers"][0]["owner"] == "bob" and units["2:0"]["profile"] == "3g.30gb"
    assert units["2:1"]["state"] == "free"
    mine = json.loads(as_user(box, ALICE, "ds01-gpu-status", "--json", "--mine").stdout)
    assert [u["index"] for g in mine["gpus"] for u in g["units"]] == ["1"]


def test_release_is_refused_to_others_and_done_for_root(env, box, scene):
    refused = as_user(box, BOB, "ds01d", "release", "carol-held", check=False)
    assert refused.returncode == 1 and "bob may not release carol-held" in refused.stderr
    assert not env.decisions(DS01_CONTAINER=scene["carol-held"], DS01_ACTION="release")
    done = box.run([box.tool("ds01d"), "release", "carol-held"])
    assert "carol-held: GPU hold released (by root)" in done.stdout
    entry = env.wait_decision(DS01_CONTAINER=scene["carol-held"], DS01_ACTION="release")
    assert entry["DS01_REASON"] == "hold ended early by root" and entry["DS01_USER"] == "carol"
    box.wait_until(lambda: "held for carol" not in as_user(box, ALICE, "ds01-gpu-status").stdout, 5.0,
                   what="GPU 0 shown free")


def test_owner_extends_up_to_the_maximum(env, box, scene):
    ok = as_user(box, ALICE, "ds01d", "extend", "alice-train", "90m")
    assert "alice-train: runtime stop now at" in ok.stdout and "(by alice)" in ok.stdout
    over = as_user(box, ALICE, "ds01d", "extend", "alice-train", "1h", check=False)
    assert over.returncode == 1 and "30m left" in over.stderr
    entry = env.wait_decision(DS01_CONTAINER=scene["alice-train"], DS01_ACTION="extend")
    assert "by alice" in entry["DS01_REASON"]
    assert as_user(box, BOB, "ds01d", "extend", "alice-train", "1m", check=False).returncode == 1


def test_admin_status_is_for_admins(env, box, scene):
    refused = as_user(box, ALICE, "ds01d", "status", check=False)
    assert refused.returncode == 1 and "may not see the admin status" in refused.stderr
    doc = json.loads(box.run([box.tool("ds01d"), "status", "--json"]).stdout)
    assert {c["name"] for c in doc["containers"]} >= {"alice-train", "bob-notebook", "carol-held"}
    assert any(e["action"] == "release" for e in doc["audit"])


def test_daemon_down_is_one_sentence_and_exit_2(env, box, scene):
    env.stop()
    try:
        out = as_user(box, ALICE, "ds01-gpu-status", check=False)
        assert out.returncode == 2 and out.stdout == ""
        assert out.stderr.strip() == ("ds01-gpu-status: ds01d is not running (nothing answers on "
                                      "/run/ds01/ds01d.sock); ask an admin to check `systemctl status ds01d`.")
    finally:
        env.start()


def test_real_output_follows_the_documented_schema(env, box, scene):
    from tests.schema_check import errors
    user_doc = json.loads(as_user(box, ALICE, "ds01-gpu-status", "--json").stdout)
    admin_doc = json.loads(box.run([box.tool("ds01d"), "status", "--json"]).stdout)
    assert errors(user_doc) == [] and errors(admin_doc) == []
    assert user_doc["gpus"] and admin_doc["containers"] and admin_doc["audit"]
