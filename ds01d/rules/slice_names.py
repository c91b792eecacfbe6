"""systemd unit names for ds01d's slices.

User and group names on real hosts contain `-`, `.` and `@` (`jean-luc.dupont@lab`).
A `-` inside a slice name means nesting to systemd, so each name is escaped the way
`systemd-escape` does it, never replaced lossily: two users must never share a slice.
"""

from __future__ import annotations

import string

_KEEP = frozenset(string.ascii_letters + string.digits + ":_.")
ROOT_SLICE = "ds01.slice"


def systemd_escape(name: str) -> str:
    """`name` escaped as `systemd-escape NAME` prints it (not in --path mode)."""
    out = []
    for i, ch in enumerate(name):
        if ch == "/":
            out.append("-")
        elif ch in _KEEP and not (i == 0 and ch == "."):
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8"))
    return "".join(out)


def group_slice(group: str) -> str:
    """`ds01-<group>.slice`, the parent of its members' slices."""
    return f"ds01-{systemd_escape(group)}.slice"


def user_slice(group: str, user: str) -> str:
    """`ds01-<group>-<user>.slice`, nested by systemd under the group's slice."""
    return f"ds01-{systemd_escape(group)}-{systemd_escape(user)}.slice"
