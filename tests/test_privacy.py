"""Other users' names hidden from non-admins: whole names only, the reader's own kept."""

from __future__ import annotations

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
