"""Calls on systemd's manager over one D-Bus connection (jeepney), for the slice keeper and
the notify command's transient units: a method of the manager, or a property of a unit,
with systemd's error reply turned into the caller's own exception in one sentence."""

from __future__ import annotations

from typing import Any, Callable

from jeepney import DBusAddress, DBusErrorResponse, MessageType, Properties, new_method_call
from jeepney.io.blocking import DBusConnection

BUS_NAME = "org.freedesktop.systemd1"
MANAGER = DBusAddress("/org/freedesktop/systemd1", bus_name=BUS_NAME, interface="org.freedesktop.systemd1.Manager")
UNIT = "org.freedesktop.systemd1.Unit"
TIMEOUT = 10.0


class SystemdBus:
    """systemd's manager on `conn`; a failed call raises `error(sentence)`."""

    def __init__(self, conn: DBusConnection, error: Callable[[str], Exception]):
        self.conn = conn
        self.error = error

    def call(self, method: str, signature: str | None = None, body: tuple = ()) -> Any:
        """A method of the manager (LoadUnit, StartTransientUnit...); its reply's body."""
        return self._reply(new_method_call(MANAGER, method, signature, body), f"systemd {method}").body

    def get(self, path: str, interface: str, prop: str) -> Any:
        """A property of the unit at object `path`."""
        address = DBusAddress(path, bus_name=BUS_NAME, interface=interface)
        return self._reply(Properties(address).get(prop), f"systemd Get {prop}").body[0][1]

    def _reply(self, message: Any, what: str) -> Any:
        reply = self.conn.send_and_get_reply(message, timeout=TIMEOUT)
        if reply.header.message_type is MessageType.error:
            raise self.error(f"{what}: {DBusErrorResponse(reply)}")
        return reply

    def close(self) -> None:
        self.conn.close()
