"""Members of Unix groups, read from the host's user database.

`getgrnam` lists only supplementary members; a user whose primary group it is
appears only in the passwd entry, so both are read.
"""

from __future__ import annotations

import grp
import pwd
import re
from functools import lru_cache
from typing import Iterable

LOGIN_DEFS = "/etc/login.defs"


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


def is_system_user(user: str) -> bool:
    """root, and local accounts below UID_MIN (daemons, nobody): never the owner of a container."""
    if user == "root":
        return True
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        return False
    return uid < uid_min() or uid == 65534


@lru_cache(maxsize=1)
def uid_min(path: str = LOGIN_DEFS) -> int:
    """UID_MIN of login.defs: the first uid useradd gives a person (1000 when unset)."""
    try:
        text = open(path, encoding="utf-8", errors="replace").read()
    except OSError:
        return 1000
    m = re.search(r"^\s*UID_MIN\s+(\d+)", text, re.MULTILINE)
    return int(m.group(1)) if m else 1000


def is_admin(uid: int, admin_group: str | None) -> tuple[str, bool]:
    """(login name, whether root or a member of `admin_group`) for a uid from the kernel.
    A uid without an account is named by its number and is no admin."""
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return ("root" if uid == 0 else str(uid)), uid == 0
    if uid == 0:
        return entry.pw_name, True
    if not admin_group:
        return entry.pw_name, False
    try:
        group = grp.getgrnam(admin_group)
    except KeyError:
        return entry.pw_name, False
    return entry.pw_name, entry.pw_name in group.gr_mem or entry.pw_gid == group.gr_gid
