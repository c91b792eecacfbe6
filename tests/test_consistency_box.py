"""The allocator and the start check agree, end to end (issue 12): containers nobody owns,
and containers stopped at their start, in the box with real Docker and the fake NVML.

A device `ds01d allocate` hands out is one a container may start on; nothing is ever
"held for None".
"""

from __future__ import annotations

import json
import textwrap
import time

import pytest

from tests.nvml_scenarios import gpu_uuid, mig_gpu, mig_uuid, whole_gpu, write
from tests.service import Service, ids_of

pytestmark = pytest.mark.box
ALICE = 2001
PASS = 1.0

CONFIG = textwrap.dedent("""\
    daemon: {state_dir: "{state_dir}", sampling_interval: 1s}
    policies: {grace_after_start: 0s, sigterm_grace: 1s, allocation_timeout: 1m, allocation_wait: 20s}
    defaults: {gpu_quota: 1, gpu_hold_after_stop: 10m, idle_timeout: null, max_runtime: null}
    default_group: students
    groups:
      students: {}
    """)


@pytest.fixture(scope="module")
def env(box):
    box.add_user("alice", ALICE)
    svc = Service(box, CONFIG, fake_nvml=True)
    write(svc.nvml_scenario, [whole_gpu(0), mig_gpu(1, [{"slices": 3}, {"slices": 4}])])
    svc.reset(CONFIG)
    yield svc
    svc.stop()


def start(box, cleanup, name, device, user=None):
    """A container on `device`; without `user` root starts it with no owner signal: unowned."""
    label = ["--label", f"ds01.user={user}"] if user else []
    box.docker("run", "-d", "--name", cleanup(name), *label, "--gpus", f"device={device}",
               "busybox:local", "sleep", "600")
    return ids_of(box, [name])[name]


def on_gpu(env, box, cid):
    box.wait_until(lambda: (env.gpu_state(cid) or {}).get("units"), 5.0, what=f"{cid[:12]} on its GPU")


def allocate_as_alice(box, *args):
    return box.run(["setpriv", f"--reuid={ALICE}", f"--regid={ALICE}", "--clear-groups",
                    box.tool("ds01d"), "allocate", "--json", *args], check=False, timeout=30)


def running(box, cid) -> bool:
    return box.docker("inspect", "-f", "{{.State.Running}}", cid).stdout.strip() == "true"


def stays_running(env, box, cid) -> None:
    """Running, and never stopped, two sampling passes after it started."""
    started = env.wait_record(cid, 5.0, status="running")["started_at"]
    box.wait_until(lambda: time.time() >= started + 2 * PASS + 0.5, 5.0, what="two passes")
    assert running(box, cid), env.decisions(DS01_CONTAINER=cid, DS01_ACTION="stop")
    assert not env.decisions(DS01_CONTAINER=cid, DS01_ACTION="stop")


def no_none_since(box, cursor) -> None:
    entries = box.journal(unit="ds01d.service", since_cursor=cursor)
    assert not [e["MESSAGE"] for e in entries if "None" in e.get("MESSAGE", "")]


def test_an_unowned_hold_keeps_nothing_so_an_allocated_device_is_never_held_for_none(env, box, box_cleanup):
    cursor = box.journal_cursor()
    orphan = start(box, box_cleanup, "orphan-stopped", mig_uuid(1, 0))
    on_gpu(env, box, orphan)
    assert env.wait_record(orphan, 5.0, status="running")["owner"] is None
    box.docker("stop", "-t", "0", orphan)
    env.wait_record(orphan, 5.0, status="exited")
    released = env.wait_decision(5.0, DS01_CONTAINER=orphan, DS01_ACTION="release")
    assert "no owner to hold its GPUs for" in released["DS01_REASON"]
    got = allocate_as_alice(box, "--wait", "0s")
    assert got.returncode == 0, got.stderr
    device = json.loads(got.stdout)["units"][0]["uuid"]
    assert device == mig_uuid(1, 0)        # students get the smallest MIG instance: the orphan's
    mine = start(box, box_cleanup, "alice-after-orphan", device, "alice")
    stays_running(env, box, mine)
    no_none_since(box, cursor)


def test_an_unowned_running_container_keeps_its_device_from_the_allocator(env, box, box_cleanup):
    cursor = box.journal_cursor()
    orphan = start(box, box_cleanup, "orphan-running", mig_uuid(1, 0))
    on_gpu(env, box, orphan)
    got = allocate_as_alice(box, "--wait", "0s")
    assert got.returncode == 0, got.stderr
    device = json.loads(got.stdout)["units"][0]["uuid"]
    assert device == mig_uuid(1, 1)
    mine = start(box, box_cleanup, "alice-beside-orphan", device, "alice")
    stays_running(env, box, mine)
    other = start(box, box_cleanup, "erin-on-0", "0", "erin")
    on_gpu(env, box, other)
    refused = box.run([box.tool("ds01d"), "allocate", "--user", "bob", "--wait", "0s"], check=False)
    assert refused.returncode == 1 and "1:0 in use by an unowned container orphan-running" in refused.stderr
    assert "None" not in refused.stderr
    no_none_since(box, cursor)


def test_a_container_stopped_at_its_start_leaves_no_hold_on_the_device(env, box, box_cleanup):
    holder = start(box, box_cleanup, "hana-holder", "0", "hana")
    on_gpu(env, box, holder)
    box.docker("stop", "-t", "0", holder)
    env.wait_record(holder, 5.0, status="exited")
    intruder = start(box, box_cleanup, "ida-intruder", "0", "ida")
    entry = env.wait_decision(DS01_CONTAINER=intruder, DS01_ACTION="stop")
    assert "held for hana" in entry["DS01_REASON"]
    env.wait_record(intruder, 10.0, status="exited")
    box.docker("start", holder)                    # hana comes back to her own device
    stays_running(env, box, holder)
    assert env.gpu_state(holder)["units"] == json.dumps([gpu_uuid(0)])
