"""The socket actions' arguments: every hostile body is refused in one sentence, never coerced."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds01d.daemon.request_args import (
    ACTIONS,
    MAX_WAIT_S,
    AllocateArgs,
    ReloadArgs,
    AdmitArgs,
    UsageArgs,
    BadRequest,
    ExtendArgs,
    ReleaseArgs,
    parse_args,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children,
                                                                       max_size=4),
    max_leaves=12)


@pytest.mark.parametrize("wait", ["soon", float("nan"), float("inf"), 1e9, [], {}, True, -1, 1.5,
                                  MAX_WAIT_S + 1, 10**400])
def test_wait_s_that_is_not_a_sane_whole_number_is_refused(wait):
    with pytest.raises(BadRequest, match="wait_s must be a whole number from 0 to 86400") as exc:
        parse_args("allocate", {"wait_s": wait})
    assert "\n" not in str(exc.value) and len(str(exc.value)) < 120


@pytest.mark.parametrize("body,message", [
    ([], "the body must be a JSON object, not a list"),
    ("x", "the body must be a JSON object, not a string"),
    (None, "the body must be a JSON object, not null"),
    ({"count": True}, "count must be a whole number from 1 to 64, not a boolean"),
    ({"count": 0}, "count must be a whole number from 1 to 64, not 0"),
    ({"full": "yes"}, "full must be true or false, not a string"),
    ({"user": "../../root"}, "user must be a login name"),
    ({"user": "аlice"}, "user must be a login name"),       # Cyrillic a
    ({"user": "a" * 40}, "user must be a login name"),
    ({"gpus": 1}, "allocate takes count, devices, full, user, wait_s; not 'gpus'"),
])
def test_allocate_refusals_name_what_is_wrong(body, message):
    with pytest.raises(BadRequest, match=message.replace("(", r"\(")):
        parse_args("allocate", body)


def test_good_bodies_become_typed_values():
    assert parse_args("allocate", {}) == AllocateArgs()
    assert parse_args("allocate", {"count": 2, "full": False, "wait_s": 0, "user": "alice"}) == \
        AllocateArgs("alice", 2, False, 0)
    assert parse_args("allocate", {"wait_s": None, "user": None}) == AllocateArgs()
    assert parse_args("release", {"container": "web"}) == ReleaseArgs("web")
    assert parse_args("extend", {"container": "abc123", "seconds": 3600}) == ExtendArgs("abc123", 3600)


@pytest.mark.parametrize("action,body,message", [
    ("release", {}, "release needs container"),
    ("release", {"container": ""}, "container must be a container's name or id, not a string"),
    ("release", {"container": "x\x1b]0;owned\x07"}, "printable"),
    ("release", {"container": "x" * 129}, "at most 128"),
    ("extend", {"container": "web"}, "extend needs seconds"),
    ("extend", {"container": "web", "seconds": -5}, "seconds must be a whole number from 1"),
    ("extend", {"container": "web", "seconds": "2h"}, "not a string"),
])
def test_release_and_extend_refusals(action, body, message):
    with pytest.raises(BadRequest, match=message):
        parse_args(action, body)


def test_a_hostile_key_is_not_echoed_raw():
    with pytest.raises(BadRequest) as exc:
        parse_args("release", {"container": "web", "\x1b[2J" + "k" * 500: 1})
    assert "\x1b" not in str(exc.value) and len(str(exc.value)) <= 200


@settings(max_examples=400, deadline=None)
@given(action=st.sampled_from(ACTIONS), body=json_values)
def test_any_json_is_a_typed_value_or_one_sentence(action, body):
    try:
        value = parse_args(action, json.loads(json.dumps(body)))
    except BadRequest as exc:
        assert str(exc) and "\n" not in str(exc) and len(str(exc)) <= 200
    else:
        assert isinstance(value, (AllocateArgs, ReleaseArgs, ExtendArgs, ReloadArgs, UsageArgs, AdmitArgs))


def test_reload_takes_no_arguments():
    assert parse_args("reload", {}) == ReloadArgs()
    with pytest.raises(BadRequest, match="reload takes no arguments; not 'path'"):
        parse_args("reload", {"path": "/etc/shadow"})


def test_admit_takes_a_uid():
    assert parse_args("admit", {"uid": 2001}) == AdmitArgs(2001)
    for bad in ({}, {"uid": -1}, {"uid": "2001"}, {"uid": 2**32}, {"uid": 1, "user": "root"}):
        with pytest.raises(BadRequest):
            parse_args("admit", bad)


def test_usage_takes_durations_dates_and_a_key():
    import datetime as dt

    assert parse_args("usage", {}) == UsageArgs()
    assert UsageArgs().since_point() == 30 * 86400 and UsageArgs().until_point() is None
    assert parse_args("usage", {"since_s": 604800}) == UsageArgs(since_s=604800)     # what older CLIs send
    october = parse_args("usage", {"since": "2026-10-01", "until": "2026-11-01", "by": "group"})
    assert (october.since_point(), october.until_point(), october.by) == \
        (dt.date(2026, 10, 1), dt.date(2026, 11, 1), "group")
    assert parse_args("usage", {"until_s": 0}).until_point() == 0


@pytest.mark.parametrize("body,message", [
    ({"since_s": -86400}, "since_s must be a whole number from 0 to 316224000, not -86400"),
    ({"since_s": 10**400}, "since_s must be a whole number from 0 to 316224000, not a number that large"),
    ({"since_s": "30d"}, "since_s must be a whole number from 0 to 316224000, not a string"),
    ({"since_s": 1.5}, "not a fraction"),
    ({"since_s": True}, "not a boolean"),
    ({"until_s": -1}, "until_s must be a whole number from 0"),
    ({"until_s": 2**63}, "not a number that large"),
    ({"since": 20261001}, "since must be a UTC date written like 2026-10-01, not a number"),
    ({"since": "20261001"}, "since must be a UTC date written like 2026-10-01$"),
    ({"since": "2026-10-01T00:00"}, "since must be a UTC date written like 2026-10-01$"),
    ({"since": "2026-10-01\n"}, "since must be a UTC date written like 2026-10-01$"),
    ({"until": "2026-02-30"}, "until must be a UTC date written like 2026-10-01, and 2026-02-30 is no day"),
    ({"until": ["2026-10-01"]}, "not a list"),
    ({"since": "x" * 10_000}, "since must be a UTC date written like 2026-10-01$"),
    ({"by": "project"}, "by must be 'user' or 'group'$"),
    ({"by": "grp; DROP TABLE usage"}, "by must be 'user' or 'group'$"),
    ({"by": ["user"]}, "by must be 'user' or 'group', not a list"),
    ({"by": {"user": 1}}, "not an object"),
    ({"since_s": 86400, "since": "2026-10-01"}, "give since_s or since, not both"),
    ({"until_s": 0, "until": "2026-10-01"}, "give until_s or until, not both"),
    ({"group": "nlp"}, "usage takes by, since, since_s, until, until_s; not 'group'"),
])
def test_usage_refusals_are_one_sentence(body, message):
    with pytest.raises(BadRequest, match=message) as exc:
        parse_args("usage", body)
    assert "\n" not in str(exc.value) and len(str(exc.value)) <= 120


@pytest.mark.parametrize("reason", ["", "A", 'x"}', "a b", "a" * 49, 3, None, ["x"], "\u00e9t\u00e9"])
def test_a_refusal_reason_is_a_plain_short_name(reason):
    with pytest.raises(BadRequest) as refused:
        parse_args("refused", {"reason": reason})
    assert "\n" not in str(refused.value)
    assert parse_args("refused", {"reason": "allow_privileged"}).reason == "allow_privileged"
