"""The gateway as shipped, switched on in the test box, and an ordinary docker-group user
to talk to it: shared by the gateway's box tests and its benchmark.

The units are the shipped ones with a drop-in that runs this checkout; `ds01d gateway
enable` puts its docker.socket drop-in into the box's unit directory and enables the
socket under /run (the box's own), so nothing of the host is touched.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ENGINE = "/run/ds01-engine/docker.sock"
STANDARD = "/run/docker.sock"
SERVICE = "ds01-gateway.service"
USER, UID = "gwuser", 2701
PEER, PEER_UID = "gwpeer", 2702
#: ds01d's config for the gateway's box tests: two ordinary users, one GPU quota each.
CONFIG = """\
daemon: {state_dir: "{state_dir}", sampling_interval: 1s}
policies: {grace_after_start: 0s, sigterm_grace: 1s, allocation_timeout: 1m, allocation_wait: 30s}
defaults: {gpu_quota: 1, gpu_hold_after_stop: 0s, idle_timeout: null, max_runtime: null}
default_group: students
groups:
  students: {cpus: 2, memory_max: 2G, max_containers: 6}
"""


class GatewayBox:
    """The enabled gateway in `box`, judging with ds01d's policy under `config_path` (ds01d's
    config, so the gateway finds ds01d's socket and key), and the users `gwuser` (uid 2701)
    and `gwpeer` (uid 2702), both in group docker."""

    def __init__(self, box: Any, config_path: str):
        self.box = box
        self.home = self.add_caller(USER, UID)
        self.add_caller(PEER, PEER_UID)
        self.docker_gid = int(box.run(["getent", "group", "docker"]).stdout.split(":")[2])
        for unit in ("ds01-gateway.socket", "ds01-gateway.service"):
            box.install_unit(unit, (REPO / "systemd" / unit).read_text())
        box.install_unit(f"{SERVICE}.d/box.conf", f"[Service]\nExecStart=\n"
                         f"ExecStart={box.tool('ds01d')} gateway run --config {config_path}\n")

    def add_caller(self, name: str, uid: int) -> Path:
        home = Path(self.box.run_dir) / f"{name}-home"
        home.mkdir(exist_ok=True)
        os.chown(home, uid, uid)
        self.box.add_user(name, uid, home=str(home))
        self.box.add_to_group(name, "docker")
        return home

    # ---- switching ------------------------------------------------------------

    def switch(self, action: str) -> str:
        return self.box.run([self.box.tool("ds01d"), "gateway", action, "--unit-dir", str(self.box.units_dir),
                             "--runtime"], timeout=180).stdout.strip()

    # ---- callers --------------------------------------------------------------

    def user_argv(self, *argv: str, uid: int = UID) -> list[str]:
        return ["setpriv", f"--reuid={uid}", f"--regid={uid}", f"--groups={self.docker_gid}", *argv]

    def user_env(self, uid: int = UID, **extra: str) -> dict[str, str]:
        home = self.home if uid == UID else Path(self.box.run_dir) / f"{PEER}-home"
        return {"HOME": str(home), "DOCKER_HOST": f"unix://{STANDARD}", **extra}

    def as_user(self, *argv: str, check: bool = True, timeout: float = 120, input: str | None = None,
                uid: int = UID, **env: str) -> subprocess.CompletedProcess[str]:
        """A command as gwuser (or gwpeer), whose Docker is the standard socket (the gateway)."""
        return self.box.run(self.user_argv(*argv, uid=uid), check=check, timeout=timeout, input=input,
                            env=self.user_env(uid, **env))

    def docker(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        """The docker CLI as gwuser (uid=PEER_UID: as gwpeer), through the gateway."""
        return self.as_user("docker", *args, **kw)

    def direct(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        """The docker CLI as root on dockerd's own socket, past the gateway."""
        return self.box.run(["docker", "-H", f"unix://{ENGINE}", *args], **kw)

    def popen_user(self, *argv: str, uid: int = UID, **env: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.box.command(self.user_argv(*argv, uid=uid), self.user_env(uid, **env)),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    # ---- the service ------------------------------------------------------------

    def main_pid(self) -> int:
        """The service's main process in the box (started first if no caller has activated it yet)."""
        pid = int(self.box.systemctl_show(SERVICE, "MainPID")["MainPID"])
        if pid == 0:
            self.box.run(["systemctl", "start", SERVICE])
            pid = int(self.box.systemctl_show(SERVICE, "MainPID")["MainPID"])
        return pid

    def host_pid(self) -> int:
        """The gateway's main process as the host sees it (for /proc reads from here)."""
        box_pid, box_ns = str(self.main_pid()), os.readlink(f"/proc/{self.box.pid}/ns/pid")
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if os.readlink(f"/proc/{pid}/ns/pid") != box_ns:
                    continue
                nspid = re.search(r"^NSpid:\s+(.*)$", Path(f"/proc/{pid}/status").read_text(), re.M)
            except OSError:
                continue
            if nspid and nspid.group(1).split()[-1] == box_pid:
                return int(pid)
        raise LookupError(f"the gateway's pid {box_pid} is not seen from the host")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.host_pid()}/fd"))

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.host_pid()}/status").read_text()
        return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))  # type: ignore[union-attr]

    @property
    def socket_from_host(self) -> str:
        """The gateway's socket reached from the host, for raw clients run here."""
        return f"/proc/{self.box.pid}/root{STANDARD}"
