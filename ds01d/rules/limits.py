"""Which limits apply to a user, and where each one came from.

Pure policy: the config and the host's Unix group members come in as data, so
the precedence rule (user override > group > defaults) is tested exhaustively
without a host.  Every value is carried with its source, because the first thing
an admin asks about a surprising limit is "who set that?".
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from ds01d.config import BUILTIN_DEFAULTS, SETTING_NAMES, Config, Override
from ds01d.rules.slice_names import user_slice

UnixMembers = Mapping[str, frozenset[str]]


@dataclass(frozen=True)
class Resolved:
    """One effective setting and the level that set it."""

    value: Any
    source: str


@dataclass(frozen=True)
class Membership:
    """The group a user's limits and slice come from, and why."""

    group: str
    source: str
    conflicts: tuple[str, ...] = ()


@dataclass(frozen=True)
class EffectiveLimits:
    """Everything ds01d enforces for one user."""

    user: str
    membership: Membership
    settings: Mapping[str, Resolved]
    override: Override | None = None
    expired_override: Override | None = None

    @property
    def group(self) -> str:
        return self.membership.group

    @property
    def slice(self) -> str:
        return user_slice(self.group, self.user)

    def __getitem__(self, name: str) -> Any:
        return self.settings[name].value

    def lifecycle(self, key: str, kind: str) -> int | None:
        """Seconds for lifecycle `key` on a container of `kind`; None means never."""
        return self.settings[f"{key}.{kind}"].value


def active_override(config: Config, user: str, today: dt.date) -> Override | None:
    override = config.overrides.get(user)
    return override if override is not None and override.active(today) else None


def membership(config: Config, user: str, today: dt.date, unix_members: UnixMembers) -> Membership:
    """The user's group: an override's `group`, a `members` list, a Unix group, else the default.

    Unix groups can change under a running daemon, so two groups claiming one user
    is not fatal here: the first in file order wins and the others are reported.
    """
    override = active_override(config, user, today)
    if override is not None and override.group is not None:
        return Membership(override.group, "user override")
    for group in config.groups.values():
        if user in group.members:
            return Membership(group.name, f"listed in group {group.name}")
    claims = [g for g in config.groups.values()
              if g.unix_group is not None and user in unix_members.get(g.unix_group, frozenset())]
    if claims:
        first = claims[0]
        return Membership(first.name, f"Unix group {first.unix_group}",
                          conflicts=tuple(g.name for g in claims[1:]))
    return Membership(config.default_group, "default_group")


def resolve(config: Config, user: str, today: dt.date,
            unix_members: UnixMembers = MappingProxyType({})) -> EffectiveLimits:
    """The effective limits of `user` on `today`, each with its source."""
    member = membership(config, user, today, unix_members)
    group = config.groups.get(member.group)
    override = active_override(config, user, today)
    expired = config.overrides.get(user) if override is None else None
    levels: list[tuple[Mapping[str, Any], str]] = []
    if override is not None:
        levels.append((override.settings, f"override ({override.reason})"))
    if group is not None:
        levels.append((group.settings, f"group {group.name}"))
    levels.append((config.defaults, "defaults"))
    levels.append((BUILTIN_DEFAULTS, "built-in default"))
    settings = {name: _first(levels, name) for name in SETTING_NAMES}
    return EffectiveLimits(user, member, MappingProxyType(settings), override, expired)


def _first(levels: list[tuple[Mapping[str, Any], str]], name: str) -> Resolved:
    for values, source in levels:
        if name in values:
            return Resolved(values[name], source)
    raise KeyError(name)  # BUILTIN_DEFAULTS has every name; reaching here is a bug


def slice_properties(limits: EffectiveLimits) -> dict[str, Any]:
    """The user slice's systemd resource properties, as D-Bus values would carry them.

    `None` means unlimited (systemd's `infinity`).  Kept here, not in the systemd
    adapter, because "8 CPUs means CPUQuota=800%" is policy, not plumbing.
    """
    cpus = limits["cpus"]
    return {
        "CPUQuotaPerSecUSec": None if cpus is None else int(round(cpus * 1_000_000)),
        "MemoryMax": limits["memory_max"],
        "MemoryHigh": limits["memory_high"],
        "TasksMax": limits["tasks_max"],
    }
