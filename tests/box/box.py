"""The test box: a real systemd (PID 1) and a real Docker engine in private namespaces.

ds01d talks to systemd over D-Bus, to dockerd over its socket and reads cgroup files;
mocks of those would test our beliefs about them, not them.  So tests boot systemd 252
as PID 1 of fresh pid/mount/uts/ipc/net/cgroup namespaces
with only the units a Docker host needs, and run commands inside with `nsenter`.

Isolation from the host (and from other boxes) is what makes this usable on a
developer's machine and in CI:

* cgroups: the box is put into its own cgroup ``ds01-box/<name>`` of every host
  hierarchy and gets a cgroup namespace rooted there, with the hierarchies mounted
  again inside.  The box's systemd therefore sees ``/`` as the root and creates
  ``/ds01.slice/...`` exactly as on a real server, while on the host everything it
  creates stays below ``/sys/fs/cgroup/<hierarchy>/ds01-box/<name>``, which teardown
  removes.
* files: /run, /sys, /var/log/journal are fresh inside; /etc/docker,
  /etc/machine-id and /etc/hostname are box-private bind mounts; containerd (without
  its CRI plugin, which would create /etc/cni) and dockerd keep their state under
  ``/var/lib/ds01-box/<name>``; journald's /dev/log link is switched off.  No mount
  is made in the host's namespace, so nothing can leak there.
* processes: SIGKILL to the box's PID 1 ends every process of its PID namespace,
  container processes and shims included.
"""

from __future__ import annotations

import atexit
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
Info = Mapping[str, Any]  # the pid file: pid, launcher, starttime, pidns, mntns

RUN_ROOT = Path("/run/ds01-box")
STATE_ROOT = Path("/var/lib/ds01-box")
CGROUP_FS = Path("/sys/fs/cgroup")
CGROUP_GROUP = "ds01-box"
SYSTEMD = "/lib/systemd/systemd"
UNIT_SOURCE = Path("/lib/systemd/system")
BOX_PATH = "/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin:/usr/local/bin"
IMAGE = "busybox:local"
BOOT_TIMEOUT = 60.0
TEARDOWN_TIMEOUT = 30.0
TEST_LABEL = "ds01.test=1"

# What a Docker host needs.  -.slice and system.slice are built into systemd 252 and
# have no files on Debian; they are copied when present.
BASE_UNITS = (
    "-.slice", "system.slice", "sysinit.target", "basic.target", "sockets.target",
    "local-fs.target", "network.target", "network-online.target", "multi-user.target", "dbus.service",
    "dbus.socket", "containerd.service", "docker.service", "docker.socket",
    "systemd-journald.service", "systemd-journald.socket",
    "systemd-journald-dev-log.socket",
)
# Units started at boot, besides the extra ones a test passes.
BOOT_WANTS = ("dbus.socket", "dbus.service", "systemd-journald.service", "docker.service")
PACKAGE_UNITS = "/usr/lib/systemd/system"   # where packages put units
ADMIN_UNITS = "/etc/systemd/system"         # where `systemctl enable` links them
REPO_ROOT = Path(__file__).resolve().parents[2]
# Where the box sees this checkout.  A checkout under /root, /home or /tmp is invisible to
# the shipped ds01d.service (ProtectHome=yes, PrivateTmp=yes), and a home directory is
# closed to other users; so the init script binds it, read-only, at a path that every
# service and user in the box can reach, and the unit's hardening stays as shipped.
BOX_CHECKOUT = Path("/run/ds01-checkout")
REQUIRED_TOOLS = ("unshare", "nsenter", "dockerd", "containerd", "mount")

# Moves the shell into the box's init.scope in every hierarchy, then execs the rest:
# processes run inside then belong to the box like any other (journald's _SYSTEMD_UNIT,
# /proc/self/cgroup, teardown) instead of to the caller's cgroup on the host.
JOIN_CGROUPS = ('n=$1; shift; while [ "$n" -gt 0 ]; do { echo $$ > "$1"; } 2>/dev/null;'
                ' shift; n=$((n-1)); done; exec "$@"')

HOOK_SCRIPT = """#!/bin/sh
# Stand-in for the NVIDIA hook: its presence on dockerd's PATH makes Docker register
# the GPU device driver, so --gpus creates real containers with real DeviceRequests.
cat >/dev/null
exit 0
"""


class BoxError(RuntimeError):
    """The box could not do what was asked; the message says what and why."""


class CommandError(BoxError):
    """A command inside the box failed; keeps its output for the test report."""

    def __init__(self, cmd: Sequence[str], returncode: int | None, stdout: str, stderr: str,
                 reason: str = ""):
        self.cmd, self.returncode, self.stdout, self.stderr = list(cmd), returncode, stdout, stderr
        what = reason or f"exited with code {returncode}"
        super().__init__(f"command {shlex.join(self.cmd)!r} in the box {what}\n"
                         f"--- stdout ---\n{stdout}--- stderr ---\n{stderr}")


# ----------------------------------------------------------------------------
# small helpers


