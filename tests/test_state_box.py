"""A damaged or unwritable state database: ds01d says so and goes on enforcing.

What an admin would check: the service stays up without restarts (no crash loop), the
journal names the file and what happened to it, STATUS= says the state is in memory,
slices still get their limits and rules still stop containers, and once the disk takes
writes again everything decided meanwhile is in the file.
"""

from __future__ import annotations

import json
import os
import textwrap

import pytest

from tests.service import Service, ids_of

pytestmark = pytest.mark.box

CONFIG = textwrap.dedent("""\
    daemon:
      state_dir: {state_dir}
      sampling_interval: 1s
    policies:
      sigterm_grace: 1s
    default_group: students
    groups:
      students: {cpus: 2, max_containers: 1}
    """)


@pytest.fixture
def svc(box):
    service = Service(box, CONFIG)
    service.reset(CONFIG)
    yield service
    service.stop()
    box.run(["umount", str(service.state_dir)], check=False)


def run(box, cleanup, name, user):
    box.docker("run", "-d", "--name", cleanup(name), "--label", f"ds01.user={user}", "busybox:local",
               "sleep", "600")
    return ids_of(box, [name])[name]


#: Read in the box, where the tmpfs is (the host sees the directory under it).
READ_BACK = textwrap.dedent("""\
    import json, sqlite3, sys
    db = sqlite3.connect(sys.argv[1])
    print(json.dumps([dict(db.execute("SELECT id, owner FROM containers")),
                      [r[0] for r in db.execute("SELECT container FROM audit WHERE action='stop'")]]))
    """)


def test_a_damaged_state_db_is_kept_aside_and_ds01d_starts(svc, box, box_cleanup):
    svc.stop()
    db = svc.state_dir / "state.db"
    garbage = os.urandom(16384)
    db.write_bytes(garbage)
    svc.start()
    said = svc.wait_decision(DS01_ACTION="state-trouble")
    assert str(db) in said["DS01_REASON"] and "damaged" in said["DS01_REASON"]
    aside = [p for p in svc.state_dir.iterdir() if p.name.startswith("state.db.damaged-")]
    assert len(aside) == 1 and aside[0].read_bytes() == garbage
    assert svc.show("NRestarts")["NRestarts"] == "0"
    cid = run(box, box_cleanup, "after-damage", "alice")
    assert svc.wait_record(cid, 5.0, owner="alice")["status"] == "running"


def test_a_full_disk_keeps_enforcement_going_and_loses_nothing(svc, box, box_cleanup):
    svc.stop()
    box.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs", str(svc.state_dir)])
    svc.start()
    box.wait_until(lambda: box.run(["test", "-s", str(svc.state_dir / "state.db")], check=False).returncode == 0,
                   5.0, what="the state database on the tmpfs")
    # The disk fills up (a runaway log, say): the next write that needs a block fails.
    filler = svc.state_dir / "filler"
    box.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], check=False)

    first = run(box, box_cleanup, "quinn-1", "quinn")
    said = svc.wait_decision(DS01_ACTION="state-trouble", timeout=10.0)
    assert "running from memory" in said["DS01_REASON"] and "check the disk" in said["DS01_REASON"]
    box.wait_until(lambda: "state database unavailable" in svc.show("StatusText")["StatusText"], 5.0,
                   what="the gap in STATUS=")
    # Enforcement goes on: quinn's slice gets its limits, and a second container is over max_containers.
    box.wait_until(lambda: box.systemctl_show("ds01-students-quinn.slice", "CPUQuotaPerSecUSec")
                   ["CPUQuotaPerSecUSec"] == "2s", 10.0, what="quinn's slice limited")
    second = run(box, box_cleanup, "quinn-2", "quinn")
    box.wait_until(lambda: box.docker("ps", "-q", "--no-trunc", "--filter", "label=ds01.user=quinn").stdout.split()
                   == [first], 15.0, what="the container over max_containers stopped")

    box.run(["rm", str(filler)])
    back = svc.wait_decision(DS01_ACTION="state-restored", timeout=20.0)
    assert "nothing was lost" in back["DS01_REASON"]
    box.wait_until(lambda: "state database unavailable" not in svc.show("StatusText")["StatusText"], 5.0,
                   what="STATUS= back to normal")
    owners, stops = json.loads(box.run([box.python, "-c", READ_BACK, str(svc.state_dir / "state.db")]).stdout)
    assert owners.get(first) == "quinn" and owners.get(second) == "quinn" and second in stops
    assert svc.show("NRestarts")["NRestarts"] == "0"
