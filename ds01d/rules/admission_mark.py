"""Proof that a container's owner labels were written by the gateway, not by a user.

`ds01.uid` on a container made through the gateway is the caller's uid from the kernel:
the owner, beyond doubt.  But labels are text anyone could have written on a container
made before the gateway was enabled.  So the gateway adds `ds01.admission`: a random nonce
and an HMAC-SHA256 over (uid, user, nonce) under a key only root can read; ds01d trusts
`ds01.uid` exactly where the mark verifies.  Pure: the key is passed in.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any, Mapping

MARK_LABEL = "ds01.admission"
_NONCE_BYTES = 12


def sign(key: bytes, uid: int, user: str, nonce: str | None = None) -> str:
    """The mark for a container the gateway admits for (uid, user)."""
    nonce = nonce or secrets.token_hex(_NONCE_BYTES)
    return f"{nonce}.{_digest(key, uid, user, nonce)}"


def verify(key: bytes, uid: int, user: str, mark: str | None) -> bool:
    """Whether `mark` was made with `key` for exactly this (uid, user)."""
    if not mark or mark.count(".") != 1 or not mark.isascii():
        return False   # a label is anyone's text: never an exception here
    nonce, digest = mark.split(".")
    return hmac.compare_digest(digest, _digest(key, uid, user, nonce))


def _digest(key: bytes, uid: int, user: str, nonce: str) -> str:
    message = f"ds01.admission/1\0{uid}\0{user}\0{nonce}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def admitted_owner(key: bytes, labels: Mapping[str, Any]) -> tuple[int, str] | None:
    """(uid, user) of a container the gateway admitted, from its labels; None where the mark
    is absent or does not verify (made before the gateway, directly on the engine by root,
    or labels a user wrote)."""
    uid_text, user = labels.get("ds01.uid"), labels.get("ds01.user")
    if not isinstance(uid_text, str) or not isinstance(user, str):
        return None
    if not (uid_text.isascii() and uid_text.isdigit() and len(uid_text) <= 10) or str(int(uid_text)) != uid_text:
        return None   # only the gateway's own spelling of the uid
    uid = int(uid_text)
    return (uid, user) if verify(key, uid, user, labels.get(MARK_LABEL)) else None
