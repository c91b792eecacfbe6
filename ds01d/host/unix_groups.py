"""Members of Unix groups, read from the host's user database.

`getgrnam` lists only supplementary members; a user whose primary group it is
appears only in the passwd entry, so both are read.
"""

from __future__ import annotations

import grp
import pwd
from typing import Iterable


def unix_group_members(names: Iterable[str]) -> dict[str, frozenset[str]]:
    """Members of each named group that exists; missing groups are left out."""
    wanted = {}
    for name in set(names):
        try:
            wanted[name] = grp.getgrnam(name)
        except KeyError:
            continue
    if not wanted:
        return {}
    by_gid: dict[int, set[str]] = {g.gr_gid: set() for g in wanted.values()}
    for entry in pwd.getpwall():
        if entry.pw_gid in by_gid:
            by_gid[entry.pw_gid].add(entry.pw_name)
    return {name: frozenset(g.gr_mem) | frozenset(by_gid[g.gr_gid]) for name, g in wanted.items()}


def is_local_user(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True
