"""Idle verdicts, the idle clock, deadlines, warnings, holds and quotas, with the clock moved by hand."""

import pytest

from ds01d.rules.gpu_units import GpuProcess, Unit, UnitSample
from ds01d.rules.lifecycle import (BUSY, IDLE, UNKNOWN, Deadline, IdleState, Verdict, hold_end, idle_deadline,
                             quota_check, removal_at, runtime_deadline, track_idle, verdict, warning_due)

WHOLE = Unit("GPU-1", "1", "H100", "GPU-1", 1, 1.0, 80)
MIG_A = Unit("MIG-a", "2:0", "H100 MIG 3g", "GPU-2", 2, 3 / 7, 40, "3g.40gb", 1, 0)
MIG_B = Unit("MIG-b", "2:1", "H100 MIG 4g", "GPU-2", 2, 4 / 7, 40, "4g.40gb", 2, 0)


def s(uuid, activity, *pids, reason=None):
    return UnitSample(uuid, 0, activity, None if activity is None else "gpm", reason,
                      tuple(GpuProcess(p, 1) for p in pids))


def test_verdicts():
    assert verdict([WHOLE], {"GPU-1": s("GPU-1", 80, 7)}, [7], 5).state == BUSY
    assert verdict([WHOLE], {"GPU-1": s("GPU-1", 2, 7)}, [7], 5).state == IDLE
    assert verdict([WHOLE], {"GPU-1": s("GPU-1", 80, 8)}, [7], 5).state == IDLE   # busy, but not because of us
    unknown = verdict([MIG_A], {"MIG-a": s("MIG-a", None, 7, reason="no GPM")}, [7], 5)
    assert (unknown.state, unknown.why) == (UNKNOWN, "2:0: no GPM")
    # Unknown activity with no process of ours on it: nothing of ours can be using it.
    assert verdict([MIG_A], {"MIG-a": s("MIG-a", None, reason="no GPM")}, [7], 5).state == IDLE
    # Two MIG units: one busy is enough.
    assert verdict([MIG_A, MIG_B], {"MIG-a": s("MIG-a", 0, 7), "MIG-b": s("MIG-b", 60, 7)}, [7], 5).state == BUSY


def test_idle_clock_runs_on_the_window_average():
    state = IdleState()
    idle, busy = Verdict(IDLE, 0.0, ""), Verdict(BUSY, 100.0, "")
    state = track_idle(state, idle, 100, window=60, threshold=5)
    assert state.idle_since == 100
    state = track_idle(state, idle, 110, 60, 5)
    assert state.idle_since == 100
    # One busy blip in a window of many quiet samples does not reset the clock ...
    for t in range(120, 200, 10):
        state = track_idle(state, idle, t, 60, 5)
    blip = track_idle(state, Verdict(BUSY, 20.0, ""), 200, 60, 5)
    assert blip.idle_since == 100
    # ... real work does.
    assert track_idle(state, busy, 200, 60, 5).idle_since is None


UNKNOWN_V = Verdict(UNKNOWN, None, "2:0: first GPM sample")


def test_unknown_pauses_the_idle_clock_and_does_not_reset_it():
    idle = Verdict(IDLE, 0.0, "")
    state = track_idle(IdleState(), idle, 100, 60, 5)
    state = track_idle(state, idle, 110, 60, 5)
    for t in (120, 130, 140, 150):            # unknown from 110 to 150: not idle time, not busy time
        state = track_idle(state, UNKNOWN_V, t, 60, 5)
    assert state.idle_since == 140
    state = track_idle(state, idle, 160, 60, 5)
    assert 160 - state.idle_since == 20       # idle 100-110 and 150-160
    assert track_idle(IdleState(), UNKNOWN_V, 500, 60, 5).idle_since is None  # never idle: stays not idle


def test_a_restart_that_starts_unknown_keeps_the_persisted_idle_clock():
    """A restarted daemon knows idle_since from the database and has no GPM sample yet."""
    state = track_idle(IdleState(idle_since=100), UNKNOWN_V, 500, 60, 5)
    assert state.idle_since == 100
    assert track_idle(state, UNKNOWN_V, 510, 60, 5).idle_since == 110   # from now on the pause counts


