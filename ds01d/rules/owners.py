"""Who owns a container and what kind it is, from its `docker inspect` data alone.

Pure policy over the inspect dict.  Containers reach the host every way Docker
allows (CLI, compose, VS Code dev containers, the raw API), so no single signal
is always present; the signals are tried strongest first, the one that decided
is recorded, and a container whose signals disagree is flagged rather than
silently attributed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ds01d.config import KINDS

#: Signal names, strongest first; they appear in the journal and the state database.
SIGNALS: tuple[str, ...] = (
    "gateway", "label:ds01.user", "label:aime.mlc.USER", "name:aime", "cgroup-parent",
    "label:devcontainer.local_folder", "label:compose.working_dir", "bind-mount",
)
_HOME = re.compile(r"^/home/([^/]+)(?:/|$)")
_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")


@dataclass(frozen=True)
class Ownership:
    """The owner (None when no signal names one), the signal that decided, and doubts."""

    owner: str | None
    signal: str | None
    kind: str
    claims: tuple[tuple[str, str], ...] = ()
    flags: tuple[str, ...] = ()

    @property
    def conflicting(self) -> bool:
        return len({user for _, user in self.claims}) > 1


def unescape_unit_part(text: str) -> str:
    """Reverse of systemd_escape for one name part (`jean\\x2dluc` -> `jean-luc`)."""
    raw = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), text.encode("utf-8"))
    return raw.decode("utf-8", errors="replace")


def slice_owner(cgroup_parent: str) -> tuple[str, str] | None:
    """(group, user) of a `ds01-<group>-<user>.slice` cgroup parent, else None."""
    name = cgroup_parent.rstrip("/").rsplit("/", 1)[-1]
    if not name.endswith(".slice"):
        return None
    parts = name[: -len(".slice")].split("-")
    if len(parts) != 3 or parts[0] != "ds01" or not parts[1] or not parts[2]:
        return None
    return unescape_unit_part(parts[1]), unescape_unit_part(parts[2])


#: What an owner's name may be: a login name as POSIX and useradd(8) allow, plus the '.' and
#: '@' of directory-service names; ASCII only, so a look-alike ("аlice" with a Cyrillic a)
#: cannot pass for another user, and at most 32 characters (the utmp limit), so that the
#: escaped `ds01-<group>-<user>.slice` stays far below systemd's 255.
USER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._@-]{0,31}")


def plausible_user(name: str | None) -> bool:
    """Whether a claimed owner can be a login name (see USER_NAME).

    Labels are free text anyone can set; a 10 kB, multi-line or look-alike "user" must
    not become an owner, a slice name or a journal field that breaks a reader.
    """
    return bool(name) and USER_NAME.fullmatch(name) is not None


def _home_user(path: str | None) -> str | None:
    m = _HOME.match(path or "")
    return m.group(1) if m else None


def _labels(inspect: Mapping[str, Any]) -> Mapping[str, str]:
    return (inspect.get("Config") or {}).get("Labels") or {}


def _name(inspect: Mapping[str, Any]) -> str:
    return (inspect.get("Name") or "").lstrip("/")


def _signal_users(inspect: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every (signal, user) the container carries, strongest first."""
    labels = _labels(inspect)
    host = inspect.get("HostConfig") or {}
    found: list[tuple[str, str | None]] = [
        ("label:ds01.user", labels.get("ds01.user") or None),
        ("label:aime.mlc.USER", labels.get("aime.mlc.USER") or None),
        ("name:aime", _name(inspect).rpartition("._.")[2] if "._." in _name(inspect) else None),
        ("cgroup-parent", (slice_owner(host.get("CgroupParent") or "") or (None, None))[1]),
        ("label:devcontainer.local_folder", _home_user(labels.get("devcontainer.local_folder"))),
        ("label:compose.working_dir", _home_user(labels.get("com.docker.compose.project.working_dir"))),
    ]
    mount_users = sorted({u for m in inspect.get("Mounts") or []
                          if m.get("Type") == "bind" and (u := _home_user(m.get("Source")))})
    found.extend(("bind-mount", u) for u in mount_users)
    return [(signal, user) for signal, user in found if user]


def _split_plausible(claims: list[tuple[str, str]], system: Callable[[str], bool]
                     ) -> tuple[list[tuple[str, str]], tuple[str, ...]]:
    """Claims that can name an owner, and a flag for each that cannot (shown, never trusted)."""
    good, bad = [], []
    for signal, user in claims:
        if not plausible_user(user):
            bad.append(f"ignored {signal}: not a plausible user name ({user[:32]!r}{'...' if len(user) > 32 else ''})")
        elif system(user):
            bad.append(f"ignored {signal}: {user} is a system account, which owns no containers")
        else:
            good.append((signal, user))
    return good, tuple(bad)


def container_kind(labels: Mapping[str, str]) -> tuple[str, tuple[str, ...]]:
    """The kind from labels, and a flag when `ds01.container_type` names no known kind."""
    declared = labels.get("ds01.container_type")
    if declared in KINDS:
        return declared, ()
    flags = (f"unknown ds01.container_type {declared[:64]!r}",) if declared else ()
    if any(k.startswith("devcontainer.") for k in labels):
        return "devcontainer", flags
    if any(k.startswith("com.docker.compose.") for k in labels):
        return "compose", flags
    return "docker", flags


def resolve_owner(inspect: Mapping[str, Any], known_user: Callable[[str], bool] | None = None,
                  system_user: Callable[[str], bool] = lambda user: user == "root",
                  admitted: Callable[[Mapping[str, str]], str | None] = lambda labels: None) -> Ownership:
    """The owner and kind of one container.

    `admitted` gives the owner of a container the gateway admitted (its mark verified
    under ds01d's key): the caller's uid as the kernel said, beyond doubt, so no other
    signal is weighed against it and its kind is the gateway's.

    `known_user`, when given, marks owners that are not accounts on this host;
    they are still recorded (the label said so) but flagged for an admin.
    `system_user` says which names are system accounts (root, daemons): a claim of one
    is flagged and ignored, so nobody's container runs on root's account or slice.
    """
    labels = _labels(inspect)
    owner = admitted(labels)
    if owner is not None:
        kind = labels.get("ds01.container_type")
        return Ownership(owner, "gateway", kind if kind in KINDS else "docker", (("gateway", owner),))
    claims, bad = _split_plausible(_signal_users(inspect), system_user)
    kind, flags = container_kind(labels)
    flags += bad
    if not claims:
        return Ownership(None, None, kind, (), flags + ("unowned",))
    signal, owner = claims[0]
    others = sorted({u for _, u in claims if u != owner})
    if others:
        flags += (f"conflicting owners: {owner} ({signal}) vs {', '.join(others)}",)
    if known_user is not None and not known_user(owner):
        flags += (f"{owner} is not a local user",)
    return Ownership(owner, signal, kind, tuple(claims), flags)
