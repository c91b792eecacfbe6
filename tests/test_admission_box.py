"""ds01d's side of the gateway's door: POST /v1/admit, asked by root for a caller's uid.

What the gateway will rely on: the caller's slice exists with its limits before the answer,
the mark verifies against ds01d's key for exactly that owner, and refusals (no account, a
system account, max_containers, anyone but root asking) are one sentence each."""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

from ds01d.rules.admission_mark import verify
from tests.box.box import BOX_CHECKOUT
from tests.service import Service, ids_of

pytestmark = pytest.mark.box
ALICE = 2001
TOOLS = f"{BOX_CHECKOUT}/tests/tools"

CONFIG = textwrap.dedent("""\
    daemon: {state_dir: "{state_dir}", sampling_interval: 1s}
    default_group: students
    groups:
      students: {cpus: 3, max_containers: 1}
    """)


@pytest.fixture(scope="module")
def svc(box):
    box.add_user("alice", ALICE)
    service = Service(box, CONFIG)
    service.reset(CONFIG)
    yield service
    service.stop()


def admit(box, uid: int, as_uid: int = 0) -> tuple[int, dict]:
    body = json.dumps({"uid": uid}).encode()
    request = b"POST /v1/admit HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    argv = ["setpriv", f"--reuid={as_uid}", f"--regid={as_uid}", "--clear-groups", box.python,
            f"{TOOLS}/raw_http.py", "/run/ds01/ds01d.sock"]
    out = subprocess.run(box.command(argv), input=request, capture_output=True, timeout=60, check=True).stdout
    head, _, doc = out.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(doc)


def test_a_users_admission_makes_their_slice_first_and_marks_them(svc, box):
    box.run(["systemctl", "stop", "ds01-students-alice.slice"], check=False)
    code, doc = admit(box, ALICE)
    assert code == 200 and doc["admin"] is False and doc["user"] == "alice"
    assert doc["slice"] == "ds01-students-alice.slice"
    shown = box.systemctl_show("ds01-students-alice.slice", "ActiveState", "CPUQuotaPerSecUSec")
    assert shown == {"ActiveState": "active", "CPUQuotaPerSecUSec": "3s"}
    key = (svc.state_dir / "admission.key").read_bytes()
    assert (svc.state_dir / "admission.key").stat().st_mode & 0o777 == 0o600
    assert verify(key, ALICE, "alice", doc["mark"]) and not verify(key, ALICE + 1, "alice", doc["mark"])


def test_root_is_unrestricted_and_refusals_are_one_sentence(svc, box, box_cleanup):
    assert admit(box, 0) == (200, {"admin": True, "user": "root", "uid": 0})
    code, doc = admit(box, 4_000_000)
    assert code == 403 and "has no account on this host" in doc["error"]
    code, doc = admit(box, 1)        # daemon: a system account
    assert code == 403 and "system account" in doc["error"]
    code, doc = admit(box, ALICE, as_uid=ALICE)
    assert code == 403 and "only the Docker gateway (root)" in doc["error"]
    box.docker("run", "-d", "--name", box_cleanup("alices-one"), "--label", "ds01.user=alice",
               "busybox:local", "sleep", "600")
    svc.wait_record(ids_of(box, ["alices-one"])["alices-one"], 5.0, status="running")
    code, doc = admit(box, ALICE)
    assert code == 409 and "may run 1 at once (max_containers)" in doc["error"]
