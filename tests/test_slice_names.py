import shutil
import subprocess

import pytest
from hypothesis import given, settings, strategies as st

from ds01d.rules.slice_names import group_slice, systemd_escape, user_slice


def test_slice_names_escape_like_systemd():
    assert user_slice("students", "jean-luc.dupont@lab") == r"ds01-students-jean\x2dluc.dupont\x40lab.slice"
    assert group_slice("phd-2026") == r"ds01-phd\x2d2026.slice"
    assert user_slice("students", "alice") == "ds01-students-alice.slice"


def test_distinct_users_get_distinct_slices():
    # A lossy replacement (- -> _) would merge these two users' limits.
    assert user_slice("g", "a-b") != user_slice("g", "a_b")
    assert user_slice("a-b", "c") != user_slice("a", "b-c")


@pytest.mark.skipif(shutil.which("systemd-escape") is None, reason="systemd-escape is not installed")
@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=20).filter(lambda s: "\x00" not in s))
def test_escape_matches_systemd_escape(name):
    expected = subprocess.run(["systemd-escape", "--", name], capture_output=True, text=True, check=True)
    assert systemd_escape(name) == expected.stdout.rstrip("\n")
