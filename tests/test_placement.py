"""The allocator: the seeds' scenarios as tests, and properties over random hosts."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from ds01d.rules.placement import (Ask, Claim, Hold, Running, UnitLoad, choose, held_by, kept_from, picture,
                                   usable, used_by)
from ds01d.rules.gpu_units import Unit, gpu_equivalents


def mig(gpu: int, slot: int, slices: int) -> Unit:
    return Unit(f"MIG-{gpu}-{slot}", f"{gpu}:{slot}", f"A100 MIG {slices}g", f"GPU-{gpu}", gpu, slices / 7,
                10 * slices, f"{slices}g.{10 * slices}gb", slot + 1, 0)


def whole(gpu: int) -> Unit:
    return Unit(f"GPU-{gpu}", str(gpu), "A100", f"GPU-{gpu}", gpu, 1.0, 80)


# --- the seeds (003) ------------------------------------------------------------------

def test_a_second_compute_instance_of_a_held_gpu_instance_adds_nothing_to_the_quota():
    """A 3g GPU instance split into two compute instances: holding one, the other is within a 3/7 quota."""
    ci = [Unit(f"MIG-0-{c}", f"0:{c}", "H100 MIG 1c.3g.40gb", "GPU-0", 0, 3 / 7, 40, "1c.3g.40gb", 1, c)
          for c in (0, 1)]
    loads = [UnitLoad(ci[0], (("alice", 10),)), UnitLoad(ci[1])]
    held = held_by("alice", loads)
    assert held == (ci[0],) and used_by("alice", loads) == round(3 / 7, 6)
    ok = choose(Ask("alice", 10, quota=3 / 7, used=used_by("alice", loads), held=held), loads)
    assert ok.units == (ci[1],)
    # counted as two shares (the number alone), the same ask passes the quota
    assert not choose(Ask("alice", 10, quota=3 / 7, used=used_by("alice", loads)), loads).granted


def test_student_at_limit():
    """Alice, student, two MIG instances' worth of quota: two allocations, then refused (not queued)."""
    loads = [UnitLoad(mig(g, s, 2)) for g in (0, 1, 2) for s in range(3)]
    quota = 2 * 2 / 7
    first = choose(Ask("alice", 10, quota=quota), loads)
    assert first.granted and first.units[0].is_mig
    loads = [UnitLoad(l.unit, (("alice", 10),)) if l.unit in first.units else l for l in loads]
    second = choose(Ask("alice", 10, quota=quota, used=used_by("alice", loads)), loads)
    assert second.granted and second.units != first.units
    loads = [UnitLoad(l.unit, (("alice", 10),)) if l.unit in second.units else l for l in loads]
    third = choose(Ask("alice", 10, quota=quota, used=used_by("alice", loads)), loads)
    assert not third.granted and not third.wait and "quota" in third.reason


def test_priority_allocation():
    """0:0 empty, 0:1 bob (student, 10), 0:2 carol (researcher, 50); sharing allowed.
    Dave (admin) gets the empty one; Eve (researcher) shares with Carol, never beside a student;
    Frank (student) shares with Bob, never beside a researcher."""
    loads = [UnitLoad(mig(0, 0, 2)), UnitLoad(mig(0, 1, 2), (("bob", 10),)), UnitLoad(mig(0, 2, 2), (("carol", 50),))]
    assert choose(Ask("dave", 90, allow_sharing=True), loads).units[0].index == "0:0"
    loads[0] = UnitLoad(loads[0].unit, (("dave", 90),))
    assert choose(Ask("eve", 50, allow_sharing=True), loads).units[0].index == "0:2"
    assert choose(Ask("frank", 10, allow_sharing=True), loads).units[0].index == "0:1"
    without_sharing = choose(Ask("frank", 10), loads)
    assert without_sharing.wait and "0:1 in use by bob" in without_sharing.reason


