"""Checks of a loaded config against today's date and the host's Unix groups.

Kept apart from the loader because the file alone cannot know them: a Unix group
may gain a member tomorrow.  `ds01d check-config` and the daemon's reload both run
them, so the two never disagree about whether a config is acceptable.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Callable, Mapping

from .loader import ConfigProblem
from .model import Config


def host_problems(config: Config, today: dt.date,
                  unix_members: Mapping[str, frozenset[str]]) -> list[ConfigProblem]:
    """Errors (a user claimed by two groups) and warnings (expired overrides, missing Unix groups)."""
    problems = _expired_overrides(config, today) + _missing_unix_groups(config, unix_members)
    problems += _double_membership(config, unix_members) + _missing_bind_roots(config)
    return sorted(problems)


def _missing_bind_roots(config: Config, exists: Callable[[str], bool] = os.path.isdir) -> list[ConfigProblem]:
    """A bind root that is not a directory here: binds below it are refused until it is."""
    levels = [("defaults", config.defaults)] + [(f"groups.{g.name}", g.settings) for g in config.groups.values()] \
        + [(f"user_overrides.{o.user}", o.settings) for o in config.overrides.values()]
    problems = []
    for where, settings in levels:
        for root in settings.get("bind_roots") or ():
            path = root.partition(":")[0]
            if path != "~" and not exists(path):
                problems.append(ConfigProblem(config.path, config.lines.get(f"{where}.bind_roots", 0),
                                              f"{where}.bind_roots: {path} is not a directory on this host",
                                              warning=True))
    return problems


def _expired_overrides(config: Config, today: dt.date) -> list[ConfigProblem]:
    return [ConfigProblem(config.path, o.line, f"user_overrides.{o.user}: expired on {o.expires}; "
                          "it no longer applies", warning=True)
            for o in config.overrides.values() if not o.active(today)]


def _missing_unix_groups(config: Config, unix_members: Mapping[str, frozenset[str]]) -> list[ConfigProblem]:
    return [ConfigProblem(config.path, g.unix_group_line, f"groups.{g.name}.unix_group: there is no "
                          f"Unix group {g.unix_group!r} on this host", warning=True)
            for g in config.groups.values() if g.unix_group is not None and g.unix_group not in unix_members]


def _double_membership(config: Config, unix_members: Mapping[str, frozenset[str]]) -> list[ConfigProblem]:
    """A user that two groups claim, where at least one claim comes through a Unix group."""
    problems: list[ConfigProblem] = []
    claimed: dict[str, str] = {}
    for group in config.groups.values():
        for user in group.members:
            claimed.setdefault(user, group.name)
    placed_by_override = {o.user for o in config.overrides.values() if o.group is not None}
    for group in config.groups.values():
        if group.unix_group is None:
            continue
        for user in sorted(unix_members.get(group.unix_group, frozenset())):
            other = claimed.setdefault(user, group.name)
            if other != group.name and user not in placed_by_override and user not in group.members:
                problems.append(ConfigProblem(
                    config.path, group.unix_group_line,
                    f"groups.{group.name}.unix_group: user {user!r} (in Unix group {group.unix_group!r}) "
                    f"is also in group {other!r}; list them in one group or give them a user_overrides "
                    "entry with `group:`"))
    return problems
