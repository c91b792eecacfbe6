"""ds01d's NVML adapter, run for real against the scenario fake of pynvml."""

import json

import pytest

from ds01d.testing import fake_pynvml
from ds01d.rules.gpu_units import GPM_BUSY, UTILIZATION, gpu_equivalents
from ds01d.rules.lifecycle import BUSY, IDLE, UNKNOWN, verdict
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
    assert (whole.activity, whole.activity_source) == (40.0, UTILIZATION)
    assert {p.pid: p.sm_util for p in whole.processes} == {11: 30.0, 12: 0.0}
    assert first[mig_uuid(1, 0)].activity is None  # GPM needs two samples
    second = {s.uuid: s for s in session.sample(inv)}
    assert (second[mig_uuid(1, 0)].activity, second[mig_uuid(1, 0)].activity_source) == (55.0, GPM_BUSY)
    assert [p.pid for p in second[mig_uuid(1, 0)].processes] == [21]
    a100 = second[mig_uuid(2, 0)]
    assert (a100.activity, a100.unknown_reason) == (None, MIG_NO_GPM)


def test_one_failing_gpu_does_not_stop_the_others_and_keeps_its_units_as_unknown(nvml):
    session, path = nvml
    inv = session.inventory()
    write(path, [whole_gpu(0, utilization=5), mig_gpu(1, [{"slices": 3}, {"slices": 2}, {"slices": 2}]),
                 {**mig_gpu(2, [{"slices": 7}], gpm=False), "fail": "fell off the bus"}])
    samples = {s.uuid: s for s in session.sample(inv)}
    assert samples[gpu_uuid(0)].activity == 5.0
    assert samples[mig_uuid(2, 0)].error is not None and samples[mig_uuid(2, 0)].activity is None
    again = session.inventory(inv)
    assert [u.index for u in again.units] == ["0", "1:0", "1:1", "1:2", "2:0"]
    assert "GPU 2" in session.errors and mig_uuid(2, 0) in session.lost
    lost = {s.uuid: s for s in session.sample(again)}[mig_uuid(2, 0)]
    assert lost.activity is None and "GPU is lost" in lost.unknown_reason
    # Its container is unknown, not idle: its GPU did not answer, which is no sign of rest.
    assert verdict([u for u in again.units if u.index == "2:0"], {lost.uuid: lost}, [21], 5).state == UNKNOWN


def test_no_library_means_cpu_only():
    fake_pynvml.use_scenario(None)
    with pytest.raises(NvmlUnavailable, match="NVML did not start"):
        Nvml.open(fake_pynvml)


def test_a_driver_not_loaded_yet_at_start_is_waited_for(tmp_path):
    """At boot the kernel module may load after ds01d: not CPU-only for good, but tried again with
    backoff until it answers, and then measured."""
    path = scenario(tmp_path, [whole_gpu(0)], driver_loaded=False)
    clock = Clock()
    session = Nvml.open(fake_pynvml, clock)
    assert "NVML did not start" in session.events[0] and "trying again in 5s" in session.events[0]
    inv = session.inventory()
    assert inv.units == () and session.sample(inv) == []
    clock.now += 5
    write(path, [whole_gpu(0)])
    inv = session.refresh(inv, due=False)
    assert [u.index for u in inv.units] == ["0"] and "started again" in session.events[-1]
    assert [s.activity for s in session.sample(inv)] == [0.0]


def test_the_fake_answers_like_nvml_on_mig(nvml):
    session, _ = nvml
    nv = session.nv
    handle = nv.nvmlDeviceGetMigDeviceHandleByIndex(nv.nvmlDeviceGetHandleByIndex(1), 0)
    with pytest.raises(nv.NVMLError_NotSupported):
        nv.nvmlDeviceGetUtilizationRates(handle)
    with pytest.raises(nv.NVMLError_NotFound):
        nv.nvmlDeviceGetMigDeviceHandleByIndex(nv.nvmlDeviceGetHandleByIndex(1), 5)


# --- the paths real hardware takes (issue 13): each one judged idle by the previous adapter -----


def scenario(tmp_path, gpus, **top):
    path = tmp_path / "hostile.json"
    write(path, gpus)
    if top:
        path.write_text(json.dumps({**json.loads(path.read_text()), **top}))
    fake_pynvml.use_scenario(str(path))
    return path


