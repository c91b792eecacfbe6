"""What the gateway's policy reads of ds01d's world: the config (daemon settings, each
user's host-access rules) and the admission key, read again whenever their files change,
since ds01d's reload does not restart the gateway."""

from __future__ import annotations

import datetime as dt
import os
import pwd
import sys
from typing import Mapping

from ds01d.config import ACCESS_KEYS, Config, ConfigError, load_config, parse_config
from ds01d.config.model import DaemonSettings
from ds01d.host.admission_key import load as load_key
from ds01d.host.unix_groups import unix_group_members
from ds01d.rules.admission_mark import admitted_owner
from ds01d.rules.host_access import Access
from ds01d.rules.limits import resolve


class Settings:
    """The config's daemon settings and the admission key, read again when their files change
    (ds01d's reload does not restart the gateway)."""

    def __init__(self, config_path: str):
        self.config_path = config_path
        self._stamp: tuple[float, float] | None = None
        self.daemon = DaemonSettings()
        self.allocation_wait = 180
        self.config: Config = parse_config("", config_path)
        self._key: bytes | None = None

    def refresh(self) -> None:
        stamp = (_mtime(self.config_path), _mtime(self.key_path))
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            config: Config = load_config(self.config_path)
            self.daemon, self.allocation_wait = config.daemon, config.policies.allocation_wait
            self.config = config
        except ConfigError as exc:
            print(f"ds01d gateway: {self.config_path} refused, keeping the settings in force: "
                  f"{str(exc).splitlines()[0]}", file=sys.stderr, flush=True)
        self._key = load_key(self.key_path)

    @property
    def key_path(self) -> str:
        return f"{self.daemon.state_dir}/admission.key"

    def admitted(self, labels: Mapping[str, str]) -> str | None:
        found = admitted_owner(self._key, labels) if self._key else None
        return found[1] if found else None

    def access(self, user: str, uid: int) -> Access:
        """The caller's host-access rules: their settings (group, override) and their home."""
        unix = unix_group_members(g.unix_group for g in self.config.groups.values() if g.unix_group)
        limits = resolve(self.config, user, dt.date.today(), unix)
        try:
            home = os.path.realpath(pwd.getpwuid(uid).pw_dir)
        except KeyError:
            home = "/nonexistent"
        own_dirs = (self.daemon.state_dir, os.path.dirname(self.daemon.socket_path))
        return Access(home=home, forbidden=own_dirs, **{key: limits[key] for key in ACCESS_KEYS})


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return -1.0
