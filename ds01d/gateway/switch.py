"""Switching a host over to the gateway and back: `ds01d gateway enable|disable`.

Enabled, dockerd listens on a root-only socket (a drop-in for Debian's docker.socket;
dockerd's `-H fd://` takes whatever socket systemd passes it) and ds01-gateway.socket owns
the standard /run/docker.sock (group docker).  Moving dockerd's socket needs a restart of
Docker, which stops running containers unless live-restore is on: that is refused while
containers run, unless forced.  Both directions are idempotent: a host already in the
wanted state is left as it is (Docker is not restarted).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from ds01d.host.engine_socket import ENGINE_SOCKET, STANDARD_SOCKET, engine_url

ADMIN_UNITS = Path("/etc/systemd/system")
DROPIN = Path("docker.socket.d") / "ds01-gateway.conf"
GATEWAY_SOCKET_UNIT = "ds01-gateway.socket"
GATEWAY_SERVICE_UNIT = "ds01-gateway.service"
DROPIN_TEXT = f"""\
# Installed by `ds01d gateway enable`, removed by `ds01d gateway disable`.
# dockerd's API socket becomes root-only; the standard {STANDARD_SOCKET} (group docker) is
# ds01-gateway.socket's, in front of it.
[Socket]
ListenStream=
ListenStream={ENGINE_SOCKET}
SocketMode=0600
SocketUser=root
SocketGroup=root
DirectoryMode=0700
RemoveOnStop=yes
"""


class SwitchError(Exception):
    """The switch could not be made; one sentence saying why and what to do."""


@dataclass(frozen=True)
class Host:
    """Where the units live and how they are enabled (`runtime`: under /run, for tests)."""

    unit_dir: Path = ADMIN_UNITS
    runtime: bool = False

    @property
    def dropin(self) -> Path:
        return self.unit_dir / DROPIN


def systemctl(*args: str) -> None:
    proc = subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).strip().splitlines()
        raise SwitchError(f"`systemctl {' '.join(args)}` failed: {said[-1] if said else f'exit {proc.returncode}'}")


def running_containers(socket_path: str) -> int:
    """Containers that a restart of dockerd would stop (0 with live-restore, or no engine)."""
    import docker  # only here: the rest of the CLI does not need it loaded

    try:
        client = docker.APIClient(base_url=f"unix://{socket_path}", timeout=10)
        info = client.info()
    except Exception:  # no engine answering: nothing running that a restart could stop
        return 0
    return 0 if info.get("LiveRestoreEnabled") else int(info.get("ContainersRunning") or 0)


def may_restart_docker(engine_now: str, force: bool, verb: str) -> None:
    """Raise unless restarting dockerd stops no container (or the admin said --force)."""
    running = running_containers(engine_now)
    if running and not force:
        raise SwitchError(f"{verb} the gateway restarts Docker, which would stop {running} running container"
                          f"{'s' if running != 1 else ''} (live-restore is off); run it again with --force, "
                          "or when they have ended")


def restart_docker() -> None:
    """docker.socket and docker.service again, on the socket the drop-in (or its absence) says."""
    systemctl("stop", "docker.service", "docker.socket")
    systemctl("start", "docker.socket", "docker.service")


def enable(host: Host = Host(), force: bool = False) -> str:
    """Move dockerd to its root-only socket and put the gateway on the standard one."""
    moved = not (host.dropin.exists() and host.dropin.read_text() == DROPIN_TEXT)
    if moved:
        may_restart_docker(STANDARD_SOCKET, force, "Enabling")
        systemctl("stop", GATEWAY_SOCKET_UNIT)  # whatever holds the standard path lets go first
        host.dropin.parent.mkdir(parents=True, exist_ok=True)
        host.dropin.write_text(DROPIN_TEXT)
        systemctl("daemon-reload")
        restart_docker()
    systemctl("enable", *(["--runtime"] if host.runtime else []), "--now", GATEWAY_SOCKET_UNIT)
    if not moved:
        return f"ds01d gateway: already enabled: {STANDARD_SOCKET} is the gateway, dockerd is on {ENGINE_SOCKET}."
    return (f"ds01d gateway: enabled: Docker restarted on {ENGINE_SOCKET} (root only), and {STANDARD_SOCKET} "
            "is the gateway.")


def disable(host: Host = Host(), force: bool = False) -> str:
    """Give the standard socket back to dockerd and stop the gateway (open sessions end by themselves)."""
    present = host.dropin.exists()
    if present:
        may_restart_docker(ENGINE_SOCKET, force, "Disabling")
    systemctl("disable", *(["--runtime"] if host.runtime else []), "--now", GATEWAY_SOCKET_UNIT)
    systemctl("stop", GATEWAY_SERVICE_UNIT)
    if not present:
        return f"ds01d gateway: already disabled: {STANDARD_SOCKET} is dockerd's own."
    systemctl("stop", "docker.service", "docker.socket")   # on the engine socket still: RemoveOnStop removes it
    host.dropin.unlink()
    _remove_empty(host.dropin.parent)
    _remove_stale_engine_socket()
    systemctl("daemon-reload")
    systemctl("start", "docker.socket", "docker.service")
    return f"ds01d gateway: disabled: Docker restarted on {STANDARD_SOCKET}, and the gateway is stopped."


def _remove_stale_engine_socket() -> None:
    """A socket file nobody listens on any more (left by a drop-in older than RemoveOnStop=)."""
    path = Path(ENGINE_SOCKET)
    if path.is_socket() and engine_url({}, ENGINE_SOCKET) is None:
        path.unlink(missing_ok=True)
    _remove_empty(path.parent)


def _remove_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass  # other drop-ins live there
