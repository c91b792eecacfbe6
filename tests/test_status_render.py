"""Golden screens of ds01-gpu-status, from status views built by hand (ANSI stripped).

Regenerate after a deliberate change with UPDATE_GOLDEN=1 and read the diff.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest

from ds01d.rules.gpu_units import GpuProcess, Inventory, Unit, UnitSample
from ds01d.rules.lifecycle import Deadline
from ds01d.rules.records import ContainerRecord, GpuState
from ds01d.daemon.status_model import Caller, StatusView, build
from ds01d.rules.placement import Hold
from ds01d.cli.status_render import render

GOLDEN = Path(__file__).parent / "golden"
NOW = 1795521600.0  # 2026-11-24 12:00:00 UTC
ANSI = re.compile(r"\033\[[0-9;]*m")
ALICE = Caller("alice", 1000, False)

H100 = "NVIDIA H100 80GB HBM3"
WHOLE = (Unit("GPU-0", "0", H100, "GPU-0", 0, 1.0, 80 * 2**30), Unit("GPU-1", "1", H100, "GPU-1", 1, 1.0, 80 * 2**30))
MIG = tuple(Unit(f"MIG-{i}", f"2:{i}", f"{H100} MIG {p}", "GPU-2", 2, s / 7, m * 2**30, p, i + 1, 0)
            for i, (p, s, m) in enumerate([("3g.40gb", 3, 40), ("2g.20gb", 2, 20), ("2g.20gb", 2, 20)]))
A100_MIG = (Unit("MIG-a", "3:0", "NVIDIA A100-SXM4-80GB MIG 7g.80gb", "GPU-3", 3, 1.0, 80 * 2**30, "7g.80gb", 1, 0),)


def rec(cid, name, owner, status="running", started=NOW - 8100, kind="docker", finished=None):
    return ContainerRecord(id=cid * 12, name=name, image="img", owner=owner, owner_signal="label:ds01.user",
                           kind=kind, group="students", slice=None, cgroup_parent="",
                           gpu_request={"source": "DeviceRequests"}, flags=(), status=status, started_at=started,
                           finished_at=finished)


def sample(unit, activity, used_gib=0.0, reason=None, pids=()):
    source = None if activity is None else ("GPM GRAPHICS_UTIL" if unit.is_mig else "utilization.gpu")
    return UnitSample(unit.uuid, int(used_gib * 2**30), activity, source, reason,
                      tuple(GpuProcess(p, 1) for p in pids))


def view(units, records=(), states=None, samples=(), upcoming=None, holds=(), quotas=None, recent=(), **kw):
    gpu_indexes = {u.gpu_uuid: u.gpu_index for u in units}
    return StatusView(now=NOW, records=tuple(records), gpu_states=states or {},
                      inventory=Inventory(tuple(units), gpu_indexes, "550.54.15"),
                      samples={s.uuid: s for s in samples}, upcoming=upcoming or {}, holds=tuple(holds),
                      quotas=quotas or {}, recent=tuple(recent), docker_connected=True, sampling_interval=10,
                      quota_of=lambda user: 1.0, **kw)


def scenes() -> dict[str, StatusView]:
    a, b = rec("a", "training", "alice", kind="ds01"), rec("b", "inference", "bob", started=NOW - 2700)
    c = rec("c", "notebook", "carol", started=NOW - 720)
    held = rec("h", "finetune", "dave", status="exited", finished=NOW - 600)
    return {
        "no_gpus": view((), cpu_only="nvidia-ml-py is not installed; running CPU-only"),
        "whole_gpus": view(
            WHOLE, [a], {a.id: GpuState(a.id, ("GPU-0",), None, "busy", "0: utilization", 85.0)},
            [sample(WHOLE[0], 85, 18.2, pids=(1,)), sample(WHOLE[1], 0)],
            {a.id: Deadline("runtime", NOW + 40 * 3600, a.started_at or 0, 48 * 3600)},
            quotas={"alice": (1.0, 1.0)}),
        "mig": view(
            MIG, [b, c], {b.id: GpuState(b.id, ("MIG-0",), None, "busy", "2:0: gpm", 92.0),
                          c.id: GpuState(c.id, ("MIG-1",), NOW - 300, "idle", "2:1: gpm", 0.0)},
            [sample(MIG[0], 92, 19.5), sample(MIG[1], 0, 0.9), sample(MIG[2], 0)],
            {b.id: Deadline("runtime", NOW + 3 * 3600, b.started_at or 0, 4 * 3600),
             c.id: Deadline("idle", NOW + 1500, NOW - 300, 1800)}),
        "unknown_activity": view(
            A100_MIG, [c], {c.id: GpuState(c.id, ("MIG-a",), NOW - 300, "unknown",
                                           "3:0: MIG instance on a GPU without GPM (before Hopper)", None)},
            [sample(A100_MIG[0], None, 12.0, reason="MIG instance on a GPU without GPM (before Hopper)")],
            {c.id: Deadline("runtime", NOW + 3600, c.started_at or 0, 7200)}),
        "held_device": view(
            WHOLE, [held], {held.id: GpuState(held.id, ("GPU-1",))}, [sample(WHOLE[0], 0), sample(WHOLE[1], 0)],
            holds=[Hold(held.id, "dave", "finetune", ("GPU-1",), NOW + 3000)]),
        "over_quota": view(
            MIG, [dataclasses.replace(a, id="d" * 12, name="big"), dataclasses.replace(a, id="e" * 12, name="bigger")],
            {"d" * 12: GpuState("d" * 12, ("MIG-0",), None, "busy", "", 60.0),
             "e" * 12: GpuState("e" * 12, ("MIG-1", "MIG-2"), None, "busy", "", 70.0)},
            [sample(MIG[0], 60), sample(MIG[1], 70), sample(MIG[2], 70)],
            quotas={"alice": (0.5, 1.0)},
            recent=[{"at": "2026-11-24T11:58:00Z", "action": "stop", "user": "alice", "container_name": "biggest",
                     "reason": "alice would hold 1.43 GPU-equivalents with this container (1 already held) and "
                               "the quota is 0.5; stop or remove a GPU container first"}]),
    }


@pytest.mark.parametrize("name", sorted(scenes()))
def test_golden_screen(name):
    text = render(build(scenes()[name], ALICE), color=True)
    plain = ANSI.sub("", text)
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(plain)
    assert plain == path.read_text()
    assert render(build(scenes()[name], ALICE), color=False) == plain   # --no-color is the same minus escapes


def test_colour_marks_free_and_soon():
    text = render(build(scenes()["mig"], ALICE), color=True)
    assert "\033[32mfree\033[0m" in text
    assert "\033[33mstops in 25m (idle)\033[0m" in text


def test_other_users_can_be_hidden():
    hidden = dataclasses.replace(scenes()["mig"], show_other_users=False)
    doc = build(hidden, ALICE)
    owners = [c["owner"] for g in doc["gpus"] for u in g["units"] for c in u["containers"]]
    assert owners == ["(another user)", "(another user)"]
    assert all(c["name"] is None for g in doc["gpus"] for u in g["units"] for c in u["containers"])
    assert build(hidden, Caller("root", 0, True))["gpus"][0]["units"][0]["containers"][0]["owner"] == "bob"


@pytest.mark.parametrize("name", sorted(scenes()))
def test_documents_follow_the_schema(name):
    from tests.schema_check import errors
    assert errors(build(scenes()[name], ALICE)) == []


def test_the_schema_check_catches_drift():
    from tests.schema_check import errors
    doc = build(scenes()["mig"], ALICE)
    doc["gpus"][0]["units"][0]["surprise"] = 1
    doc["me"]["gpu_used"] = "lots"
    assert errors(doc) == ["$.gpus[0].units[0]: undocumented 'surprise'", "$.me.gpu_used: str is not number"]
