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
from typing import Any, Mapping

from jeepney import DBusAddress, DBusErrorResponse, MessageType, Properties, new_method_call
from jeepney.io.blocking import DBusConnection, open_dbus_connection

INFINITY = 2**64 - 1
_MANAGER = DBusAddress("/org/freedesktop/systemd1", bus_name="org.freedesktop.systemd1",
                       interface="org.freedesktop.systemd1.Manager")


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
        self._conn = connection or open_dbus_connection(bus="SYSTEM")
        self.mode = mode or detect_cgroup_mode()

    def close(self) -> None:
        self._conn.close()

    def _call(self, address: DBusAddress, method: str, signature: str | None = None, body: tuple = ()) -> Any:
        reply = self._conn.send_and_get_reply(new_method_call(address, method, signature, body), timeout=10)
        if reply.header.message_type is MessageType.error:
            raise SliceError(f"systemd {method}: {DBusErrorResponse(reply)}")
        return reply.body

    def _unit(self, name: str) -> DBusAddress:
        (path,) = self._call(_MANAGER, "LoadUnit", "s", (name,))
        return DBusAddress(path, bus_name="org.freedesktop.systemd1", interface="org.freedesktop.systemd1.Unit")

    def _get(self, unit: DBusAddress, interface: str, prop: str) -> Any:
        address = DBusAddress(unit.object_path, bus_name=unit.bus_name, interface=interface)
        reply = self._conn.send_and_get_reply(Properties(address).get(prop), timeout=10)
        if reply.header.message_type is MessageType.error:
            raise SliceError(f"systemd Get {prop}: {DBusErrorResponse(reply)}")
        return reply.body[0][1]

    def _wait_active(self, unit: DBusAddress, name: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while (state := self._get(unit, "org.freedesktop.systemd1.Unit", "ActiveState")) != "active":
            if state == "failed" or time.monotonic() > deadline:
                raise SliceError(f"{name} did not become active (ActiveState={state})")
            time.sleep(0.01)

    def is_active(self, name: str) -> bool:
        return self._get(self._unit(name), "org.freedesktop.systemd1.Unit", "ActiveState") == "active"

    def apply(self, name: str, limits: Mapping[str, int | None], description: str) -> SliceResult:
        """Make slice `name` exist with `limits` (v2 property names), and read them back."""
        wanted, ignored = dbus_properties(limits, self.mode)
        props = [(k, ("t", v)) for k, v in wanted.items()]
        unit = self._unit(name)
        load_state = self._get(unit, "org.freedesktop.systemd1.Unit", "LoadState")
        active = self._get(unit, "org.freedesktop.systemd1.Unit", "ActiveState") == "active"
        created = load_state == "not-found" and not active
        if created:
            props.append(("Description", ("s", description)))
            self._call(_MANAGER, "StartTransientUnit", "ssa(sv)a(sa(sv))", (name, "replace", props, []))
            unit = self._unit(name)
        else:
            if not active:
                self._call(_MANAGER, "StartUnit", "ss", (name, "replace"))
            self._call(_MANAGER, "SetUnitProperties", "sba(sv)", (name, True, props))
        self._wait_active(unit, name)
        actual = {k: self._get(unit, "org.freedesktop.systemd1.Slice", k) for k in wanted}
        return SliceResult(name, created, wanted, actual, ignored)