def judge(session, inv, pids, passes=1, threshold=5):
    for _ in range(passes):
        samples = {s.uuid: s for s in session.sample(inv)}
    return {u.index: verdict([u], samples, pids, threshold) for u in inv.units}, samples


@pytest.mark.parametrize("function,error", [
    ("nvmlDeviceGetComputeRunningProcesses", "UNKNOWN"),
    ("nvmlDeviceGetComputeRunningProcesses", "TIMEOUT"),
    ("nvmlDeviceGetComputeRunningProcesses", "GPU_IS_LOST"),
    ("nvmlDeviceGetUtilizationRates", "NOT_SUPPORTED"),
    ("nvmlDeviceGetUtilizationRates", "UNKNOWN"),
    ("nvmlDeviceGetMemoryInfo", "TIMEOUT"),
])
def test_an_nvml_error_on_a_busy_gpu_is_unknown_never_idle(tmp_path, function, error):
    path = scenario(tmp_path, [whole_gpu(0, utilization=90, processes=[{"pid": 11, "used_memory_mib": 100}])])
    session = Nvml.open(fake_pynvml)
    inv = session.inventory()
    write(path, [whole_gpu(0, utilization=90, processes=[{"pid": 11, "used_memory_mib": 100}],
                           errors={function: error})])
    verdicts, samples = judge(session, inv, [11])
    assert verdicts["0"].state in (UNKNOWN, BUSY), verdicts["0"]
    if function != "nvmlDeviceGetMemoryInfo":   # memory is no activity: the rest still tells
        assert verdicts["0"].state == UNKNOWN and str(fake_pynvml.NVMLError(
            getattr(fake_pynvml, f"NVML_ERROR_{error}"))) in verdicts["0"].why
    session.close()


@pytest.mark.parametrize("kind", ["graphics", "mps"])
def test_graphics_and_mps_clients_are_processes_too(tmp_path, kind):
    scenario(tmp_path, [whole_gpu(0, utilization=90, processes=[{"pid": 11, "used_memory_mib": None,
                                                                 "type": kind}])])
    session = Nvml.open(fake_pynvml)
    verdicts, samples = judge(session, session.inventory(), [11])
    assert verdicts["0"].state == BUSY
    assert [(p.pid, p.used_memory) for p in samples[gpu_uuid(0)].processes] == [(11, None)]
    session.close()


def test_a_failing_graphics_list_makes_no_process_unknown(tmp_path):
    scenario(tmp_path, [whole_gpu(0, utilization=90, processes=[{"pid": 12, "used_memory_mib": 1}],
                                  errors={"nvmlDeviceGetGraphicsRunningProcesses": "UNKNOWN"})])
    session = Nvml.open(fake_pynvml)
    verdicts, _ = judge(session, session.inventory(), [11])   # 11 may be a graphics client NVML did not list
    assert verdicts["0"].state == UNKNOWN and "graphics processes" in verdicts["0"].why
    session.close()


def test_shared_gpu_without_new_utilization_samples_is_not_zero(tmp_path):
    """NVML answers NOT_FOUND when no sample is newer than lastSeenTimeStamp (the driver's tick
    is slower than the passes): that says nothing about who computes."""
    busy = [{"pid": 11, "used_memory_mib": 1, "sm_util": 80}, {"pid": 12, "used_memory_mib": 1, "sm_util": 0}]
    scenario(tmp_path, [whole_gpu(0, utilization=80, processes=busy, process_util_period_s=3600)])
    session = Nvml.open(fake_pynvml)
    inv = session.inventory()
    first, _ = judge(session, inv, [11])
    assert first["0"].state == BUSY                         # the tick's samples, seen once
    later, samples = judge(session, inv, [11], passes=2)    # no newer sample since
    assert later["0"].state == UNKNOWN, later["0"]
    assert {p.pid: p.sm_util for p in samples[gpu_uuid(0)].processes} == {11: None, 12: None}
    session.close()


