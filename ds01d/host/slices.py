"""Per-user slices through systemd's D-Bus API (jeepney, no `systemctl` in a loop).

A slice that does not exist yet is created as a transient unit carrying its
limits; one that exists gets them with SetUnitProperties(runtime).  Setting a
property on a slice that is not loaded does not stick (SANDBOX.md), so creation
and update are different calls, and every write is read back: an admin must
never believe a limit is in force when it is not.

cgroup v1 (hybrid) hosts ignore MemoryMax=/MemoryHigh= and honour MemoryLimit=;
v2 hosts are the other way round.  The caller passes limits in v2 terms and this
module translates.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Mapping

from jeepney.io.blocking import DBusConnection, open_dbus_connection

from ds01d.host.systemd_bus import UNIT, SystemdBus

INFINITY = 2**64 - 1


class CgroupMode(str, Enum):
    V1 = "v1"       # legacy or hybrid: controllers under /sys/fs/cgroup/<controller>
    V2 = "v2"       # unified: one hierarchy at /sys/fs/cgroup


def detect_cgroup_mode(root: str = "/sys/fs/cgroup") -> CgroupMode:
    return CgroupMode.V2 if os.path.exists(os.path.join(root, "cgroup.controllers")) else CgroupMode.V1


class SliceError(Exception):
    """systemd refused or did not apply a slice's limits."""


@dataclass(frozen=True)
class SliceResult:
    """What was asked of a slice and what systemd reports back."""

    name: str
    created: bool
    wanted: Mapping[str, int]
    actual: Mapping[str, int]
    ignored: tuple[str, ...] = field(default=())

    @property
    def mismatches(self) -> list[str]:
        return [f"{k}: wanted {_show(v)}, systemd has {_show(self.actual.get(k))}"
                for k, v in self.wanted.items() if self.actual.get(k) != v]


def _show(value: int | None) -> str:
    return "infinity" if value == INFINITY else str(value)


def dbus_properties(limits: Mapping[str, int | None], mode: CgroupMode) -> tuple[dict[str, int], tuple[str, ...]]:
    """systemd property values for `limits` (v2 names, None = unlimited) on `mode`,
    and the names this cgroup mode cannot enforce."""
    wanted = {k: INFINITY if v is None else int(v) for k, v in limits.items()}
    if mode is CgroupMode.V2:
        return wanted, ()
    ignored = ("MemoryHigh",) if "MemoryHigh" in wanted else ()
    wanted.pop("MemoryHigh", None)
    if "MemoryMax" in wanted:
        wanted["MemoryLimit"] = wanted.pop("MemoryMax")
    return wanted, ignored


class SystemdSlices:
    """Creates and updates slices on the system manager over one D-Bus connection."""

    def __init__(self, connection: DBusConnection | None = None, mode: CgroupMode | None = None):
        self._bus = SystemdBus(connection or open_dbus_connection(bus="SYSTEM"), SliceError)
        self.mode = mode or detect_cgroup_mode()

    def close(self) -> None:
        self._bus.close()

    def _unit(self, name: str) -> str:
        """The unit's object path, loading it (a slice not known yet is "not-found")."""
        (path,) = self._bus.call("LoadUnit", "s", (name,))
        return path

    def _wait_active(self, unit: str, name: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while (state := self._bus.get(unit, UNIT, "ActiveState")) != "active":
            if state == "failed" or time.monotonic() > deadline:
                raise SliceError(f"{name} did not become active (ActiveState={state})")
            time.sleep(0.01)

    def is_active(self, name: str) -> bool:
        return self._bus.get(self._unit(name), UNIT, "ActiveState") == "active"

    def apply(self, name: str, limits: Mapping[str, int | None], description: str) -> SliceResult:
        """Make slice `name` exist with `limits` (v2 property names), and read them back."""
        wanted, ignored = dbus_properties(limits, self.mode)
        props = [(k, ("t", v)) for k, v in wanted.items()]
        unit = self._unit(name)
        load_state = self._bus.get(unit, UNIT, "LoadState")
        active = self._bus.get(unit, UNIT, "ActiveState") == "active"
        created = load_state == "not-found" and not active
        if created:
            props.append(("Description", ("s", description)))
            self._bus.call("StartTransientUnit", "ssa(sv)a(sa(sv))", (name, "replace", props, []))
            unit = self._unit(name)
        else:
            if not active:
                self._bus.call("StartUnit", "ss", (name, "replace"))
            self._bus.call("SetUnitProperties", "sba(sv)", (name, True, props))
        self._wait_active(unit, name)
        actual = {k: self._bus.get(unit, "org.freedesktop.systemd1.Slice", k) for k in wanted}
        return SliceResult(name, created, wanted, actual, ignored)
