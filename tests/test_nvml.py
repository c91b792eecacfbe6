"""ds01d's NVML adapter, run for real against the scenario fake of pynvml."""

import time

import pytest

from ds01d.testing import fake_pynvml
from ds01d.rules.gpu_units import Inventory
from ds01d.host.nvml import MIG_NO_GPM, Nvml, NvmlUnavailable
from tests.nvml_scenarios import gpu_uuid, mig_gpu, mig_uuid, whole_gpu, write


@pytest.fixture
def nvml(tmp_path):
    path = tmp_path / "scenario.json"
    write(path, [
        whole_gpu(0, utilization=40, processes=[{"pid": 11, "used_memory_mib": 100, "sm_util": 30},
                                                {"pid": 12, "used_memory_mib": 200, "sm_util": 0}]),
        mig_gpu(1, [{"slices": 3, "sm_activity": 55, "processes": [{"pid": 21, "used_memory_mib": 50}]},
                    {"slices": 2, "sm_activity": 0}, {"slices": 2}]),
        mig_gpu(2, [{"slices": 7}], gpm=False, name="NVIDIA A100-SXM4-80GB"),
    ])
    fake_pynvml.use_scenario(str(path))
    session = Nvml.open(fake_pynvml)
    yield session, path
    session.close()


def test_inventory_has_whole_gpus_and_mig_instances(nvml):
    session, _ = nvml
    inv = session.inventory()
    assert inv.driver == "550.54.15"
    assert [(u.index, u.profile, round(u.share, 3)) for u in inv.units] == [
        ("0", None, 1.0), ("1:0", "3g.30gb", 0.429), ("1:1", "2g.20gb", 0.286), ("1:2", "2g.20gb", 0.286),
        ("2:0", "7g.70gb", 1.0)]
    assert inv.units[1].uuid == mig_uuid(1, 0) and inv.units[1].gpu_uuid == gpu_uuid(1)
    assert (inv.units[1].gpu_instance_id, inv.units[1].compute_instance_id) == (1, 0)
    assert inv.gpu_indexes == {gpu_uuid(0): 0, gpu_uuid(1): 1, gpu_uuid(2): 2}


def test_activity_sources_and_unknown(nvml):
    session, _ = nvml
    inv = session.inventory()
    first = {s.uuid: s for s in session.sample(inv)}
    whole = first[gpu_uuid(0)]
    assert (whole.activity, whole.activity_source) == (40.0, "utilization")
    assert {p.pid: p.sm_util for p in whole.processes} == {11: 30.0, 12: 0.0}
    assert first[mig_uuid(1, 0)].activity is None  # GPM needs two samples
    second = {s.uuid: s for s in session.sample(inv)}
    assert (second[mig_uuid(1, 0)].activity, second[mig_uuid(1, 0)].activity_source) == (55.0, "gpm")
    assert [p.pid for p in second[mig_uuid(1, 0)].processes] == [21]
    a100 = second[mig_uuid(2, 0)]
    assert (a100.activity, a100.unknown_reason) == (None, MIG_NO_GPM)


def test_one_failing_gpu_does_not_stop_the_others(nvml):
    session, path = nvml
    inv = session.inventory()
    write(path, [whole_gpu(0, utilization=5), mig_gpu(1, [{"slices": 3}, {"slices": 2}, {"slices": 2}]),
                 {**mig_gpu(2, [{"slices": 7}], gpm=False), "fail": "fell off the bus"}])
    samples = {s.uuid: s for s in session.sample(inv)}
    assert samples[gpu_uuid(0)].activity == 5.0
    assert samples[mig_uuid(2, 0)].error is not None and samples[mig_uuid(2, 0)].activity is None
    again = session.inventory()
    assert [u.index for u in again.units] == ["0", "1:0", "1:1", "1:2"]
    assert "GPU 2" in session.errors


def test_no_library_means_cpu_only():
    fake_pynvml.use_scenario(None)
    with pytest.raises(NvmlUnavailable, match="NVML did not start"):
        Nvml.open(fake_pynvml)


def test_the_fake_answers_like_nvml_on_mig(nvml):
    session, _ = nvml
    nv = session.nv
    handle = nv.nvmlDeviceGetMigDeviceHandleByIndex(nv.nvmlDeviceGetHandleByIndex(1), 0)
    with pytest.raises(nv.NVMLError_NotSupported):
        nv.nvmlDeviceGetUtilizationRates(handle)
    with pytest.raises(nv.NVMLError_NotFound):
        nv.nvmlDeviceGetMigDeviceHandleByIndex(nv.nvmlDeviceGetHandleByIndex(1), 5)
