"""A restart changes nothing: clean, kill -9, and kill -9 twice in a row while the daemon is
still reconciling leave every idle clock, extension, warning sent, deadline and hold exactly
where they were.

Docker replays the last event ds01d handled before it went (its `since` is inclusive), and a
reconcile sees every running container again: neither may count as a new start.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest

from tests.nvml_scenarios import whole_gpu, write
from tests.service import Service, ids_of

pytestmark = pytest.mark.box
ALICE = 2001

CONFIG = textwrap.dedent("""\
    daemon: {state_dir: "{state_dir}", sampling_interval: 1s}
    policies:
      idle_threshold: 5
      idle_window: 1s
      grace_after_start: 0s
      warning_lead_times: [3h]
      max_extension: 1d
      sigterm_grace: 1s
    defaults: {gpu_quota: 2, idle_timeout: 2h, max_runtime: null, gpu_hold_after_stop: 1h}
    default_group: users
    groups:
      users: {}
    """)


@pytest.fixture(scope="module")
def svc(box):
    box.add_user("alice", ALICE)
    service = Service(box, CONFIG, fake_nvml=True)
    write(service.nvml_scenario, [whole_gpu(0), whole_gpu(1)])
    service.reset(CONFIG)
    yield service
    service.stop()


def snapshot(svc, box, ids: list[str]) -> dict[str, Any]:
    """What a restart must not move: per container its GPU state, extensions and warnings sent,
    and what ds01-gpu-status says happens next and when."""
    with svc.db() as db:
        rows = {cid: dict(db.execute("SELECT units, idle_since, released FROM gpu_state WHERE container=?",
                                     (cid,)).fetchone()) for cid in ids}
        extensions = [tuple(r) for r in db.execute("SELECT container, rule, seconds, by_user, at FROM extensions "
                                                   "ORDER BY at")]
        warnings = [tuple(r) for r in db.execute("SELECT * FROM warnings ORDER BY sent")]
    doc = json.loads(box.run([box.tool("ds01-gpu-status"), "--json"]).stdout)
    units = [unit for gpu in doc["gpus"] for unit in gpu["units"]]
    nexts = {c["id"]: {k: c["next"][k] for k in ("action", "rule", "at")}
             for unit in units for c in unit["containers"] if c["next"]}
    return {"gpu_state": rows, "extensions": extensions, "warnings": warnings,
            "next": {cid[:12]: nexts.get(cid[:12]) for cid in ids},
            "held_for": {unit["index"]: unit["held_for"] for unit in units}}


def unchanged(svc, box, ids: list[str], before: dict[str, Any]) -> bool:
    """The snapshot equals `before` once the restarted daemon has published its first pass
    (until then the status has no deadlines at all); else the difference, for the report."""
    try:
        box.wait_until(lambda: snapshot(svc, box, ids) == before, 10.0, what="the same state after the restart")
    except TimeoutError:
        assert snapshot(svc, box, ids) == before
    return True


def restarted(svc, box, how: list[str]) -> None:
    before = int(svc.show("NRestarts")["NRestarts"])
    pid = svc.main_pid()
    box.run(how)
    box.wait_until(lambda: svc.main_pid() not in (0, pid) and svc.show("ActiveState")["ActiveState"] == "active",
                   20.0, what="ds01d back")
    if "KILL" in how:
        assert int(svc.show("NRestarts")["NRestarts"]) == before + 1


def test_restarts_leave_clocks_extensions_warnings_and_holds_alone(svc, box, box_cleanup):
    box.docker("run", "-d", "--name", box_cleanup("stopped"), "--label", "ds01.user=alice", "--gpus", "device=1",
               "busybox:local", "sleep", "600")
    stopped = ids_of(box, ["stopped"])["stopped"]
    box.wait_until(lambda: (svc.gpu_state(stopped) or {}).get("units"), 5.0, what="its devices recorded")
    box.docker("stop", "-t", "0", stopped)
    box.wait_until(lambda: (svc.record(stopped) or {}).get("status") == "exited", 5.0, what="the stop recorded")
    # Started last: its start is the event Docker replays to the restarted daemon.
    box.docker("run", "-d", "--name", box_cleanup("idler"), "--label", "ds01.user=alice", "--gpus", "device=0",
               "busybox:local", "sleep", "600")
    idler = ids_of(box, ["idler"])["idler"]
    box.wait_until(lambda: (svc.gpu_state(idler) or {}).get("idle_since"), 10.0, what="the idle clock running")
    svc.wait_decision(10.0, DS01_CONTAINER=idler, DS01_ACTION="warn-idle")
    out = box.run_as(ALICE, [box.tool("ds01d"), "extend", "idler", "3h"])
    assert "idle stop now at" in out.stdout
    ids = [idler, stopped]
    # The view is published after the pass that follows the extension (within a second).
    stop_at = out.stdout.split(" stop now at ")[1].split()[0]
    before = box.wait_until(lambda: (s := snapshot(svc, box, ids))["next"][idler[:12]] and
                            s["next"][idler[:12]]["at"] == stop_at and s, 10.0,
                            what="the extension in the published status")
    assert before["extensions"] and before["warnings"] and before["next"][idler[:12]]["action"] == "stop"
    assert before["held_for"]["1"]["user"] == "alice"
    cursor = box.journal_cursor()

    for how in (["systemctl", "restart", "ds01d.service"],
                ["systemctl", "kill", "-s", "KILL", "ds01d.service"]):
        restarted(svc, box, how)
        svc.start()
        assert unchanged(svc, box, ids, before), how
    # Twice in a row, the second while the first restart is still reconciling.
    restarted(svc, box, ["systemctl", "kill", "-s", "KILL", "ds01d.service"])
    restarted(svc, box, ["systemctl", "kill", "-s", "KILL", "ds01d.service"])
    svc.start()
    assert unchanged(svc, box, ids, before)
    said = box.journal(unit="ds01d.service", since_cursor=cursor)
    assert not [e for e in said if e.get("DS01_ACTION") in ("warn-idle", "stop", "release")], said
