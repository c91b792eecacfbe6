"""Units, request resolution, container attribution and attributable activity."""

import pytest

from ds01d.rules.gpu_request import GpuRequest
from ds01d.rules.gpu_units import (GpuProcess, Inventory, Unit, UnitSample, attributable_activity, container_of_cgroup,
                        gpu_equivalents, resolve_request)

CID = "a" * 64
INV = Inventory(
    units=(Unit("GPU-0", "0", "H100", "GPU-0", 0, 1.0, 80),
           Unit("MIG-a", "1:0", "H100 MIG 3g.40gb", "GPU-1", 1, 3 / 7, 40, "3g.40gb", 1, 0),
           Unit("MIG-b", "1:1", "H100 MIG 4g.40gb", "GPU-1", 1, 4 / 7, 40, "4g.40gb", 2, 0)),
    gpu_indexes={"GPU-0": 0, "GPU-1": 1})


@pytest.mark.parametrize("request_,units,unknown", [
    (GpuRequest(all_gpus=True), ["GPU-0", "MIG-a", "MIG-b"], []),
    (GpuRequest(device_ids=("0",)), ["GPU-0"], []),
    (GpuRequest(device_ids=("1",)), ["MIG-a", "MIG-b"], []),           # a partitioned GPU: all its instances
    (GpuRequest(device_ids=("GPU-1",)), ["MIG-a", "MIG-b"], []),
    (GpuRequest(device_ids=("1:1",)), ["MIG-b"], []),
    (GpuRequest(device_ids=("MIG-a", "MIG-a")), ["MIG-a"], []),
    (GpuRequest(count=1), ["GPU-0"], []),
    (GpuRequest(device_ids=("7", "GPU-x")), [], ["7", "GPU-x"]),
])
def test_resolve_request(request_, units, unknown):
    found, missing = resolve_request(request_, INV)
    assert ([u.uuid for u in found], missing) == (units, unknown)


def test_gpu_equivalents_count_mig_as_share():
    assert gpu_equivalents(INV.units) == 2.0
    assert gpu_equivalents(INV.units[1:2]) == round(3 / 7, 6)


@pytest.mark.parametrize("text", [
    f"0::/system.slice/docker-{CID}.scope\n",                                        # v2, systemd driver
    f"12:memory:/ds01.slice/ds01-s.slice/ds01-s-alice.slice/docker-{CID}.scope\n1:name=systemd:/x\n",
    f"4:pids:/docker/{CID}\n",                                                        # v1, cgroupfs driver
    f"0::/my-parent/{CID}\n",                                                         # cgroupfs, --cgroup-parent
])
def test_container_of_cgroup(text):
    assert container_of_cgroup(text) == CID


def test_host_process_has_no_container():
    assert container_of_cgroup("0::/user.slice/user-1000.slice/session-2.scope\n") is None


def sample(activity, *procs, reason=None):
    return UnitSample("GPU-0", 0, activity, "utilization" if activity is not None else None, reason, tuple(procs))


def test_attributable_activity():
    assert attributable_activity(sample(90, GpuProcess(5, 1)), [6]) == (0.0, "no GPU process of this container")
    assert attributable_activity(sample(90, GpuProcess(5, 1)), [5]) == (90, "utilization")
    assert attributable_activity(sample(None, GpuProcess(5, 1), reason="why"), [5]) == (None, "why")
    shared = sample(90, GpuProcess(5, 1, 10.0), GpuProcess(6, 1, 80.0))
    assert attributable_activity(shared, [5]) == (10.0, "per-process SM utilization")
    blind = sample(90, GpuProcess(5, 1), GpuProcess(6, 1))
    assert attributable_activity(blind, [5])[0] is None


def test_no_process_of_ours_is_idle_only_where_the_process_lists_were_read_in_full():
    gap = UnitSample("GPU-0", 0, 0.0, "utilization.gpu", None, (GpuProcess(5, 1),),
                     process_gap="MPS processes: Timeout")
    activity, why = attributable_activity(gap, [6])
    assert activity is None and "MPS processes: Timeout" in why


def test_gpm_of_a_gpu_instance_is_shared_by_its_compute_instances():
    """GPM measures the GPU instance: busy work on a sibling compute instance is not ours."""
    ci0 = UnitSample("MIG-c0", 0, 90.0, "GPM GRAPHICS_UTIL", None, (GpuProcess(5, 1),),
                     shared_with=(GpuProcess(6, 1),))
    assert attributable_activity(ci0, [5], threshold=5)[0] is None
    alone = UnitSample("MIG-c0", 0, 90.0, "GPM GRAPHICS_UTIL", None, (GpuProcess(5, 1),))
    assert attributable_activity(alone, [5], threshold=5) == (90.0, "GPM GRAPHICS_UTIL")


def test_gpu_equivalents_count_a_split_gpu_instance_once():
    ci = [Unit(f"MIG-c{i}", f"1:{i}", "A30 MIG 1c.2g.12gb", "GPU-1", 1, 2 / 4, 12, "1c.2g.12gb", 1, i)
          for i in range(2)]
    assert gpu_equivalents(ci) == 0.5
    assert gpu_equivalents(ci + [INV.units[0]]) == 1.5
