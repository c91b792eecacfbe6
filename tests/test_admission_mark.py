"""The gateway's mark on owner labels: only the key makes one, and it names one owner."""

from ds01d.rules.admission_mark import sign, verify

KEY = b"k" * 32


def test_a_mark_verifies_for_its_owner_only():
    mark = sign(KEY, 2001, "alice")
    assert verify(KEY, 2001, "alice", mark)
    assert not verify(KEY, 2002, "alice", mark) and not verify(KEY, 2001, "bob", mark)
    assert not verify(b"other key" * 4, 2001, "alice", mark)
    assert sign(KEY, 2001, "alice") != mark          # a fresh nonce each time


def test_forgeries_and_garbage_do_not_verify():
    good = sign(KEY, 2001, "alice", nonce="n")
    for forged in (None, "", "n", "n.", ".x", good + ".x", good.upper(), "n." + "0" * 64,
                   good.replace("n.", "m."), "n.\u00e9" * 10):
        assert not verify(KEY, 2001, "alice", forged), forged
