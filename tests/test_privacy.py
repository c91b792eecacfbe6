"""Other users' names hidden from non-admins: whole names only, the reader's own kept."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from ds01d.rules.privacy import HIDDEN, NOBODY_HIDDEN, Redactor

NAMES = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._@-]{0,31}", fullmatch=True)


def test_whole_names_only_and_the_readers_own_stays():
    r = Redactor(["bob", "alice", "jean.luc", "a"], "alice")
    assert r.text("GPU 1:0 is held for bob until 14:00 (it is bob's)") == \
        f"GPU 1:0 is held for {HIDDEN} until 14:00 (it is {HIDDEN}'s)"
    assert r.text("bobby and bob-2 and bob@lab are not bob") == f"bobby and bob-2 and bob@lab are not {HIDDEN}"
    assert r.text("alice waits for jean.luc") == f"alice waits for {HIDDEN}"
    assert r.text("jeanxluc is not jean.luc") == f"jeanxluc is not {HIDDEN}"   # '.' is not a wildcard
    assert r.text("a GPU") == f"{HIDDEN} GPU"        # a name that is a word costs clarity, never privacy


def test_trees_and_nobody_hidden():
    r = Redactor(["bob"], "alice")
    doc = {"error": "in use by bob.", "recent": [{"reason": "held for bob", "status": "bob", "at": "bob"}],
           "why": ["bob", 1, None]}
    assert r.tree(doc) == {"error": f"in use by {HIDDEN}.", "recent": [{"reason": f"held for {HIDDEN}",
                                                                        "status": "bob", "at": "bob"}],
                           "why": [HIDDEN, 1, None]}
    assert NOBODY_HIDDEN.tree(doc) == doc and Redactor([], "alice").text("bob") == "bob"


@given(st.lists(NAMES, max_size=30), NAMES, st.text(max_size=200))
def test_no_other_name_survives_on_its_own(names, reader, text):
    out = Redactor(names, reader).text(" ".join([text, *names]))
    left = out.split(" ")
    assert not [n for n in names if n != reader and n not in HIDDEN.split(" ") and n in left[-len(names):]]


def test_container_names_not_the_readers_are_hidden():
    r = Redactor(["bob"], "alice", {"bobs-run": "bob", "alices-run": "alice", "orphan": None})
    assert r.text("held for bob (stopped container bobs-run); alices-run and orphan") == \
        "held for another user (stopped container (hidden)); alices-run and (hidden)"


def test_what_the_reader_wrote_is_spared():
    r = Redactor(["bob"], "alice", {"bobs-run": "bob", "x": "bob"}).sparing(w for w in ["bobs-run"])
    assert r.text("no container 'bobs-run'; held for bob") == "no container 'bobs-run'; held for another user"


def test_a_name_ending_a_sentence_is_hidden_and_data_fields_are_left_alone():
    """bob's container named "running" must not turn everyone's states into "(hidden)"."""
    r = Redactor(["bob"], "alice", {"running": "bob", "2026-11-25T10": "bob"})
    assert r.text("0 in use by bob.") == f"0 in use by {HIDDEN}."
    assert r.text("bob.smith and bob.") == f"bob.smith and {HIDDEN}."
    doc = {"status": "running", "at": "2026-11-25T10:00:00Z", "reason": "stopped: running since 10:00"}
    assert r.tree(doc) == {"status": "running", "at": "2026-11-25T10:00:00Z",
                           "reason": "stopped: (hidden) since 10:00"}


def _usage_daemon(tmp_path, show_other_users):
    """AdminActions over a real usage table, a fixed clock (2026-11-20) and the one setting it reads."""
    import datetime as dt
    from types import SimpleNamespace

    from ds01d.daemon.admin_actions import AdminActions
    from ds01d.host.state_db import GpuStore, Store

    gpu = GpuStore(Store(str(tmp_path / "state.db")))
    gpu.add_usage("2026-10-05", "alice", "c1", "busy", 3600, energy_j=1e6, group="vision")
    gpu.add_usage("2026-10-06", "bob", "c2", "busy", 7200, energy_j=2e6, group="vision")
    now = dt.datetime(2026, 11, 20, 12, tzinfo=dt.timezone.utc).timestamp()
    daemon = SimpleNamespace(config=SimpleNamespace(daemon=SimpleNamespace(show_other_users=show_other_users)),
                             gpus=SimpleNamespace(gpu=gpu), clock=lambda: now)
    return AdminActions(daemon)


def test_usage_through_the_socket_hides_other_users_and_their_groups(tmp_path):
    from ds01d.daemon.request_args import parse_args
    from ds01d.daemon.status_model import Caller

    actions = _usage_daemon(tmp_path, show_other_users=False)
    alice, root = Caller("alice", 1001, False), Caller("root", 0, True)
    october = {"since": "2026-10-01", "until": "2026-11-01"}
    code, doc = actions.usage(parse_args("usage", october), alice)
    assert code == 200 and [u["user"] for u in doc["users"]] == ["alice"] and "bob" not in json.dumps(doc)
    assert (doc["since"], doc["until"], doc["by"]) == ("2026-10-01", "2026-11-01", "user")
    code, doc = actions.usage(parse_args("usage", {**october, "by": "group"}), alice)
    assert code == 403 and doc == {"error": "usage per group is for admins on this host, where other users "
                                            "are not shown (daemon.show_other_users is false)"}
    code, doc = actions.usage(parse_args("usage", {**october, "by": "group"}), root)
    assert code == 200 and [(g["group"], g["busy_gpu_seconds"]) for g in doc["groups"]] == [("vision", 10800.0)]


def test_usage_through_the_socket_where_users_are_shown(tmp_path):
    from ds01d.daemon.request_args import parse_args
    from ds01d.daemon.status_model import Caller

    actions = _usage_daemon(tmp_path, show_other_users=True)
    alice = Caller("alice", 1001, False)
    code, doc = actions.usage(parse_args("usage", {"by": "group"}), alice)     # the last 30 days: 2026-10-21 on
    assert code == 200 and doc["groups"] == [] and doc["since"] == "2026-10-21" and doc["until"] == "2026-11-21"
    code, doc = actions.usage(parse_args("usage", {"since_s": 60 * 86400}), alice)
    assert [u["user"] for u in doc["users"]] == ["bob", "alice"]
    code, doc = actions.usage(parse_args("usage", {"since": "2026-10-10", "until_s": 60 * 86400}), alice)
    assert code == 400 and doc["error"] == \
        "until (2026-09-22) is not after since (2026-10-10), so no day would be counted"