def wait_until(predicate: Callable[[], T | None], timeout: float, interval: float = 0.05,
               what: str = "") -> T:
    """Poll until predicate() is truthy: tests must wait on state, never on sleeps."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for "
                               f"{what or getattr(predicate, '__name__', 'a condition')} "
                               f"(last value: {value!r})")
        time.sleep(interval)


def check_name(name: str) -> str:
    """Box names become paths and cgroup names, so keep them tame."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", name):
        raise BoxError(f"invalid box name {name!r}: use 1-32 of a-z, 0-9, '-', '_'")
    return name


def missing_requirements() -> str | None:
    """Why no box can be booted here, or None; lets pytest skip with a reason."""
    if os.geteuid() != 0:
        return "the test box needs root (namespaces, mounts, cgroups)"
    missing = [t for t in REQUIRED_TOOLS if not shutil.which(t, path=BOX_PATH)]
    if not Path(SYSTEMD).exists():
        missing.append(SYSTEMD)
    if not Path("/etc/docker").is_dir():
        missing.append("/etc/docker (docker.io)")
    if not Path("/bin/busybox").exists():
        missing.append("/bin/busybox (busybox-static)")
    if missing:
        return f"the test box needs {', '.join(missing)} (run scripts/install-deps)"
    return None


def docker_cli() -> str:
    """Debian's client matches the 20.10 engine; a newer one on PATH only negotiates."""
    return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, starttime) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], fields[19]