def test_an_incomplete_process_list_or_a_vanished_device_is_unknown_not_idle():
    gap = UnitSample("GPU-1", None, None, None, "NVML error", (), error="GPU is lost", process_gap="GPU is lost")
    assert verdict([WHOLE], {"GPU-1": gap}, [7], 5).state == UNKNOWN
    partial = UnitSample("GPU-1", 0, 0.0, "utilization.gpu", None, (GpuProcess(8, 1),),
                         process_gap="graphics processes: Unknown Error")
    assert verdict([WHOLE], {"GPU-1": partial}, [7], 5).state == UNKNOWN
    lost = verdict([], {}, [7], 5, missing=["1"])
    assert (lost.state, lost.why) == (UNKNOWN, "1: not in NVML's inventory now")


def test_a_shared_unit_under_the_threshold_is_idle_for_everyone_on_it():
    procs = (GpuProcess(7, 1), GpuProcess(8, 1))
    quiet = UnitSample("GPU-1", 0, 3.0, "utilization.gpu", None, procs)
    loud = UnitSample("GPU-1", 0, 30.0, "utilization.gpu", None, procs)
    assert verdict([WHOLE], {"GPU-1": quiet}, [7], 5).state == IDLE
    assert verdict([WHOLE], {"GPU-1": loud}, [7], 5).state == UNKNOWN


def test_idle_deadline_grace_and_keepalive():
    d = idle_deadline(idle_since=1000, started_at=900, timeout=600, grace=300, keepalive_mtime=None,
                      keepalive_max_age=3600, now=1000)
    assert d.at == 1600 and d.rule == "idle"
    assert idle_deadline(1000, 900, 60, 900, None, 3600, 1000).at == 1800       # inside the grace after start
    assert idle_deadline(1000, 900, None, 300, None, 3600, 1000) is None        # never
    assert idle_deadline(None, 900, 600, 300, None, 3600, 1000) is None         # not idle
    fresh = idle_deadline(1000, 900, 600, 300, keepalive_mtime=1500, keepalive_max_age=3600, now=1550)
    assert fresh.at == 5100 and "keep-alive" in fresh.reason
    stale = idle_deadline(1000, 900, 600, 300, keepalive_mtime=1000, keepalive_max_age=60, now=1550)
    assert stale.at == 1600


def test_runtime_hold_removal():
    assert runtime_deadline(100, 3600).at == 3700 and runtime_deadline(100, None) is None
    assert hold_end(500, 60) == 560 and hold_end(500, None) is None and hold_end(None, 60) is None
    assert removal_at(500, 60, protected=False) == 560
    assert removal_at(500, 60, protected=True) is None and removal_at(500, None, False) is None


def test_warnings_most_urgent_once():
    d = Deadline("idle", 1000, 0, 1000)
    assert warning_due(d, [300, 60], 600, set()) is None
    assert warning_due(d, [300, 60], 700, set()) == 300
    assert warning_due(d, [300, 60], 800, {300}) is None
    assert warning_due(d, [300, 60], 940, {300}) == 60
    assert warning_due(d, [300, 60], 950, {300, 60}) is None
    assert warning_due(d, [300, 60], 950, set()) == 60      # late start: one warning, the urgent one
    assert warning_due(d, [300, 60], 1000, set()) is None   # due: stopping, not warning


def test_quota_counts_distinct_units_in_gpu_equivalents():
    check = quota_check(1.0, held=[MIG_A, MIG_A], wanted=[MIG_B])
    assert (check.used, check.total, check.over) == (round(3 / 7, 6), 1.0, False)
    over = quota_check(1.0, held=[MIG_A, MIG_B], wanted=[WHOLE])
    assert over.over and "quota is 1" in over.reason("alice")
    assert not quota_check(None, [WHOLE], [MIG_A]).over
    assert not quota_check(1.0, [WHOLE], [WHOLE]).over   # the same device again costs nothing more


def test_compute_instances_of_one_gpu_instance_count_it_once():
    """A 4-slice GPU instance split into two compute instances is 4/7 of a GPU, not 8/7."""
    ci0 = Unit("MIG-c0", "2:0", "H100 MIG 2c.4g.40gb", "GPU-2", 2, 4 / 7, 40, "2c.4g.40gb", 1, 0)
    ci1 = Unit("MIG-c1", "2:1", "H100 MIG 2c.4g.40gb", "GPU-2", 2, 4 / 7, 40, "2c.4g.40gb", 1, 1)
    check = quota_check(1.0, held=[ci0], wanted=[ci1])
    assert (check.used, check.total, check.over) == (round(4 / 7, 6), round(4 / 7, 6), False)
    assert quota_check(1.0, held=[ci0], wanted=[ci1, MIG_B]).total == round(8 / 7, 6)