def test_a_growing_process_list_is_unknown_not_idle(tmp_path):
    """pynvml sizes the buffer, then reads it: a list that grew meanwhile is INSUFFICIENT_SIZE."""
    busy = [{"pid": 11, "used_memory_mib": 1, "sm_util": 80}, {"pid": 12, "used_memory_mib": 1, "sm_util": 0}]
    scenario(tmp_path, [whole_gpu(0, utilization=80, processes=busy, process_list_grows=True)])
    session = Nvml.open(fake_pynvml)
    verdicts, samples = judge(session, session.inventory(), [11])
    assert verdicts["0"].state == UNKNOWN
    assert [p.pid for p in samples[gpu_uuid(0)].processes] == [11, 12]
    session.close()


def test_a_driver_without_gpm_keeps_the_mig_gpu_and_says_why(tmp_path):
    scenario(tmp_path, [mig_gpu(0, [{"slices": 7, "processes": [{"pid": 11, "used_memory_mib": 1}]}])],
             driver_lacks=["nvmlGpm*"])
    session = Nvml.open(fake_pynvml)
    inv = session.inventory()
    assert [u.index for u in inv.units] == ["0:0"]
    verdicts, samples = judge(session, inv, [11], passes=2)
    assert verdicts["0:0"].state == UNKNOWN and "no GPM" in verdicts["0:0"].why
    session.close()


def test_mig_activity_is_time_busy_not_share_of_sms(tmp_path):
    """A one-stream job keeps a 3g instance busy all the time on a few SMs: it is not idle."""
    scenario(tmp_path, [mig_gpu(0, [{"slices": 3, "utilization": 95, "sm_activity": 2,
                                      "processes": [{"pid": 11, "used_memory_mib": 1}]}])])
    session = Nvml.open(fake_pynvml)
    verdicts, samples = judge(session, session.inventory(), [11], passes=2)
    assert verdicts["0:0"].state == BUSY and samples[mig_uuid(0, 0)].activity == 95.0
    assert samples[mig_uuid(0, 0)].activity_source == GPM_BUSY == "GPM GRAPHICS_UTIL"
    session.close()


def test_a30_and_a_gpu_instance_split_into_compute_instances(tmp_path):
    """A30: 4 slices.  GPU instance 1 (2 slices) holds two compute instances: it counts once, and
    its GPM activity belongs to both, so the busy one's work is not the quiet one's."""
    gpu = mig_gpu(0, [{"slices": 2}, {"slices": 1}, {"slices": 1}], name="NVIDIA A30")
    gpu["max_slices"] = 4
    quiet = {"pid": 11, "used_memory_mib": 1}
    busy = {"pid": 12, "used_memory_mib": 1}
    gpu["mig"][0].update(ci=0, ci_slices=1, utilization=0, sm_activity=0, processes=[quiet])
    gpu["mig"].insert(1, {**gpu["mig"][0], "uuid": "MIG-split-ci1", "ci": 1, "utilization": 90, "sm_activity": 40,
                          "processes": [busy]})
    scenario(tmp_path, [gpu])
    session = Nvml.open(fake_pynvml)
    inv = session.inventory()
    assert [(u.index, u.profile, u.share, u.gpu_instance_id, u.compute_instance_id) for u in inv.units] == [
        ("0:0", "1c.2g.20gb", 0.5, 1, 0), ("0:1", "1c.2g.20gb", 0.5, 1, 1),
        ("0:2", "1g.10gb", 0.25, 2, 0), ("0:3", "1g.10gb", 0.25, 3, 0)]
    assert gpu_equivalents(inv.units) == 1.0
    verdicts, _ = judge(session, inv, [11], passes=2)
    assert verdicts["0:0"].state == UNKNOWN, verdicts["0:0"]   # the GPU instance is busy, not because of 11
    assert judge(session, inv, [12])[0]["0:1"].state == UNKNOWN   # nor provably because of 12
    session.close()


