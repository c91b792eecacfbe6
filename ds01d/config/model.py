"""The validated configuration as plain, immutable data.

Everything downstream (limit resolution, the daemon's policies) reads these
objects, never YAML, so a config that loaded is a config that means one thing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any, Mapping

DEFAULT_PATH = "/etc/ds01/ds01.yaml"

#: Container kinds, as DESIGN.md decides them from labels.
KINDS: tuple[str, ...] = ("docker", "compose", "devcontainer", "ds01")

#: Per-user keys whose value is one number/size for the user's whole slice or
#: for each of their containers.
SCALAR_KEYS: tuple[str, ...] = (
    "cpus", "memory_max", "memory_high", "tasks_max",
    "container_cpus", "container_memory", "container_shm_size", "container_gpu_memory",
    "gpu_quota", "max_containers", "priority", "allow_full_gpu",
)

#: Per-user lifecycle keys, each set per container kind (`null` = never).
LIFECYCLE_KEYS: tuple[str, ...] = (
    "idle_timeout", "max_runtime", "gpu_hold_after_stop", "container_hold_after_stop",
)

#: Per-user rules of what a non-admin's container may reach of the host (the gateway
#: applies them; `ds01d.rules.host_access`): each on by default, an exception is a setting.
ACCESS_KEYS: tuple[str, ...] = (
    "allow_privileged", "allow_host_namespaces", "allow_host_network", "bind_roots", "volume_drivers",
    "allowed_devices", "cap_add", "allow_unconfined", "allow_unsafe_sysctls", "allow_low_ports", "log_drivers",
)

#: Every resolvable setting name: scalar keys, access rules, and `key.kind` for lifecycle keys.
SETTING_NAMES: tuple[str, ...] = SCALAR_KEYS + ACCESS_KEYS + tuple(
    f"{key}.{kind}" for key in LIFECYCLE_KEYS for kind in KINDS
)


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


class GpusAllPolicy(str, Enum):
    """What to do with a container started with `--gpus all`."""

    ALLOW = "allow"   # count every GPU against the owner's quota
    WARN = "warn"     # allow, with a warning in the journal
    STOP = "stop"     # stop it, telling the owner to ask for devices


class UnownedPolicy(str, Enum):
    """What to do with a container no owner signal points at."""

    WARN = "warn"
    STOP = "stop"


class OutsideSlicePolicy(str, Enum):
    """What to do with a container not under its owner's slice."""

    CAP = "cap"       # apply the per-container caps through Docker's update API
    WARN = "warn"     # record and warn only


class ForeignDevicePolicy(str, Enum):
    """What to do with a container started on a device reserved for or allocated to another user."""

    STOP = "stop"
    WARN = "warn"


@dataclass(frozen=True)
class Reservation:
    """Devices kept for one user between two times (from a user override)."""

    user: str
    devices: tuple[str, ...]
    start: dt.datetime
    end: dt.datetime
    reason: str

    def active(self, now: float) -> bool:
        return self.start.timestamp() <= now < self.end.timestamp()


@dataclass(frozen=True)
class DaemonSettings:
    """How the daemon itself runs."""

    sampling_interval: int = 10
    state_dir: str = "/var/lib/ds01"
    socket_path: str = "/run/ds01/ds01d.sock"
    admin_group: str | None = "ds01-admin"
    show_other_users: bool = True
    audit_retention: int | None = 90 * 86400   # seconds of audit trail kept; None: forever
    metrics_file: str | None = "/var/lib/prometheus/node-exporter/ds01d.prom"   # None: no metrics


@dataclass(frozen=True)
class Policies:
    """Lab-wide rules that are not per user."""

    idle_threshold: float = 5.0
    idle_window: int = 300
    grace_after_start: int = 900
    warning_lead_times: tuple[int, ...] = (900, 300)
    keep_alive_file: str | None = "/workspace/.keep-alive"
    keep_alive_max_age: int = 86400
    gpus_all: GpusAllPolicy = GpusAllPolicy.STOP
    unowned: UnownedPolicy = UnownedPolicy.WARN
    outside_slice: OutsideSlicePolicy = OutsideSlicePolicy.CAP
    sigterm_grace: int = 30
    notify_command: tuple[str, ...] | None = None
    notify_timeout: int = 30
    max_extension: int | None = 14400
    allocation_timeout: int = 300
    allocation_wait: int = 180
    allow_sharing: bool = False
    foreign_device: ForeignDevicePolicy = ForeignDevicePolicy.STOP


@dataclass(frozen=True)
class Group:
    """A named set of users sharing limits; `settings` holds only the keys it sets."""

    name: str
    members: tuple[str, ...] = ()
    unix_group: str | None = None
    settings: Mapping[str, Any] = field(default_factory=_empty)
    line: int = 0
    unix_group_line: int = 0


@dataclass(frozen=True)
class Override:
    """One user's exception to their group, with the reason an admin gave."""

    user: str
    reason: str
    expires: dt.date | None = None
    group: str | None = None
    settings: Mapping[str, Any] = field(default_factory=_empty)
    line: int = 0
    reservation: Reservation | None = None

    def active(self, today: dt.date) -> bool:
        """An override applies through its expiry date, inclusive."""
        return self.expires is None or today <= self.expires


@dataclass(frozen=True)
class Config:
    """A whole, valid configuration file."""

    path: str
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    policies: Policies = field(default_factory=Policies)
    defaults: Mapping[str, Any] = field(default_factory=_empty)
    default_group: str = "default"
    groups: Mapping[str, Group] = field(default_factory=_empty)
    overrides: Mapping[str, Override] = field(default_factory=_empty)
    #: Where each per-user setting is written ("defaults.bind_roots" -> line), for host checks.
    lines: Mapping[str, int] = field(default_factory=_empty)


#: Built-in values for every setting, used where the file's `defaults` leaves a key
#: out.  They match the shipped config/ds01.yaml.
BUILTIN_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "cpus": 8.0,
    "memory_max": 32 * 1024**3,
    "memory_high": 28 * 1024**3,
    "tasks_max": 4096,
    "container_cpus": None,
    "container_memory": None,
    "container_shm_size": None,
    "container_gpu_memory": None,
    "gpu_quota": 1.0,
    "max_containers": 3,
    "priority": 10,
    "allow_full_gpu": False,
    "allow_privileged": False,
    "allow_host_namespaces": False,
    "allow_host_network": False,
    "bind_roots": ("~",),
    "volume_drivers": ("local",),
    "allowed_devices": (),
    "cap_add": (),
    "allow_unconfined": False,
    "allow_unsafe_sysctls": False,
    "allow_low_ports": False,
    "log_drivers": ("json-file", "local", "journald", "none"),
    **{f"idle_timeout.{k}": 1800 for k in KINDS},
    "max_runtime.docker": 2 * 86400,
    "max_runtime.compose": 3 * 86400,
    "max_runtime.devcontainer": 7 * 86400,
    "max_runtime.ds01": 2 * 86400,
    **{f"gpu_hold_after_stop.{k}": 3600 for k in KINDS},
    **{f"container_hold_after_stop.{k}": 7 * 86400 for k in KINDS},
})