def _ns(pid: int | str, kind: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def _pids() -> Iterator[str]:
    return (p for p in os.listdir("/proc") if p.isdigit())


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ----------------------------------------------------------------------------
# the host's cgroup layout, replicated inside the box


@dataclass(frozen=True)
class Hierarchy:
    """One cgroup mount of the host: where it is and how to mount it again."""

    mountpoint: Path
    fstype: str  # "cgroup" or "cgroup2"
    options: str  # mount options that select the same hierarchy

    def box_dir(self, name: str) -> Path:
        return self.mountpoint / CGROUP_GROUP / name


def host_hierarchies() -> list[Hierarchy]:
    """The cgroup hierarchies mounted under /sys/fs/cgroup, from /proc/self/mountinfo."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, right = line.split(" - ", 1)
        mountpoint = Path(left.split()[4])
        fstype, _source, opts = right.split()[:3]
        if fstype in ("cgroup", "cgroup2") and mountpoint.is_relative_to(CGROUP_FS):
            keep = [o for o in opts.split(",") if o not in ("rw", "ro")
                    and not o.startswith("release_agent=")]
            options = ",".join(keep) if fstype == "cgroup" else ""
            found.append(Hierarchy(mountpoint, fstype, options))
    return found


def layout_version(hierarchies: Sequence[Hierarchy]) -> int:
    """2 on a pure cgroup v2 host, 1 when controllers live in v1 hierarchies (hybrid too)."""
    return 2 if any(h.mountpoint == CGROUP_FS for h in hierarchies) else 1


def _cgroup_links() -> list[tuple[str, str]]:
    """Symlinks such as cpu -> cpu,cpuacct that some distributions keep in /sys/fs/cgroup."""
    if not CGROUP_FS.is_dir():
        return []
    return [(p.name, os.readlink(p)) for p in CGROUP_FS.iterdir() if p.is_symlink()]


# ----------------------------------------------------------------------------
# the box


class Box:
    """A booted box.  Get one with Box.boot(name) or Box.attach(name)."""

    def __init__(self, name: str, info: Info,
                 launcher: subprocess.Popen[bytes] | None = None):
        self.name = check_name(name)
        self.pid = int(info["pid"])  # host PID of the box's systemd
        self._info = dict(info)
        self._launcher = launcher
        self._hierarchies = host_hierarchies()
        self._down = False

    # ---- paths -----------------------------------------------------------

    @staticmethod
    def run_dir_of(name: str) -> Path:
        return RUN_ROOT / name

    @staticmethod
    def state_dir_of(name: str) -> Path:
        return STATE_ROOT / name

    @property
    def run_dir(self) -> Path:
        """Runtime bits (units, pid file, console log); the box sees it at the same path."""
        return self.run_dir_of(self.name)

    @property
    def state_dir(self) -> Path:
        """Docker's data-root lives here and survives boxes, so the image is built once."""
        return self.state_dir_of(self.name)

    @property
    def units_dir(self) -> Path:
        return self.run_dir / "units"

    def tool(self, name: str) -> str:
        """A command of this package (`ds01d`, `ds01-gpu-status`, `ds01`) as the box runs it:
        from the checkout bound at BOX_CHECKOUT, so every service and user can reach it."""
        return str(self.run_dir / "tools" / name)

    @property
    def python(self) -> str:
        """The checkout's venv interpreter, as the box reaches it (with PYTHONPATH=BOX_CHECKOUT)."""
        return str(BOX_CHECKOUT / ".venv" / "bin" / "python")

    # ---- boot ------------------------------------------------------------

    @classmethod
    def boot(cls, name: str, extra_units: Mapping[str, str] | None = None,
             timeout: float = BOOT_TIMEOUT, private_root: bool = False) -> Box:
        """Boot a box and return once systemd is up and Docker answers."""
        reason = missing_requirements()
        if reason:
            raise BoxError(f"cannot boot box {name!r}: {reason}")
        check_name(name)
        cls.destroy(name)  # a stale box of that name from a crashed run
        _Layout(name, dict(extra_units or {}), private_root).write()
        try:
            box = cls._launch(name)
        except BaseException:
            cls.destroy(name)
            raise
        try:
            box._wait_ready(timeout)
            box._ensure_image()
            box._remove_old_containers()
        except BaseException:
            box._fail_boot()
            raise
        return box

    @classmethod
    def _launch(cls, name: str) -> Box:
        run_dir = cls.run_dir_of(name)
        with open(run_dir / "console.log", "wb") as console:
            launcher = subprocess.Popen(
                ["/bin/sh", str(run_dir / "launch.sh")], stdin=subprocess.DEVNULL,
                stdout=console, stderr=subprocess.STDOUT, start_new_session=True)
        pid = wait_until(lambda: _child_of(launcher, run_dir), 10,
                         what=f"box {name!r} PID 1 to fork")
        info = {"name": name, "pid": pid, "launcher": launcher.pid,
                "starttime": (_proc_stat(pid) or ("", ""))[1],
                "pidns": _ns(pid, "pid"), "mntns": _ns(pid, "mnt")}
        (run_dir / "box.json").write_text(json.dumps(info))
        box = cls(name, info, launcher)
        atexit.register(box.shutdown)
        return box

    def _wait_ready(self, timeout: float) -> None:
        """systemd reaches running/degraded and dockerd answers, within one deadline."""
        deadline = time.monotonic() + timeout
        try:
            wait_until(self._booted, timeout, what=f"box {self.name!r} to finish booting")
            left = max(1.0, deadline - time.monotonic())
            wait_until(self._docker_answers, left, what=f"dockerd in box {self.name!r}")
        except TimeoutError as exc:
            raise BoxError(f"{exc}\n{self.diagnostics()}") from None

    def _booted(self) -> bool:
        if not self.is_running():
            raise BoxError(f"box {self.name!r} died while booting\n{self.diagnostics()}")
        state = self.run(["systemctl", "is-system-running"], check=False, timeout=10).stdout
        return state.strip() in ("running", "degraded")

    def _docker_answers(self) -> bool:
        return self.docker("version", "--format", "{{.Server.Version}}",
                           check=False, timeout=10).returncode == 0

    def _fail_boot(self) -> None:
        try:
            self.shutdown()
        except Exception:  # the boot error is the one to report
            pass

    def _ensure_image(self) -> None:
        """Import busybox:local unless the persistent data-root already has it."""
        if self.docker("image", "inspect", IMAGE, check=False).returncode == 0:
            return
        tar = self.state_dir / "busybox.tar"
        _write_busybox_tar(tar)
        try:
            self.docker("import", "--change", 'CMD ["sh"]', str(tar), IMAGE, timeout=120)
        finally:
            tar.unlink(missing_ok=True)

    def _remove_old_containers(self) -> None:
        """Containers of an earlier box of this name would confuse the daemon under test."""
        ids = self.docker("ps", "-aq").stdout.split()
        if ids:
            self.docker("rm", "-f", *ids, timeout=120)

    # ---- attach / detach -------------------------------------------------

    @classmethod
    def attach(cls, name: str) -> Box:
        """A handle on a box started elsewhere (python -m tests.box up); not shut down at exit."""
        info = _read_info(check_name(name))
        if info is None or not _alive(info):
            raise BoxError(f"box {name!r} is not running")
        return cls(name, info)

    def detach(self) -> None:
        """Leave the box running after this process exits."""
        atexit.unregister(self.shutdown)
        self._launcher = None

    def is_running(self) -> bool:
        return not self._down and _alive(self._info)

    # ---- commands inside -------------------------------------------------

    def command(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
                cwd: str | None = None) -> list[str]:
        """argv that runs a command inside the box, in its init.scope cgroup."""
        procs = [str(h.box_dir(self.name) / "init.scope" / "cgroup.procs")
                 for h in self._hierarchies]
        nsenter = [shutil.which("nsenter", path=BOX_PATH) or "nsenter", "-t", str(self.pid),
                   "-a", f"--wd={cwd or '/'}"]
        environ = [f"{k}={v}" for k, v in box_env(env).items()]
        return ["/bin/sh", "-c", JOIN_CGROUPS, "sh", str(len(procs)), *procs,
                *nsenter, "env", "-i", *environ, *argv]

    def run(self, cmd: Sequence[str] | str, *, check: bool = True, timeout: float = 60,
            input: str | None = None, env: Mapping[str, str] | None = None,
            cwd: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command in the box (a str goes through sh -c); text in, text out."""
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else [str(a) for a in cmd]
        try:
            proc = subprocess.run(self.command(argv, env, cwd), input=input, text=True,
                                  capture_output=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL if input is None else None)
        except subprocess.TimeoutExpired as exc:
            raise CommandError(argv, None, _text(exc.stdout), _text(exc.stderr),
                               f"timed out after {timeout:g} s") from None
        if check and proc.returncode != 0:
            raise CommandError(argv, proc.returncode, proc.stdout, proc.stderr)
        return subprocess.CompletedProcess(argv, proc.returncode, proc.stdout, proc.stderr)

    def docker(self, *args: str, check: bool = True, timeout: float = 60,
               input: str | None = None) -> subprocess.CompletedProcess[str]:
        """The Docker CLI inside the box."""
        return self.run([docker_cli(), *args], check=check, timeout=timeout, input=input)

    def systemctl_show(self, unit: str, *props: str) -> dict[str, str]:
        """`systemctl show` as a dict; all properties when none are named."""
        argv = ["systemctl", "show", unit, *(f"--property={p}" for p in props)]
        lines = self.run(argv).stdout.splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)

    def journal(self, *matches: str, unit: str | None = None,
                since_cursor: str | None = None) -> list[dict]:
        """Journal entries inside the box (journalctl -o json), oldest first."""
        argv = ["journalctl", "--no-pager", "-o", "json"]
        if unit:
            argv += ["--unit", unit]
        if since_cursor:
            # Not --after-cursor: with matches, journalctl 252 also skips the first
            # matching entry when the cursor's own entry does not match.
            argv += ["--cursor", since_cursor]
        out = self.run([*argv, *matches]).stdout  # no match is rc 0 and no output
        entries = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        return [e for e in entries if e.get("__CURSOR") != since_cursor]

    def journal_cursor(self) -> str:
        """Cursor of the newest entry, to read only what a test causes afterwards."""
        out = self.run(["journalctl", "--no-pager", "-n", "1", "-o", "json"]).stdout
        return json.loads(out.splitlines()[-1])["__CURSOR"]

    def add_user(self, name: str, uid: int, home: str = "/nonexistent") -> None:
        """A login user (and its own group) that exists only inside the box; idempotent.
        (Not for a private-root box, whose /etc is its own: use useradd there.)

        The files are appended to in place, so the bind mounts inside see the change.
        """
        passwd, group = self.run_dir / "passwd", self.run_dir / "group"
        known = {f[0]: f[2] for f in (line.split(":") for line in passwd.read_text().splitlines()) if len(f) > 2}
        if name in known:
            if known[name] != str(uid):   # tests share the session box: one name, one uid
                raise BoxError(f"{name} is already uid {known[name]} in this box, not {uid}")
            return
        if str(uid) in known.values():
            raise BoxError(f"uid {uid} already belongs to another user in this box")
        with open(passwd, "a") as f:
            f.write(f"{name}:x:{uid}:{uid}::{home}:/bin/sh\n")
        with open(group, "a") as f:
            f.write(f"{name}:x:{uid}:\n")

    def add_to_group(self, user: str, group: str) -> None:
        """Make a box user a member of a box group (rewritten in place, as in add_user); idempotent."""
        path = self.run_dir / "group"
        lines = []
        for line in path.read_text().splitlines():
            fields = line.split(":")
            if len(fields) == 4 and fields[0] == group:
                members = [m for m in fields[3].split(",") if m]
                fields[3] = ",".join(members + ([user] if user not in members else []))
            lines.append(":".join(fields))
        with open(path, "r+") as f:
            f.write("\n".join(lines) + "\n")
            f.truncate()

    def run_as(self, uid: int, cmd: Sequence[str], *, check: bool = True, timeout: float = 60
               ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the box as an unprivileged user (no supplementary groups)."""
        return self.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *cmd],
                        check=check, timeout=timeout)

    def install_unit(self, name: str, text: str) -> None:
        """Add or replace a unit file or drop-in ("x.service.d/y.conf") and daemon-reload."""
        path = self.units_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        self.run(["systemctl", "daemon-reload"])

    # ---- cgroups -----------------------------------------------------------

    def cgroup_version(self) -> int:
        """2 on a pure v2 host; 1 when controllers are v1 (hybrid included)."""
        return layout_version(self._hierarchies)

    def cgroup_path(self, unit: str) -> str:
        """The unit's cgroup as the box sees it, e.g. /ds01.slice/ds01-students.slice."""
        return self.systemctl_show(unit, "ControlGroup")["ControlGroup"]

    def cgroup_file(self, controller: str | None, relpath: str, filename: str) -> str:
        """Path of a cgroup file as the box sees it (v1: per controller; v2: unified)."""
        if self.cgroup_version() == 2:
            base = CGROUP_FS
        elif controller:
            base = CGROUP_FS / controller
        elif any(h.mountpoint == CGROUP_FS / "unified" for h in self._hierarchies):
            base = CGROUP_FS / "unified"
        else:
            raise BoxError("controller needed on a cgroup v1 host without a unified hierarchy")
        return str(base / relpath.lstrip("/") / filename)

    def read_cgroup(self, controller: str | None, relpath: str, filename: str) -> str:
        """Read a cgroup file inside the box, so PIDs in cgroup.procs are the box's PIDs."""
        return self.run(["cat", self.cgroup_file(controller, relpath, filename)]).stdout

    # ---- waiting -----------------------------------------------------------

    def wait_until(self, predicate: Callable[[], T | None], timeout: float, interval: float = 0.05,
                   what: str = "") -> T:
        """Poll with a deadline; see the module-level wait_until."""
        return wait_until(predicate, timeout, interval, what)

    # ---- teardown ----------------------------------------------------------

    def shutdown(self) -> None:
        """Kill the box and remove every trace of it on the host; safe to call twice."""
        if self._down:
            return
        atexit.unregister(self.shutdown)
        current = _read_info(self.name)
        if current is not None and current.get("pid") != self.pid:
            self._down = True  # a later boot of this name already killed ours; spare it
            return
        _teardown(self.name, self._info, self._launcher)
        self._down = True
        left = self.leftovers()
        if left:
            raise BoxError(f"box {self.name!r} left traces behind: {'; '.join(left)}")

    @classmethod
    def destroy(cls, name: str) -> None:
        """Tear down whatever a box of this name left, running or crashed."""
        _teardown(check_name(name), _read_info(name) or {}, None)

    def leftovers(self) -> list[str]:
        """What of this box still exists on the host (empty after a clean shutdown)."""
        return find_leftovers(self.name, self._info)

    def diagnostics(self, lines: int = 40) -> str:
        """What went on in the box: for error messages when it does not come up."""
        parts = [f"--- console of box {self.name!r} ---",
                 _tail(self.run_dir / "console.log", lines)]
        if self.is_running():
            for argv in (["systemctl", "--failed", "--no-pager"],
                         ["systemctl", "list-jobs", "--no-pager"],
                         ["journalctl", "--no-pager", "-n", str(lines)]):
                try:
                    res = self.run(argv, check=False, timeout=10)
                    parts += [f"--- {shlex.join(argv)} ---", res.stdout + res.stderr]
                except CommandError as exc:
                    parts.append(str(exc))
        return "\n".join(parts)

    def __repr__(self) -> str:
        return f"Box({self.name!r}, pid={self.pid})"


