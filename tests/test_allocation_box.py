"""Allocation end to end: the daemon, real Docker, the fake NVML, users outside the docker group."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from tests.nvml_scenarios import mig_gpu, mig_uuid, whole_gpu, gpu_uuid, write
from tests.box.box import BOX_CHECKOUT
from tests.service import Service, ids_of

pytestmark = pytest.mark.box
ALICE, BOB = 2001, 2002

CONFIG = textwrap.dedent("""\
    daemon: {state_dir: "{state_dir}", sampling_interval: 1s}
    policies: {grace_after_start: 0s, sigterm_grace: 1s, allocation_timeout: 1m, allocation_wait: 20s}
    defaults: {gpu_quota: 1, gpu_hold_after_stop: 3s, idle_timeout: null, max_runtime: null}
    default_group: students
    groups:
      students: {}
      researchers: {members: [dave], allow_full_gpu: true, priority: 50}
    """)


def reservation(start: float, end: float) -> str:
    iso = lambda t: dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return CONFIG + textwrap.dedent(f"""\
        user_overrides:
          carol:
            reason: thesis week
            reserved_gpus: [0]
            reservation_start: {iso(start)}
            reservation_end: {iso(end)}
        """)


@pytest.fixture(scope="module")
def env(box):
    box.add_user("alice", ALICE)
    box.add_user("bob", BOB)
    svc = Service(box, CONFIG, fake_nvml=True)
    write(svc.nvml_scenario, [whole_gpu(0), mig_gpu(1, [{"slices": 3}, {"slices": 4}])])
    svc.reset(CONFIG)
    yield svc
    svc.stop()


@pytest.fixture(autouse=True)
def nothing_allocated(env):
    """Each test starts with no allocation left by the one before (they hold devices and
    quota for a minute): a fresh daemon on the same config."""
    env.reset(CONFIG)


def allocate_as(box, uid, *args):
    argv = box.command(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                        box.tool("ds01d"), "allocate", "--json", *args])
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def start(box, cleanup, name, user, gpus):
    box.docker("run", "-d", "--name", cleanup(name), "--label", f"ds01.user={user}", "--gpus", gpus,
               "busybox:local", "sleep", "600")
    return ids_of(box, [name])[name]


def running(box, cid) -> bool:
    return box.docker("inspect", "-f", "{{.State.Running}}", cid).stdout.strip() == "true"


def test_two_users_race_for_the_last_device(env, box, box_cleanup):
    occupiers = [start(box, box_cleanup, "occupier", "erin", f"device={mig_uuid(1, 1)}"),
                 start(box, box_cleanup, "occupier-0", "frank", "device=0")]
    for cid in occupiers:
        box.wait_until(lambda: (env.gpu_state(cid) or {}).get("units"), 5.0, what="occupier recorded")
    # Whole GPU 0 and MIG 1:1 are in use: MIG 1:0 is the last free device.
    first, second = allocate_as(box, ALICE, "--wait", "20s"), allocate_as(box, BOB, "--wait", "20s")
    deadline = time.monotonic() + 10
    while first.poll() is None and second.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    done, waiting = (first, second) if first.poll() is not None else (second, first)
    assert waiting.poll() is None, "both got the last device"
    won = json.loads(done.communicate(timeout=5)[0])
    winner, loser = won["user"], ("bob" if won["user"] == "alice" else "alice")
    assert [u["uuid"] for u in won["units"]] == [mig_uuid(1, 0)]
    assert env.wait_decision(DS01_USER=loser, DS01_ACTION="allocate-wait")
    cid = start(box, box_cleanup, "winner", winner, f"device={mig_uuid(1, 0)}")
    box.wait_until(lambda: running(box, cid), 5.0, what="winner's container")
    time.sleep(1.5)
    assert running(box, cid) and waiting.poll() is None   # claimed, not stopped; the loser still waits
    box.docker("stop", "-t", "0", cid)
    stopped = env.wait_record(cid, 5.0, status="exited")["finished_at"]
    out, err = waiting.communicate(timeout=20)
    got = json.loads(out)
    assert got["user"] == loser and [u["uuid"] for u in got["units"]] == [mig_uuid(1, 0)]
    served = env.wait_decision(DS01_USER=loser, DS01_ACTION="allocate")
    assert stopped + 3 <= int(served["__REALTIME_TIMESTAMP"]) / 1e6 <= stopped + 3 + 1.5


WAITER = """\
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect("/run/ds01/ds01d.sock")
body = b'{"wait_s": 60}'
s.sendall(b"POST /v1/allocate HTTP/1.0\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body) + body)
sys.stdin.readline()          # stay until the test says to hang up
"""


def queue(box) -> list[dict]:
    out = box.run(["python3", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                   "from ds01d.cli.status_client import call; import json; "
                   "print(json.dumps(call('/run/ds01/ds01d.sock', 'GET', '/v1/status')[1]['queue']))",
                   str(BOX_CHECKOUT)]).stdout
    return json.loads(out)


def waiting_client(box, uid):
    argv = box.command(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "python3", "-c", WAITER])
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)


def test_a_waiter_that_hangs_up_leaves_the_queue_and_gets_nothing(env, box, box_cleanup):
    occupiers = [start(box, box_cleanup, f"full-{i}", user, gpus) for i, (user, gpus) in
                 enumerate([("erin", "device=0"), ("frank", f"device={mig_uuid(1, 0)}"),
                            ("gina", f"device={mig_uuid(1, 1)}")])]
    for cid in occupiers:
        box.wait_until(lambda: (env.gpu_state(cid) or {}).get("units"), 5.0, what="occupier recorded")
    cursor = box.journal_cursor()
    clients = [waiting_client(box, ALICE) for _ in range(5)]
    box.wait_until(lambda: [w["user"] for w in queue(box)] == ["alice"] * 4, 10.0, what="alice's 4 waits queued")
    refused = env.wait_decision(DS01_USER="alice", DS01_ACTION="allocate-wait")  # the fifth: 429, not queued
    assert refused and len(queue(box)) == 4
    for client in clients:
        client.communicate("\n", timeout=10)   # Ctrl-C, as it were
    box.wait_until(lambda: queue(box) == [], 10.0, what="the queue emptied by the hang-ups")
    box.docker("rm", "-f", occupiers[0])
    got = json.loads(box.run([box.tool("ds01d"), "allocate", "--json", "--user", "dave", "--full", "--wait", "20s"],
                             timeout=30).stdout)
    assert got["user"] == "dave" and [u["uuid"] for u in got["units"]] == [gpu_uuid(0)]
    assert not box.journal("DS01_USER=alice", "DS01_ACTION=allocate", since_cursor=cursor)


def test_reservation_window_keeps_others_off_and_ends_on_time(env, box, box_cleanup):
    for i, (user, gpus) in enumerate([("erin", f"device={mig_uuid(1, 0)}"), ("frank", f"device={mig_uuid(1, 1)}")]):
        cid = start(box, box_cleanup, f"mig-{i}", user, gpus)    # GPU 1 busy: a whole GPU can only be GPU 0
        box.wait_until(lambda: (env.gpu_state(cid) or {}).get("units"), 5.0, what="occupier recorded")
    start_at = time.time() + 2
    env.write_config(reservation(start_at, start_at + 8))
    box.run(["systemctl", "reload", "ds01d.service"])
    env.wait_decision(DS01_ACTION="reload")
    while time.time() < start_at + 0.5:
        time.sleep(0.1)
    during = start(box, box_cleanup, "in-window", "dave", "device=0")
    entry = env.wait_decision(DS01_CONTAINER=during, DS01_ACTION="stop")
    assert "GPU 0 is reserved for carol until" in entry["DS01_REASON"] and "thesis week" in entry["DS01_REASON"]
    env.wait_record(during, 10.0, status="exited")   # its stop done: dave holds nothing, the reservation says no
    refused = box.run([box.tool("ds01d"), "allocate", "--full", "--user", "dave", "--wait", "0s"], check=False)
    assert refused.returncode == 1 and "0 reserved for carol" in refused.stderr
    while time.time() < start_at + 8.5:
        time.sleep(0.1)
    after = start(box, box_cleanup, "after-window", "dave", "device=0")
    time.sleep(2)
    assert running(box, after)
    env.write_config(CONFIG)
    box.run(["systemctl", "reload", "ds01d.service"])


@pytest.mark.cgroup_v2
def test_ds01_run_lands_in_the_slice_on_the_allocated_device(env, box, box_cleanup):
    name = box_cleanup("via-ds01-run")
    docker_gid = box.run(["getent", "group", "docker"]).stdout.split(":")[2]
    # As alice in the docker group: root is a system account and owns no containers.
    out = box.run(["setpriv", f"--reuid={ALICE}", f"--regid={ALICE}", f"--groups={docker_gid}",
                   box.tool("ds01"), "run", "--gpus", "1", "-d", "--name", name, "busybox:local", "sleep", "600"],
                  env={"PATH": f"{Path(box.tool('ds01d')).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp"})
    assert "ds01 run: GPU" in out.stderr and "for alice, in ds01-students-alice.slice" in out.stderr
    info = json.loads(box.docker("inspect", name).stdout)[0]
    assert info["HostConfig"]["CgroupParent"] == "ds01-students-alice.slice"
    assert info["Config"]["Labels"]["ds01.user"] == "alice"
    assert info["Config"]["Labels"]["ds01.container_type"] == "ds01"
    device_ids = info["HostConfig"]["DeviceRequests"][0]["DeviceIDs"]
    claimed = env.wait_decision(DS01_USER="alice", DS01_ACTION="allocate")
    assert json.loads(box.docker("inspect", "-f", "{{json .State.Running}}", name).stdout)
    assert len(device_ids) == 1 and device_ids[0] in (mig_uuid(1, 0), mig_uuid(1, 1), gpu_uuid(0))
    rec = env.wait_record(info["Id"], 5.0, owner="alice", kind="ds01")
    assert rec["owner_signal"] == "label:ds01.user" and claimed


def test_root_and_system_accounts_get_no_allocation(env, box):
    """Their containers are never theirs (flagged, unowned), so an allocation for them could never
    be claimed and would only keep a device from everyone: refused with the way out."""
    cursor = box.journal_cursor()
    own = box.run([box.tool("ds01d"), "allocate", "--wait", "0s"], check=False)
    assert own.returncode == 1
    assert "root is a system account and owns no containers" in own.stderr
    assert "ds01d allocate --user NAME" in own.stderr and "Traceback" not in own.stderr
    daemon = box.run([box.tool("ds01d"), "allocate", "--user", "daemon", "--wait", "0s"], check=False)
    assert daemon.returncode == 1 and "daemon is a system account" in daemon.stderr
    assert not box.journal("DS01_ACTION=allocate", since_cursor=cursor)