def test_gpm_samples_are_freed_also_when_a_sample_fails(tmp_path):
    path = scenario(tmp_path, [mig_gpu(0, [{"slices": 3, "utilization": 50}, {"slices": 2}])])
    session = Nvml.open(fake_pynvml)
    inv = session.inventory()
    session.sample(inv)
    session.sample(inv)
    assert fake_pynvml.live_gpm_samples() == 2          # the previous sample of each GPU instance
    gpu = mig_gpu(0, [{"slices": 3, "utilization": 50}, {"slices": 2}])
    gpu["mig"][0]["errors"] = {"nvmlGpmMigSampleGet": "TIMEOUT"}
    write(path, [gpu])
    for _ in range(5):
        samples = {s.uuid: s for s in session.sample(inv)}
    assert samples[mig_uuid(0, 0)].activity is None and "Timeout" in samples[mig_uuid(0, 0)].unknown_reason
    assert fake_pynvml.live_gpm_samples() == 1
    session.close()
    assert fake_pynvml.live_gpm_samples() == 0


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_driver_reload_starts_nvml_again_with_backoff_and_reads_the_new_layout(tmp_path):
    path = scenario(tmp_path, [mig_gpu(0, [{"slices": 3, "processes": [{"pid": 11, "used_memory_mib": 1}]},
                                           {"slices": 4}])])
    clock = Clock()
    fake_pynvml.nvmlInit()
    session = Nvml(fake_pynvml, clock)
    inv = session.inventory()
    session.sample(inv)
    reloaded = {"driver_epoch": 1, "driver": "550.90.07",
                "gpus": [mig_gpu(0, [{"slices": 7, "processes": [{"pid": 11, "used_memory_mib": 1}]}])]}
    path.write_text(json.dumps(reloaded))
    samples = {s.uuid: s for s in session.sample(inv)}
    assert verdict([inv.units[0]], samples, [11], 5).state == UNKNOWN      # not idle: the driver went away
    inv = session.refresh(inv, due=False)
    assert [(u.index, u.profile) for u in inv.units] == [("0:0", "7g.70gb")] and inv.driver == "550.90.07"
    assert session.events and "started again" in session.events[-1]
    session.sample(inv)
    assert {s.uuid: s for s in session.sample(inv)}[mig_uuid(0, 0)].activity == 0.0
    # A driver that does not come back: tried again after 5 s, 10 s, 20 s ..., never every pass.
    path.write_text(json.dumps({**reloaded, "driver_epoch": 2, "driver_loaded": False}))
    session.sample(inv)
    tries = []
    for _ in range(40):
        clock.now += 1
        before = len(session.events)
        inv = session.refresh(inv, due=False)
        if len(session.events) > before:
            tries.append(clock.now)
        session.sample(inv)
    assert [b - a for a, b in zip(tries, tries[1:])] == [5, 10, 20], session.events
    assert all(s.activity is None and s.process_gap for s in session.sample(inv))


def test_a_mig_reconfiguration_is_read_at_the_next_pass(tmp_path):
    path = scenario(tmp_path, [mig_gpu(0, [{"slices": 3}, {"slices": 4}])])
    session = Nvml.open(fake_pynvml)
    inv = session.inventory()
    gpu = mig_gpu(0, [{"slices": 3}, {"slices": 4}])
    gpu["mig"][1]["uuid"] = "MIG-recreated"
    write(path, [gpu])
    samples = {s.uuid: s for s in session.sample(inv)}
    assert samples[mig_uuid(0, 1)].activity is None       # the old handle names nothing now
    inv = session.refresh(inv, due=False)
    assert [u.uuid for u in inv.units] == [mig_uuid(0, 0), "MIG-recreated"]
    session.close()


def test_energy_is_read_per_physical_gpu_and_missing_where_there_is_no_counter(tmp_path):
    path = tmp_path / "scenario.json"
    write(path, [whole_gpu(0, power_w=300, energy_mj=5_000_000), mig_gpu(1, [{"slices": 3}, {"slices": 4}]),
                 whole_gpu(2, power_w=100, errors={"nvmlDeviceGetTotalEnergyConsumption": "GPU_IS_LOST"})])
    fake_pynvml.use_scenario(str(path))
    session = Nvml.open(fake_pynvml)
    try:
        inventory = session.inventory()
        energy = session.energy(inventory)
        assert set(energy) == {gpu_uuid(0), gpu_uuid(1), gpu_uuid(2)}
        assert energy[gpu_uuid(0)] >= 5_000_000          # millijoules, growing with the board's power
        assert energy[gpu_uuid(1)] is None               # no counter (here: no power_w): unknown, not 0
        assert energy[gpu_uuid(2)] is None               # an error reading it: unknown too
        handle = fake_pynvml.nvmlDeviceGetMigDeviceHandleByIndex(fake_pynvml.nvmlDeviceGetHandleByIndex(1), 0)
        with pytest.raises(fake_pynvml.NVMLError):
            fake_pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)    # never on a MIG device handle
    finally:
        session.close()