# ----------------------------------------------------------------------------
# environment inside


def box_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A clean environment: the caller's (DOCKER_HOST, VIRTUAL_ENV...) must not leak in."""
    env = {"PATH": BOX_PATH, "HOME": "/root", "LANG": "C.UTF-8", "SYSTEMD_PAGER": "",
           "SYSTEMD_COLORS": "0", "TERM": os.environ.get("TERM", "dumb")}
    env.update(extra or {})
    return env


def _text(data: str | bytes | None) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(none)"


def console_scripts() -> dict[str, str]:
    """`[project.scripts]` of pyproject.toml: command name -> "module:function"."""
    import tomllib  # 3.11+, like the box itself; the pure tests under 3.10 never boot one

    with open(REPO_ROOT / "pyproject.toml", "rb") as f:
        return dict(tomllib.load(f)["project"]["scripts"])


def _tool_script(target: str) -> str:
    """A console script like pip's, but run from the checkout as the box sees it."""
    module, function = target.split(":")
    return (f"#!{BOX_CHECKOUT}/.venv/bin/python\n"
            "import sys\n"
            f"sys.path.insert(0, {str(BOX_CHECKOUT)!r})\n"
            f"from {module} import {function}\n"
            f"sys.exit({function}())\n")


# ----------------------------------------------------------------------------
# the files a box is booted from


