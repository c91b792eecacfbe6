"""Config reload (`systemctl reload ds01d`): a new file is applied whole or refused whole.

The file must pass what `ds01d check-config` checks, the host's Unix groups
included; a refused file leaves the running config in force and says why with
file:line.  Keys that only a restart can change are named, not silently ignored.
"""

from __future__ import annotations

import datetime as dt
import syslog
from dataclasses import dataclass

from ds01d.config import Config, ConfigError, load_config
from ds01d.config.checks import host_problems
from ds01d.host.decision_log import DecisionLog
from ds01d.host.unix_groups import unix_group_members


@dataclass(frozen=True)
class ReloadOutcome:
    """What a reload gave: the config to run with, or why the running one was kept."""

    config: Config | None       # None: keep the running config
    refused: str | None = None  # the first problem, for the STATUS= line
    restart_needed: tuple[str, ...] = ()   # changed keys that only a restart applies


def load_checked_config(path: str, today: dt.date) -> Config:
    """A config that both the file and the host accept (the same rule as `ds01d check-config`)."""
    config = load_config(path)
    unix = unix_group_members(g.unix_group for g in config.groups.values() if g.unix_group)
    errors = [p for p in host_problems(config, today, unix) if not p.warning]
    if errors:
        raise ConfigError(errors)
    return config


def reload_config(running: Config, today: dt.date, log: DecisionLog) -> ReloadOutcome:
    """Read `running.path` again; journal what was applied, refused or left for a restart."""
    try:
        config = load_checked_config(running.path, today)
    except ConfigError as exc:
        reason = "; ".join(str(p) for p in exc.problems)
        log.record("reload-refused", f"kept the running config: {reason}", priority=syslog.LOG_ERR)
        return ReloadOutcome(None, f"reload refused: {exc.problems[0]}")
    later = tuple(key for key in ("state_dir", "socket_path")
                  if getattr(config.daemon, key) != getattr(running.daemon, key))
    if later:
        log.record("reload-partial", f"{' and '.join(later)} change only on restart",
                   priority=syslog.LOG_WARNING)
    log.record("reload", f"applied {config.path}")
    return ReloadOutcome(config, restart_needed=later)