def test_time_based_reservation():
    """GPU 0 reserved for john_doe: others are told so and get another GPU; John gets his."""
    loads = [UnitLoad(whole(0), claims=(Claim("reserved", "john_doe", 1762560000.0),)), UnitLoad(whole(1))]
    other = choose(Ask("alice", 50, full=True, may_full_gpu=True), loads)
    assert [u.index for u in other.units] == ["1"]
    loads[1] = UnitLoad(whole(1), (("alice", 50),))
    blocked = choose(Ask("bob", 50, full=True, may_full_gpu=True), loads)
    assert blocked.wait and "0 reserved for john_doe until 00:00 UTC" in blocked.reason
    assert [u.index for u in choose(Ask("john_doe", 100, full=True, may_full_gpu=True), loads).units] == ["0"]


def test_full_gpu_rules():
    loads = [UnitLoad(mig(0, 0, 3)), UnitLoad(mig(0, 1, 4)), UnitLoad(whole(1), (("x", 10),))]
    assert not choose(Ask("s", 10, full=True), loads).granted          # students may not
    full = choose(Ask("r", 50, full=True, may_full_gpu=True), loads)     # a MIG GPU with every instance free
    assert [u.index for u in full.units] == ["0:0", "0:1"] and gpu_equivalents(full.units) == 1.0


def test_mig_first_for_students_whole_first_for_researchers():
    loads = [UnitLoad(whole(0)), UnitLoad(mig(1, 0, 2))]
    assert choose(Ask("s", 10), loads).units[0].is_mig
    assert not choose(Ask("r", 50, may_full_gpu=True), loads).units[0].is_mig


# --- properties ----------------------------------------------------------------------

USERS = ["alice", "bob", "carol", "dave"]
PRIORITIES = [10, 50, 90]


@st.composite
def hosts(draw):
    units = []
    for gpu in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            units.append(whole(gpu))
        else:
            sizes = draw(st.lists(st.sampled_from([1, 2, 3, 4]), min_size=1, max_size=4).filter(lambda s: sum(s) <= 7))
            units.extend(mig(gpu, slot, size) for slot, size in enumerate(sizes))
    loads = []
    for unit in units:
        users = tuple(draw(st.lists(st.tuples(st.sampled_from(USERS), st.sampled_from(PRIORITIES)), max_size=2,
                                    unique_by=lambda t: t[0])))
        claims = [Claim(kind, user, None) for kind, user in (
            ("reserved", draw(st.none() | st.none() | st.sampled_from(USERS))),
            ("held", draw(st.none() | st.sampled_from(USERS)))) if user is not None]
        loads.append(UnitLoad(unit, users, tuple(claims), tuple(draw(st.lists(st.just("orphan"), max_size=1)))))
    return loads


asks = st.builds(Ask, user=st.sampled_from(USERS), priority=st.sampled_from(PRIORITIES), count=st.integers(1, 3),
                 full=st.booleans(), quota=st.none() | st.floats(0, 3), used=st.floats(0, 2),
                 may_full_gpu=st.booleans(), allow_sharing=st.booleans())


@settings(max_examples=400, deadline=None)
@given(loads=hosts(), ask=asks)
def test_properties(loads, ask):
    answer = choose(ask, loads)
    by_uuid = {l.unit.uuid: l for l in loads}
    if answer.granted:
        chosen = [by_uuid.get(u.uuid) for u in answer.units]
        assert all(c is not None for c in chosen), "a device that does not exist"
        assert len({u.uuid for u in answer.units}) == len(answer.units)
        assert ask.quota is None or ask.used + gpu_equivalents(answer.units) <= ask.quota + 1e-6, "over quota"
        assert all(c.taken_for(ask.user) is None for c in chosen), "reserved or held for someone else"
        if ask.full:
            assert ask.may_full_gpu and len({u.gpu_uuid for u in answer.units}) == 1
            assert all(not c.load for c in chosen)
        else:
            assert len(answer.units) == ask.count
            assert all(usable(c, ask) for c in chosen), "beside load of another priority"
            for c in chosen:                                              # least-loaded first, per kind
                same_kind = [l for l in loads if usable(l, ask) and l.unit.is_mig == c.unit.is_mig
                             and l.unit not in answer.units]
                assert all(l.load >= c.load for l in same_kind), "a less loaded device was passed over"
    elif not ask.full and ask.count == 1:
        fitting = [l for l in loads if usable(l, ask) and not l.load and
                   (ask.quota is None or ask.used + l.unit.share <= ask.quota + 1e-6)]
        assert not fitting, "a free fitting device exists but none was given"


