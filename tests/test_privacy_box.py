"""show_other_users: false means a non-admin learns nothing of other users, wherever they look:
refusals, 404 rather than 403 for others' containers, allocation refusals, their own recent
decisions, usage, and the state database on disk."""

from __future__ import annotations

import json
import os
import textwrap

import pytest

from tests.nvml_scenarios import whole_gpu, write
from tests.service import Service, ids_of

pytestmark = pytest.mark.box
ALICE, BOB = 2001, 2002

CONFIG = textwrap.dedent("""\
    daemon: {state_dir: "{state_dir}", sampling_interval: 1s, show_other_users: false}
    policies: {grace_after_start: 0s, idle_window: 1s, sigterm_grace: 1s, max_extension: 1h}
    defaults: {gpu_quota: 1, idle_timeout: 30m, gpu_hold_after_stop: 1h}
    """)


@pytest.fixture(scope="module")
def env(box):
    box.add_user("alice", ALICE)
    box.add_user("bob", BOB)
    svc = Service(box, CONFIG, fake_nvml=True)
    write(svc.nvml_scenario, [whole_gpu(0)])
    svc.reset(CONFIG)
    yield svc
    svc.stop()


def ds01d_as(box, uid, *args):
    return box.run_as(uid, [box.tool("ds01d"), *args], check=False)


def test_nothing_of_bob_reaches_alice(env, box, box_cleanup):
    box.docker("run", "-d", "--name", box_cleanup("bobs-secret-run"), "--label", "ds01.user=bob",
               "--gpus", "device=0", "busybox:local", "sleep", "600")
    bobs = ids_of(box, ["bobs-secret-run"])["bobs-secret-run"]
    box.wait_until(lambda: (env.gpu_state(bobs) or {}).get("verdict"), 10.0, what="bob's container sampled")
    box.docker("stop", "-t", "0", bobs)     # GPU 0 is now held for bob for an hour
    env.wait_record(bobs, 5.0, status="exited")

    # Another user's container is "no container", exactly as a name that does not exist.
    for ref in ("bobs-secret-run", bobs[:12]):
        for action in (["release", ref], ["extend", ref, "10m"]):
            theirs, missing = ds01d_as(box, ALICE, *action), ds01d_as(box, ALICE, *action[:1], "no-such", *action[2:])
            assert theirs.returncode == missing.returncode == 1
            assert theirs.stderr == missing.stderr.replace("no-such", ref), (theirs.stderr, missing.stderr)

    # An allocation refused names no one.
    refused = ds01d_as(box, ALICE, "allocate", "--wait", "0s")
    assert refused.returncode == 1 and "another user" in refused.stderr and "bob" not in refused.stderr

    # alice's own container stopped for bob's device: her recent decisions say why, without bob.
    box.docker("run", "-d", "--name", box_cleanup("alice-intruder"), "--label", "ds01.user=alice",
               "--gpus", "device=0", "busybox:local", "sleep", "600")
    alices = ids_of(box, ["alice-intruder"])["alice-intruder"]
    entry = env.wait_decision(DS01_CONTAINER=alices, DS01_ACTION="stop")
    assert "bob" in entry["DS01_REASON"]          # the journal is the admins': full names
    mine = box.wait_until(lambda: [e for e in json.loads(box.run_as(ALICE, [box.tool("ds01-gpu-status"), "--json"])
                                                     .stdout)["recent"] if e["action"] == "stop"], 10.0,
                          what="the stop in alice's recent decisions")
    assert "another user" in mine[0]["reason"] and "bob" not in mine[0]["reason"]
    status = box.run_as(ALICE, [box.tool("ds01-gpu-status"), "--json"]).stdout + \
        box.run_as(ALICE, [box.tool("ds01-gpu-status")]).stdout
    assert "bob" not in status

    # Usage through the socket: her own only; the file itself is root's.
    box.wait_until(lambda: json.loads(box.run([box.tool("ds01d"), "usage", "--json", "--config",
                                                str(env.config_path)]).stdout)["users"], 10.0,
                   what="usage recorded")
    hers = ds01d_as(box, ALICE, "usage", "--json", "--config", str(env.config_path))
    assert hers.returncode == 0, hers.stderr
    assert {u["user"] for u in json.loads(hers.stdout)["users"]} <= {"alice"}
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        assert os.stat(env.state_dir / name).st_mode & 0o777 == 0o600, name
