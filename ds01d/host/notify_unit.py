"""The admin's notify command, run by systemd as a transient service outside ds01d's sandbox.

ds01d itself has no network (PrivateNetwork=yes, AF_UNIX only) and runs as root, so a
mail or chat notifier started as its child could neither reach a mail relay or a
webhook nor be trusted with root.  It is started instead the way `systemd-run` starts a
command: StartTransientUnit on systemd's manager, over the D-Bus connection ds01d
already uses for slices, with a sandbox of its own (`SANDBOX`, documented in ds01d(8)):

* User=ds01-notify, an unprivileged system user the package creates: the command
  reads what users control (container names, in DS01_* variables), so it runs with no
  power over the host.  Not DynamicUser=, which forces NoNewPrivileges=: the sendmail
  of postfix (postdrop), exim4 and nullmailer are setuid or setgid, and would fail.
* The network (it is the point), /usr/sbin/sendmail and the MTA's spool under /var
  (ProtectSystem=full, not strict); no home directories, a private /tmp, only the
  pseudo-devices (/dev/null, urandom, ...), read-only cgroups, no kernel-level
  capabilities even for a setuid program (CapabilityBoundingSet=), at most
  256 MiB and 64 tasks.  No seccomp-based setting: for a service that is not root each
  of them implies NoNewPrivileges=, which is what breaks setuid MTAs.
* RuntimeMaxSec=policies.notify_timeout, after which systemd stops the whole unit
  (children of a shell included) and says so: Result=timeout.
* The DS01_* fields as Environment=, each passed through `printable` first: they are
  shown to people by mail and chat, and a unit's environment must not carry escapes.

The caller (a worker thread of the actuator, never the main loop) waits for the unit to
finish: AddRef=yes keeps it loaded until this connection closes, so its Result and exit
status can be read, and CollectMode=inactive-or-failed lets systemd forget it
afterwards instead of keeping failed units around.  Its output is in the journal
(`journalctl -u ds01-notify-*`), which every failure message names.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Callable, Mapping, Sequence

from jeepney.io.blocking import DBusConnection, open_dbus_connection

from ds01d.host.systemd_bus import UNIT, SystemdBus
from ds01d.rules.safe_text import printable

NOTIFY_USER = "ds01-notify"
STOP_GRACE = 5          # seconds between SIGTERM and SIGKILL once RuntimeMaxSec is reached
USEC = 1_000_000
_SERVICE = "org.freedesktop.systemd1.Service"

Property = tuple[str, tuple[str, Any]]

# Capabilities no notifier, and no setuid MTA it runs, has any use for: the kernel's own.
_NEVER = (12, 16, 17, 19, 21, 22, 25, 27, 30, 32, 33, 34, 39)  # NET_ADMIN, SYS_MODULE, SYS_RAWIO,
# SYS_PTRACE, SYS_ADMIN, SYS_BOOT, SYS_TIME, MKNOD, AUDIT_CONTROL, MAC_OVERRIDE, MAC_ADMIN, SYSLOG, BPF
CAPABILITY_BOUNDING = (2**64 - 1) & ~sum(1 << cap for cap in _NEVER)

# The notify command's sandbox (see the module's docstring for why each is, or is not, here).
# Only mount, cgroup and capability settings: every seccomp-based one (RestrictAddressFamilies=,
# SystemCallFilter=, PrivateDevices=, ProtectKernelModules=, LockPersonality=, and in systemd
# 252 ProtectKernelTunables= too, as measured) makes systemd set NoNewPrivileges for a service
# that is not root, and setuid MTAs would break.
SANDBOX: tuple[Property, ...] = (
    ("User", ("s", NOTIFY_USER)),
    ("ProtectSystem", ("s", "full")),
    ("ProtectHome", ("s", "yes")),
    ("PrivateTmp", ("b", True)),
    ("ProtectControlGroups", ("b", True)),
    ("DevicePolicy", ("s", "closed")),       # /dev/null, zero, full, random, urandom, tty only
    ("CapabilityBoundingSet", ("t", CAPABILITY_BOUNDING)),
    ("UMask", ("u", 0o077)),
    ("MemoryMax", ("t", 256 * 2**20)),
    ("TasksMax", ("t", 64)),
)


class NotifyError(Exception):
    """systemd could not be asked, or refused, to run the notify command."""


def unit_name(action: str, container: str, token: str | None = None) -> str:
    """ds01-notify-<action>-<container>-<random>.service, from the characters unit names allow."""
    tame = [re.sub(r"[^a-z0-9-]+", "", part.lower())[:24] for part in (action, container[:12])]
    return "-".join(["ds01-notify", *(p for p in tame if p), token or uuid.uuid4().hex[:8]]) + ".service"


def unit_properties(argv: Sequence[str], fields: Mapping[str, str], timeout: float,
                    description: str) -> list[Property]:
    """StartTransientUnit's properties for running `argv` with `fields` in its environment."""
    return [
        ("Description", ("s", printable(description))),
        ("Type", ("s", "exec")),
        ("ExecStart", ("a(sasb)", [(argv[0], list(argv), False)])),
        ("Environment", ("as", [f"{k}={printable(v)}" for k, v in fields.items()])),
        ("RuntimeMaxUSec", ("t", int(timeout * USEC))),
        ("TimeoutStopUSec", ("t", STOP_GRACE * USEC)),
        ("CollectMode", ("s", "inactive-or-failed")),
        ("AddRef", ("b", True)),
        *SANDBOX,
    ]


