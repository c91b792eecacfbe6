"""Limit resolution: user override > group > defaults > built-in, with the source of each."""

import datetime as dt
import textwrap

from hypothesis import given, strategies as st

from ds01d.config import BUILTIN_DEFAULTS, SETTING_NAMES, parse_config
from ds01d.rules.limits import membership, resolve, slice_properties

TODAY = dt.date(2026, 11, 24)
CONFIG = parse_config(textwrap.dedent("""\
    defaults:
      cpus: 4
      idle_timeout: 30m
    default_group: students
    groups:
      students:
        members: [alice]
        gpu_quota: 0.5
        max_runtime: {ds01: 24h}
      researchers:
        unix_group: research
        cpus: 16
        idle_timeout: {ds01: null}
      phd:
        unix_group: phd
    user_overrides:
      alice:
        reason: thesis
        expires: 2026-12-31
        gpu_quota: 2
      bob:
        reason: moved
        group: researchers
      old:
        reason: last year
        expires: 2025-12-31
        group: researchers
        cpus: 64
    """), "c.yaml")


def test_each_level_and_its_source():
    alice = resolve(CONFIG, "alice", TODAY)
    assert alice.group == "students" and alice.membership.source == "listed in group students"
    assert alice.settings["gpu_quota"].value == 2
    assert alice.settings["gpu_quota"].source == "override (thesis)"
    assert alice.settings["max_runtime.ds01"].source == "group students"
    assert alice.lifecycle("max_runtime", "ds01") == 86400
    assert alice.settings["cpus"].source == "defaults" and alice["cpus"] == 4
    assert alice.settings["tasks_max"].source == "built-in default"
    assert alice.slice == "ds01-students-alice.slice"


def test_override_expires_after_its_last_day():
    assert resolve(CONFIG, "alice", dt.date(2026, 12, 31))["gpu_quota"] == 2
    after = resolve(CONFIG, "alice", dt.date(2027, 1, 1))
    assert after["gpu_quota"] == 0.5 and after.override is None
    assert after.expired_override is CONFIG.overrides["alice"]


def test_null_at_a_higher_level_means_never_not_unset():
    carol = resolve(CONFIG, "carol", TODAY, {"research": frozenset({"carol"})})
    assert carol.group == "researchers" and carol.membership.source == "Unix group research"
    assert carol.lifecycle("idle_timeout", "ds01") is None
    assert carol.settings["idle_timeout.ds01"].source == "group researchers"
    assert carol.lifecycle("idle_timeout", "docker") == 1800


def test_override_group_places_the_user_and_expired_one_does_not():
    bob = resolve(CONFIG, "bob", TODAY)
    assert (bob.group, bob.membership.source, bob["cpus"]) == ("researchers", "user override", 16)
    old = resolve(CONFIG, "old", TODAY)
    assert (old.group, old["cpus"]) == ("students", 4)


def test_two_unix_groups_first_in_file_wins_and_is_reported():
    m = membership(CONFIG, "eve", TODAY, {"research": frozenset({"eve"}), "phd": frozenset({"eve"})})
    assert (m.group, m.conflicts) == ("researchers", ("phd",))


def test_unknown_user_gets_default_group():
    m = membership(CONFIG, "stranger", TODAY, {})
    assert (m.group, m.source) == ("students", "default_group")


def test_slice_properties():
    props = slice_properties(resolve(CONFIG, "alice", TODAY))
    assert props == {"CPUQuotaPerSecUSec": 4_000_000, "MemoryMax": BUILTIN_DEFAULTS["memory_max"],
                     "MemoryHigh": BUILTIN_DEFAULTS["memory_high"], "TasksMax": 4096}


LEVEL = st.dictionaries(st.sampled_from(SETTING_NAMES), st.integers(0, 100) | st.none(), max_size=8)


@given(defaults=LEVEL, group=LEVEL, override=LEVEL)
def test_precedence_holds_for_every_setting(defaults, group, override):
    """Generated levels: each setting comes from the highest level that sets it."""
    from ds01d.config import Config, Group, Override
    config = Config(path="p", defaults=defaults, default_group="g",
                    groups={"g": Group("g", members=("u",), settings=group)},
                    overrides={"u": Override("u", "r", settings=override)})
    limits = resolve(config, "u", TODAY)
    for name in SETTING_NAMES:
        for level, source in ((override, "override (r)"), (group, "group g"), (defaults, "defaults"),
                              (BUILTIN_DEFAULTS, "built-in default")):
            if name in level:
                assert limits.settings[name].value == level[name]
                assert limits.settings[name].source == source
                break