class _Layout:
    """Writes the runtime dir: units, drop-ins, daemon.json, the hook, the init scripts."""

    def __init__(self, name: str, extra_units: dict[str, str], private_root: bool = False):
        self.name = name
        self.extra_units = extra_units
        self.private_root = private_root
        self.run = Box.run_dir_of(name)
        self.state = Box.state_dir_of(name)
        self.hierarchies = host_hierarchies()

    def write(self) -> None:
        for d in ("units", "bin", "tools", "etc-docker"):
            (self.run / d).mkdir(parents=True, exist_ok=True)
        for d in ("docker", "newrun"):
            (self.state / d).mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.state / "containerd", ignore_errors=True)
        self._units()
        self._files()
        self._cgroups()

    def _units(self) -> None:
        units = self.run / "units"
        for unit in BASE_UNITS:
            if (UNIT_SOURCE / unit).exists():
                shutil.copy(UNIT_SOURCE / unit, units / unit)
        wants = [*BOOT_WANTS, *(u for u in self.extra_units if "/" not in u and "@." not in u)]
        target = ("[Unit]\nDescription=ds01 test box\n"
                  f"Wants={' '.join(wants)}\nAfter={' '.join(BOOT_WANTS)}\n")
        files = {"test.target": target, **self._dropins(), **self.extra_units}
        for unit, text in files.items():
            (units / unit).parent.mkdir(parents=True, exist_ok=True)
            (units / unit).write_text(text)

    def _dropins(self) -> dict[str, str]:
        """Keep the box's services off host paths and give dockerd the GPU hook."""
        path = f"{self.run / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        return {
            "docker.service.d/ds01-box.conf": f"[Service]\nEnvironment=PATH={path}\n",
            "containerd.service.d/ds01-box.conf":
                "[Service]\nExecStartPre=\nExecStart=\n"
                f"ExecStart=/usr/bin/containerd --config {self.run / 'containerd.toml'}\n",
            # Symlinks=/dev/log would create /dev/log in the host's devtmpfs.
            "systemd-journald-dev-log.socket.d/ds01-box.conf": "[Socket]\nSymlinks=\n",
        }

    def _files(self) -> None:
        daemon = {"exec-opts": ["native.cgroupdriver=systemd"],
                  "data-root": str(self.state / "docker")}
        (self.run / "etc-docker" / "daemon.json").write_text(json.dumps(daemon, indent=2) + "\n")
        hook = self.run / "bin" / "nvidia-container-runtime-hook"
        hook.write_text(HOOK_SCRIPT)
        hook.chmod(0o755)
        (self.run / "machine-id").write_text(uuid.uuid4().hex + "\n")
        (self.run / "hostname").write_text(f"ds01-box-{self.name}\n")
        # Box-private user database: tests add users (Box.add_user) without touching the host's /etc.
        shutil.copy("/etc/passwd", self.run / "passwd")
        shutil.copy("/etc/group", self.run / "group")
        (self.run / "containerd.toml").write_text(self._containerd_toml())
        for name, target in console_scripts().items():
            tool = self.run / "tools" / name
            tool.write_text(_tool_script(target))
            tool.chmod(0o755)
        (self.run / "init.sh").write_text(self._init_script())
        (self.run / "launch.sh").write_text(self._launch_script())

    def _containerd_toml(self) -> str:
        """Own root; no CRI plugin (it would create /etc/cni on the host)."""
        root = self.state / "containerd"
        return ("version = 2\n"
                f'root = "{root}"\nstate = "/run/containerd"\n'
                'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                '[plugins."io.containerd.internal.v1.opt"]\n'
                f'  path = "{root}/opt"\n')

    def _cgroups(self) -> None:
        """Create ds01-box/<name>/init.scope in every hierarchy, ready to take tasks."""
        for h in self.hierarchies:
            group = h.mountpoint / CGROUP_GROUP
            for d in (group, group / self.name, group / self.name / "init.scope"):
                d.mkdir(exist_ok=True)
                _init_cpuset(d)
            if h.fstype == "cgroup2":
                _delegate_controllers(h.mountpoint)
                _delegate_controllers(group)

    def _launch_script(self) -> str:
        """Runs on the host: make ds01-box/<name> the box's cgroup root, then the namespaces.

        The cgroup namespace is created while in ds01-box/<name>, so that is the box's
        "/"; then the launcher moves down into init.scope before creating the rest, so
        the root holds no process (cgroup v2 refuses controllers to a cgroup with
        processes, and systemd enables them on its root).
        """
        def procs(sub: str) -> str:
            return " ".join(shlex.quote(str(h.box_dir(self.name) / sub / "cgroup.procs"))
                            for h in self.hierarchies)
        q = shlex.quote
        stage2 = (f'for f in {procs("init.scope")}; do echo $$ > "$f"; done; '
                  "exec unshare --pid --fork --mount --mount-proc --uts --ipc --net"
                  f" --propagation private /bin/sh -e {q(str(self.run / 'init.sh'))}")
        return ("set -e\n"
                f'for f in {procs(".")}; do echo $$ > "$f"; done\n'
                f"exec unshare --cgroup /bin/sh -e -c {q(stage2)}\n")

    def _init_script(self) -> str:
        """Runs as PID 1 of the box before systemd: private mounts only the box sees."""
        run, state, q = self.run, self.state, shlex.quote
        newrun = state / "newrun"
        lines = [
            "set -e",
            *(self._private_root() if self.private_root else []),
            f"echo ds01-box-{self.name} > /proc/sys/kernel/hostname",
            self._bind_if_there(run / "hostname", "/etc/hostname"),
            "mount -n -t sysfs -o nosuid,nodev,noexec sysfs /sys",
            *self._cgroup_mounts(),
            self._bind_if_there(run / "machine-id", "/etc/machine-id"),
            # A private root has its own /etc already, where a package's postinst must be able to
            # add its system users (systemd-sysusers renames over /etc/group: not a bind mount).
            *([] if self.private_root else [self._bind_if_there(run / "passwd", "/etc/passwd"),
                                            self._bind_if_there(run / "group", "/etc/group")]),
            f"mount -n --bind {q(str(run / 'etc-docker'))} /etc/docker",
            "if [ -d /var/log/journal ]; then"
            " mount -n -t tmpfs -o mode=2755 tmpfs /var/log/journal; fi",
            f"mount -n -t tmpfs -o mode=755,nosuid,nodev tmpfs {q(str(newrun))}",
            f"mkdir -p {q(str(newrun / 'ds01-box' / self.name))} {q(str(newrun / BOX_CHECKOUT.name))}",
            f"mount -n --bind {q(str(REPO_ROOT))} {q(str(newrun / BOX_CHECKOUT.name))}",
            f"mount -n -o remount,bind,ro {q(str(newrun / BOX_CHECKOUT.name))}",
            f"mount -n --bind {q(str(run))} {q(str(newrun / 'ds01-box' / self.name))}",
            f"mount -n --move {q(str(newrun))} /run",
            f"exec env -i container=ds01-box SYSTEMD_UNIT_PATH={q(self._unit_path())}"
            f" {SYSTEMD} --system --unit=test.target --show-status=false",
        ]
        return "\n".join(lines) + "\n"

    def _unit_path(self) -> str:
        """Only the box's units; a private-root box also sees /etc/systemd/system and
        /usr/lib/systemd/system, which it starts empty (see _private_root), so that a unit a
        package installs and enables inside the box is found, and nothing of the host's."""
        units = str(self.run / "units")
        return f"{units}:{ADMIN_UNITS}:{PACKAGE_UNITS}" if self.private_root else units

    def _private_root(self) -> list[str]:
        """An overlay over the host's / whose writes stay in the box (a package installed
        with apt inside lands there), with the paths tests share with the host bound in.

        The upper layer is on a tmpfs, a file system of its own, because overlayfs
        refuses an upper directory inside its lower one; Docker's data-root stays on the
        real disk (overlay2 cannot stack on overlayfs) through the bound state directory.
        """
        q = shlex.quote
        priv = q(str(self.state / "private-root"))
        new = f"{priv}/root"
        # Never /tmp or another host directory a boot-time service could clean: only these.
        shared = ["/dev", str(REPO_ROOT), str(self.run), str(self.state)]
        lines = [f"mkdir -p {priv}",
                 f"mount -n -t tmpfs -o mode=755 tmpfs {priv}",
                 f"mkdir -p {priv}/upper {priv}/work {new}",
                 f"mount -n -t overlay overlay -o lowerdir=/,upperdir={priv}/upper,workdir={priv}/work {new}"]
        for path in dict.fromkeys(shared):
            lines += [f"if [ -d {q(path)} ]; then mkdir -p {new}{q(path)}; "
                      f"mount -n --rbind {q(path)} {new}{q(path)}; fi"]
        lines += [f"mkdir -p {new}/.old-root", f"cd {new}", "pivot_root . .old-root", "cd /",
                  "mount -n -t proc proc /proc", "umount -n -l /.old-root", "rmdir /.old-root",
                  # The host's units stay out (their .wants would start host services in the box,
                  # systemd-tmpfiles cleaning shared directories among them); what a package
                  # installs or enables inside the box is all systemd finds there.
                  f"mount -n -t tmpfs -o mode=755 tmpfs {PACKAGE_UNITS}",
                  f"mount -n -t tmpfs -o mode=755 tmpfs {ADMIN_UNITS}"]
        return lines

    @staticmethod
    def _bind_if_there(source: Path, target: str) -> str:
        """A box-private copy over a host file, so systemd's writes never reach the host."""
        return f"if [ -e {target} ]; then mount -n --bind {shlex.quote(str(source))} {target}; fi"

    def _cgroup_mounts(self) -> list[str]:
        """The host's hierarchies again, now rooted at the box's cgroup namespace."""
        if layout_version(self.hierarchies) == 2:
            return ["mount -n -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup"]
        lines = ["mount -n -t tmpfs -o mode=755,nosuid,nodev,noexec tmpfs /sys/fs/cgroup"]
        for h in self.hierarchies:
            opts = ",".join(o for o in ("nosuid,nodev,noexec", h.options) if o)
            lines += [f"mkdir -p {h.mountpoint}",
                      f"mount -n -t {h.fstype} -o {opts} {h.fstype} {h.mountpoint}"]
        lines += [f"ln -s {shlex.quote(target)} {CGROUP_FS / link}"
                  for link, target in _cgroup_links()]
        return lines