# --- one picture for the allocator and the start check (issue 12) -------------------------

def test_an_unowned_running_container_occupies_its_device_and_is_named():
    loads = picture([whole(0), whole(1)], [Running(None, 0, "root-job", ("GPU-0",))], [], [])
    assert [u.index for u in choose(Ask("alice", 50, full=True, may_full_gpu=True), loads).units] == ["1"]
    assert not usable(loads[0], Ask("alice", 0, allow_sharing=True))     # no owner, no priority to share with
    loads[1:] = picture([whole(1)], [Running("bob", 50, "b", ("GPU-1",))], [], [])
    refused = choose(Ask("alice", 50, full=True, may_full_gpu=True), loads)
    assert refused.wait and "0 in use by an unowned container root-job" in refused.reason
    assert "None" not in refused.reason


def test_an_unowned_hold_keeps_nothing_for_anyone():
    loads = picture([whole(0)], [], [Hold("c1", None, "root-stopped", ("GPU-0",), 2e9)], [])
    assert loads[0].claims == () and loads[0].load == 0
    assert choose(Ask("alice", 10), loads).units[0].index == "0"
    assert kept_from("alice", ["GPU-0"], loads) == [] and kept_from(None, ["GPU-0"], loads) == []


def test_an_owned_hold_keeps_the_device_for_its_owner_only():
    loads = picture([whole(0)], [], [Hold("c1", "hana", "holder", ("GPU-0",), None)], [])
    assert kept_from("hana", ["GPU-0"], loads) == []
    assert kept_from("ida", ["GPU-0"], loads) == [(whole(0), Claim("held", "hana", None, "holder"))]
    assert kept_from(None, ["GPU-0"], loads)[0][1].user == "hana"   # an unowned start is kept off it too
    assert "0 held for hana" in choose(Ask("ida", 10), loads).reason


def test_a_reservation_is_named_before_an_allocation_or_a_hold():
    loads = picture([whole(0)], [], [Hold("c", "hana", "h", ("GPU-0",), None)],
                    [(("GPU-0",), Claim("allocated", "bob", 5.0)), (("GPU-0",), Claim("reserved", "carol", 9.0))])
    assert [c.kind for c in loads[0].claims] == ["reserved", "allocated", "held"]
    assert loads[0].taken_for("carol") == Claim("allocated", "bob", 5.0)


OWNERS = USERS + [None]


@st.composite
def worlds(draw):
    """Random hosts as the daemon sees them: running containers (owned or not), holds (owned or
    not), pending allocations and reservations, all through `picture`."""
    units = [whole(g) for g in range(draw(st.integers(1, 3)))] + [mig(9, s, 2) for s in range(draw(st.integers(0, 3)))]
    uuids = st.lists(st.sampled_from([u.uuid for u in units]), min_size=1, max_size=2, unique=True).map(tuple)
    running = draw(st.lists(st.builds(Running, st.sampled_from(OWNERS), st.sampled_from(PRIORITIES), st.just("r"),
                                      uuids), max_size=3))
    holds = draw(st.lists(st.builds(Hold, st.just("c"), st.sampled_from(OWNERS), st.just("h"), uuids,
                                    st.none() | st.floats(0, 2e9)), max_size=3))
    claims = draw(st.lists(st.tuples(uuids, st.builds(Claim, st.sampled_from(["reserved", "allocated"]),
                                                      st.sampled_from(USERS), st.floats(0, 2e9))), max_size=2))
    return picture(units, running, holds, claims)


@settings(max_examples=400, deadline=None)
@given(loads=worlds(), ask=asks)
def test_what_the_allocator_hands_out_the_start_check_never_stops(loads, ask):
    answer = choose(ask, loads)
    if answer.granted:
        assert kept_from(ask.user, [u.uuid for u in answer.units], loads) == []
    assert "None" not in answer.reason