def outcome(result: str, code: int, status: int, timeout: float) -> str | None:
    """What went wrong, from the service's Result, ExecMainCode and ExecMainStatus; None if nothing."""
    if result == "success":
        return None
    if result == "timeout":
        return f"ran longer than {timeout:g} s and was stopped"
    if code in (2, 3):  # CLD_KILLED, CLD_DUMPED: status is the signal
        return f"was killed by signal {status}"
    if code == 1 and status == 217:
        return f"could not run as user {NOTIFY_USER}, which does not exist (see ds01d(8))"
    if code == 1 and status == 203:
        return "could not be executed (missing, or not executable by ds01-notify)"
    if code == 1 and status >= 200:
        return f"could not be started by systemd (exit status {status}, see systemd.exec(5))"
    if code == 1:
        return f"exited {status}"
    return f"failed ({result})"


def _wait(bus: SystemdBus, path: str, deadline: float) -> bool:
    """Poll until the unit has run and ended (no job, inactive or failed); False at the deadline."""
    pause = 0.02
    while time.monotonic() < deadline:
        job_id, _ = bus.get(path, UNIT, "Job")
        if job_id == 0 and bus.get(path, UNIT, "ActiveState") in ("inactive", "failed"):
            return True
        time.sleep(pause)
        pause = min(pause * 1.5, 0.5)
    return False


def run_notify_command(argv: Sequence[str], fields: Mapping[str, str], timeout: float, action: str = "",
                       container: str = "", connect: Callable[[], DBusConnection] | None = None) -> str | None:
    """Run the admin's notify command as a transient service and wait for it; its error, if any,
    as one sentence naming the unit whose journal has the command's own output."""
    name = unit_name(action, container)
    props = unit_properties(argv, fields, timeout, f"ds01d notify command: {action} {container[:12]}")
    try:
        conn = (connect or (lambda: open_dbus_connection(bus="SYSTEM")))()
    except OSError as exc:
        return f"notify command {argv[0]}: cannot reach systemd's D-Bus: {exc}"
    try:
        bus = SystemdBus(conn, NotifyError)
        bus.call("StartTransientUnit", "ssa(sv)a(sa(sv))", (name, "fail", props, []))
        (path,) = bus.call("GetUnit", "s", (name,))
        if not _wait(bus, path, time.monotonic() + timeout + STOP_GRACE + 10):
            bus.call("StopUnit", "ss", (name, "replace"))
            return f"notify command {argv[0]} did not end; {name} stopped"
        error = outcome(bus.get(path, _SERVICE, "Result"), bus.get(path, _SERVICE, "ExecMainCode"),
                        bus.get(path, _SERVICE, "ExecMainStatus"), timeout)
    except (NotifyError, OSError, TimeoutError) as exc:
        return f"notify command {argv[0]}: {exc}"
    finally:
        conn.close()  # drops AddRef: systemd forgets the finished unit
    return None if error is None else f"notify command {argv[0]} {error}; see journalctl -u {name}"