def _init_cpuset(group: Path) -> None:
    """A new v1 cpuset group has no CPUs and refuses tasks until given its parent's."""
    for name in ("cpuset.cpus", "cpuset.mems"):
        own, parent = group / name, group.parent / name
        if own.exists() and parent.exists() and not own.read_text().strip() \
                and not (group / "cgroup.controllers").exists():
            own.write_text(parent.read_text())


def _delegate_controllers(parent: Path) -> None:
    """cgroup v2: hand the parent's controllers down so the box's systemd can use them."""
    for controller in (parent / "cgroup.controllers").read_text().split():
        try:
            (parent / "cgroup.subtree_control").write_text(f"+{controller}")
        except OSError:
            pass  # not every controller can be delegated; the box does without that one


def _write_busybox_tar(path: Path) -> None:
    """A one-binary image: static busybox plus a link per applet."""
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    with tarfile.open(path, "w") as tar:
        _tar_dir(tar, "bin", 0o755)
        _tar_dir(tar, "tmp", 0o1777)
        _tar_dir(tar, "etc", 0o755)
        tar.add("/bin/busybox", "bin/busybox")
        for applet in applets:
            if applet != "busybox":
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(info)
        _tar_file(tar, "etc/passwd",
                  "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        _tar_file(tar, "etc/group", "root:x:0:\nnogroup:x:65534:\n")


def _tar_dir(tar: tarfile.TarFile, name: str, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    tar.addfile(info)


def _tar_file(tar: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


# ----------------------------------------------------------------------------
# finding and removing a box's processes, cgroups and files


def _child_of(launcher: subprocess.Popen[bytes], run_dir: Path) -> int | None:
    """The host PID of the box's PID 1: unshare's only child."""
    if launcher.poll() is not None:
        raise BoxError(f"the box launcher exited with code {launcher.returncode} before PID 1 "
                       f"started: {_tail(run_dir / 'console.log', 5)}")
    try:
        kids = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
    except FileNotFoundError:
        return None
    if kids and _ns(kids[0], "pid") != _ns(launcher.pid, "pid"):
        return int(kids[0])
    return None


def _read_info(name: str) -> dict | None:
    try:
        return json.loads((Box.run_dir_of(name) / "box.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _alive(info: Info) -> bool:
    """Is the PID 1 recorded in info still that process (not a reused PID, not a zombie)?"""
    if "pid" not in info:
        return False
    stat = _proc_stat(int(info["pid"]))
    return stat is not None and stat[0] != "Z" and stat[1] == info.get("starttime")


def _box_cgroup_dirs(name: str) -> list[Path]:
    return [h.box_dir(name) for h in host_hierarchies() if h.box_dir(name).is_dir()]


def _cgroup_pids(name: str) -> set[int]:
    """Every live task in the box's cgroup subtrees: its processes, containers included."""
    pids: set[int] = set()
    for top in _box_cgroup_dirs(name):
        for root, _dirs, _files in os.walk(top):
            try:
                pids.update(int(p) for p in Path(root, "cgroup.procs").read_text().split())
            except OSError:
                pass
    return {p for p in pids if (_proc_stat(p) or ("Z",))[0] != "Z"}


def _ns_pids(info: Info) -> set[int]:
    """Processes still in the box's PID or mount namespace."""
    wanted = {info.get("pidns"), info.get("mntns")} - {None}
    if not wanted:
        return set()
    return {int(p) for p in _pids()
            if _ns(p, "pid") in wanted or _ns(p, "mnt") in wanted}


def _teardown(name: str, info: Info, launcher: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL PID 1 (SIGTERM would mean re-exec), wait for all to go, remove the cgroups."""
    if _alive(info):
        _kill(int(info["pid"]))
    wait_until(lambda: _reap(name, info, launcher), TEARDOWN_TIMEOUT, 0.02,
               what=f"the processes of box {name!r} to end")
    for top in _box_cgroup_dirs(name):
        wait_until(lambda: _rmtree_cgroup(top), TEARDOWN_TIMEOUT, 0.02,
                   what=f"cgroup {top} to be removable")
    for h in host_hierarchies():
        try:
            (h.mountpoint / CGROUP_GROUP).rmdir()
        except OSError:
            pass  # another box still uses it
    shutil.rmtree(Box.run_dir_of(name), ignore_errors=True)
    shutil.rmtree(Box.state_dir_of(name) / "containerd", ignore_errors=True)


def _reap(name: str, info: Info, launcher: subprocess.Popen[bytes] | None) -> bool:
    """One round of ending the box: kill stragglers, reap our child; True once all are gone.

    The launcher (unshare, on the host) is left to exit by itself once PID 1 is gone:
    killed first, it would orphan PID 1's zombie to the host's init, which may reap late.
    """
    if launcher is not None:
        launcher.poll()
    left = (_cgroup_pids(name) | _ns_pids(info)) - {os.getpid()}
    for pid in left - {info.get("launcher")}:
        _kill(pid)
    return not left and (launcher is None or launcher.returncode is not None)


def _rmtree_cgroup(top: Path) -> bool:
    """Remove a cgroup subtree bottom-up (rmdir only: cgroupfs files cannot be unlinked)."""
    for root, _dirs, _files in os.walk(top, topdown=False):
        try:
            os.rmdir(root)
        except FileNotFoundError:
            pass
        except OSError:
            return False
    return True


def find_leftovers(name: str, info: Info) -> list[str]:
    """Processes, cgroups, mounts and runtime files of a box that still exist on the host."""
    found = []
    pids = _cgroup_pids(name) | _ns_pids(info)
    if pids:
        found.append(f"processes {sorted(pids)}")
    found += [f"cgroup {d}" for d in _box_cgroup_dirs(name)]
    markers = (str(Box.run_dir_of(name)), str(Box.state_dir_of(name)))
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if any(m in line for m in markers):
            found.append(f"mount {line.split()[4]}")
    if Box.run_dir_of(name).exists():
        found.append(f"directory {Box.run_dir_of(name)}")
    return found


# ----------------------------------------------------------------------------
# containers a test creates


class ContainerTracker:
    """Hands out container names and removes those containers after the test."""

    def __init__(self, box: Box):
        self.box = box
        self.names: list[str] = []

    def __call__(self, name: str) -> str:
        """Track a container name (returned unchanged) for removal after the test."""
        self.names.append(name)
        return name

    def unique(self, stem: str = "t") -> str:
        """A fresh tracked name, for tests that do not care what it is."""
        return self(f"{stem}-{uuid.uuid4().hex[:8]}")

    def track(self, ref: str) -> str:
        self.names.append(ref)
        return ref

    def cleanup(self) -> None:
        """Remove tracked containers and any labelled ds01.test=1."""
        labelled = self.box.docker("ps", "-aq", "--filter", f"label={TEST_LABEL}").stdout.split()
        refs = [*self.names, *labelled]
        if refs:
            self.box.docker("rm", "-f", *refs, check=False, timeout=120)
        self.names.clear()
