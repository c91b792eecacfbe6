"""`ds01d doctor`: what a real host needs for ds01d, each failure with its fix.

Every check is independent and says what it found; the exit code is 0 only when
all pass, so the command can gate a deployment.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from typing import Callable

from ds01d.config import Config, ConfigError
from ds01d.host.engine_socket import ENGINE_SOCKET, STANDARD_SOCKET, engine_url

FIX_DRIVER = ('add "exec-opts": ["native.cgroupdriver=systemd"] to /etc/docker/daemon.json, then '
              "`systemctl restart docker`")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    found: str
    fix: str = ""


def check_config(path: str) -> tuple[Check, Config | None]:
    from ds01d.daemon.reload import load_checked_config
    try:
        config = load_checked_config(path, dt.datetime.now(dt.timezone.utc).date())
    except ConfigError as exc:
        problems = "; ".join(str(p) for p in exc.problems[:3])
        return Check("config", False, problems, f"edit {path}; `ds01d check-config {path}` lists every problem"), None
    return Check("config", True, f"{path} is valid ({len(config.groups)} groups, "
                                 f"{len(config.overrides)} user overrides)"), config


def check_docker() -> tuple[Check, list[dict]]:
    from ds01d.host.docker_engine import CONNECTION_ERRORS, DockerAdapter
    try:
        docker = DockerAdapter(timeout=10)
        info = docker.api.info()
        containers = [docker.inspect(cid) for cid in docker.container_ids()]
        docker.close()
    except CONNECTION_ERRORS as exc:
        return Check("docker", False, f"not reachable: {exc}", "start it: `systemctl start docker`"), []
    driver = info.get("CgroupDriver", "?")
    found = f"Docker {info.get('ServerVersion', '?')}, cgroup driver {driver}"
    if driver != "systemd":
        return Check("docker", False, found + "; containers started with --cgroup-parent "
                     "ds01-<group>-<user>.slice would not land in the user's slice", FIX_DRIVER), []
    return Check("docker", True, found), [c for c in containers if c]


def _containers_if(check: Check, containers: list[dict]) -> list[dict] | None:
    return containers if check.ok else None


def check_cgroups() -> Check:
    from ds01d.host.slices import CgroupMode, detect_cgroup_mode
    if detect_cgroup_mode() is CgroupMode.V2:
        return Check("cgroups", True, "cgroup v2: CPUQuota, MemoryMax, MemoryHigh and TasksMax are all enforced")
    return Check("cgroups", True, "cgroup v1 (hybrid or legacy): CPUQuota, MemoryLimit and TasksMax are enforced; "
                                  "MemoryHigh is not (boot with systemd.unified_cgroup_hierarchy=1 for it)")


def check_systemd() -> Check:
    from ds01d.host.slices import SystemdSlices
    try:
        SystemdSlices().close()
    except OSError as exc:
        return Check("systemd", False, f"system bus not reachable: {exc}", "run ds01d on a systemd host, as root")
    return Check("systemd", True, "the system manager answers on D-Bus")


def check_nvml() -> list[Check]:
    from ds01d.host.nvml import Nvml, NvmlUnavailable
    try:
        nvml = Nvml.open()
        inventory = nvml.inventory()
    except NvmlUnavailable as exc:
        return [Check("nvml", False, f"{exc}; ds01d would run CPU-only",
                      "install NVIDIA's driver (libnvidia-ml) and the binding: apt-get install "
                      "./python3-nvidia-ml-py_*_all.deb (built by scripts/build-deb)")]
    checks = [Check("nvml", True, f"driver {inventory.driver}, {len(inventory.gpu_indexes)} GPUs")]
    for gpu_uuid, index in sorted(inventory.gpu_indexes.items(), key=lambda kv: kv[1]):
        units = [u for u in inventory.units if u.gpu_uuid == gpu_uuid]
        checks.append(_gpu_check(nvml, index, units))
    for where, error in nvml.errors.items():
        checks.append(Check(f"gpu {where}", False, f"NVML error: {error}", "see `nvidia-smi`; the GPU may need a reset"))
    nvml.close()
    return checks


def _gpu_check(nvml: object, index: int, units: list) -> Check:
    if not units:
        return Check(f"gpu {index}", False, "MIG mode is on but no MIG instances exist: nothing can run on it",
                     f"create instances (`nvidia-smi mig -i {index} -cgi ... -C`) or turn MIG off")
    if not units[0].is_mig:
        return Check(f"gpu {index}", True, f"{units[0].name}, whole GPU: activity from utilization")
    handles = getattr(nvml, "handles", {})
    why_not = next((handles[u.uuid].no_gpm for u in units if u.uuid in handles and handles[u.uuid].no_gpm), None)
    profiles = ", ".join(u.profile for u in units)
    if why_not is None:
        return Check(f"gpu {index}", True, f"MIG ({profiles}): activity per instance from GPM")
    return Check(f"gpu {index}", False, f"MIG ({profiles}) without GPM ({why_not}): activity per instance cannot be "
                 "measured, so no one on it is ever stopped for idleness",
                 "expected on A100-class GPUs; accept it, or use whole GPUs there (MIG off) for idle enforcement")


def check_slices(containers: list[dict] | None, config: Config | None) -> Check:
    """Every owner of a running container has an active slice: ds01d is doing its job."""
    if config is None:
        return Check("slices", False, "not checked: the config is not valid", "fix the config first")
    if containers is None:
        return Check("slices", False, "not checked: Docker is not usable", "see the docker check")
    from ds01d.rules.container_facts import build_record
    from ds01d.host.slices import SliceError, SystemdSlices
    today = dt.datetime.now(dt.timezone.utc).date()
    wanted = sorted({rec.slice for rec, _ in (build_record(c, config, today, {}) for c in containers)
                     if rec.slice and rec.status == "running"})
    try:
        slices = SystemdSlices()
        missing = [s for s in wanted if not slices.is_active(s)]
        slices.close()
    except (OSError, SliceError) as exc:
        return Check("slices", False, f"could not ask systemd: {exc}", "see the systemd check")
    if missing:
        return Check("slices", False, f"no active slice for {', '.join(missing)}",
                     "is ds01d running? `systemctl status ds01d`; it creates them as containers appear")
    return Check("slices", True, f"{len(wanted)} user slices active for the owners of running containers")


DOCKER_CONFIG = "/etc/docker/daemon.json"


def check_gateway(engine: str = ENGINE_SOCKET, standard: str = STANDARD_SOCKET,
                  docker_config: str = DOCKER_CONFIG) -> Check:
    """Can a container be made without passing the gateway?  Where dockerd's own socket is
    open to anyone but root, or dockerd listens anywhere else, or the gateway is not in
    front at all, yes: and then the door's rules bind nobody who knows it."""
    if engine_url({}, engine) is None:
        return Check("gateway", False, f"not enabled: {standard} is dockerd's own, so every member of group docker "
                     "makes containers outside ds01d's rules (any slice, any owner label, any GPU)",
                     "`ds01d gateway enable` (restarts Docker once)")
    loose = [f"{path} is mode {mode:o} owned by uid {uid}" for path, mode, uid in _modes(engine, os.path.dirname(engine))
             if uid != 0 or mode & 0o077]
    if loose:
        return Check("gateway", False, f"dockerd's own socket is reachable past the gateway: {'; '.join(loose)}",
                     f"chown root:root and chmod 0700 {os.path.dirname(engine)}, 0600 {engine} "
                     "(`ds01d gateway enable` installs a docker.socket drop-in that does so)")
    others = _other_listeners(docker_config)
    if others:
        return Check("gateway", False, f"dockerd also listens on {', '.join(others)}, past the gateway",
                     f"remove them from \"hosts\" in {docker_config} (and -H from dockerd's command line)")
    return Check("gateway", True, f"{standard} is the gateway; dockerd is on {engine}, root only")


def _modes(*paths: str) -> list[tuple[str, int, int]]:
    out = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        out.append((path, st.st_mode & 0o7777, st.st_uid))
    return out


def _other_listeners(docker_config: str) -> list[str]:
    """dockerd's listeners besides systemd's socket: daemon.json's hosts, and -H on its command line."""
    import json
    try:
        with open(docker_config, encoding="utf-8") as f:
            hosts = json.load(f).get("hosts") or []
    except (OSError, ValueError, AttributeError):
        hosts = []
    found = [h for h in hosts if isinstance(h, str) and h != "fd://"]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if os.path.basename(argv[0]) != "dockerd":
            continue
        for i, arg in enumerate(argv):
            value = argv[i + 1] if arg in ("-H", "--host") and i + 1 < len(argv) else \
                arg.split("=", 1)[1] if arg.startswith(("-H=", "--host=")) else None
            if value and value != "fd://":
                found.append(value)
    return sorted(set(found))


def check_setuid_binds(config: Config | None, docker_group: str = "docker") -> Check:
    """A container's root can leave a setuid-root program in any folder it binds writable
    (`chown 0 f; chmod 4755 f`, or `docker cp` of such a file): on a filesystem mounted
    without `nosuid`, the folder's owner then runs it on the host, as root.  The gateway
    cannot prevent it per container; the mount option does, for every container at once."""
    if config is None:
        return Check("setuid", False, "not checked: the config is not valid", "fix the config first")
    paths = sorted(_writable_bind_places(config, docker_group))
    exposed = sorted({_mount_point(p) for p in paths if _allows_setuid(p)})
    if exposed:
        return Check("setuid", False, f"writable bind roots on filesystems without nosuid: {', '.join(exposed[:5])}"
                     + (f" and {len(exposed) - 5} more" if len(exposed) > 5 else "")
                     + "; a container's root could leave a setuid-root program there for its owner to run",
                     "mount them nosuid (for /home on the root filesystem, an fstab line "
                     "`/home /home none bind,nosuid 0 0`), or list the root as PATH:ro in bind_roots")
    return Check("setuid", True, f"{len(paths)} writable bind roots, all on nosuid filesystems" if paths else
                 "no writable bind roots")


def _writable_bind_places(config: Config, docker_group: str) -> set[str]:
    """The folders binds may write below: listed roots without `:ro`, and for `~` the homes
    of those who can reach the Docker socket (members of its group)."""
    import grp
    import pwd
    levels = [config.defaults, *(g.settings for g in config.groups.values()),
              *(o.settings for o in config.overrides.values())]
    roots = {root for settings in levels for root in settings.get("bind_roots") or () if not root.endswith(":ro")}
    places = {root for root in roots if root != "~"}
    if "~" in roots:
        try:
            group = grp.getgrnam(docker_group)
        except KeyError:
            return places
        for user in pwd.getpwall():
            if user.pw_gid == group.gr_gid or user.pw_name in group.gr_mem:
                places.add(user.pw_dir)
    return {p for p in places if os.path.isdir(p) and os.path.realpath(p) != "/"}


def _allows_setuid(path: str) -> bool:
    return not os.statvfs(path).f_flag & os.ST_NOSUID


def _mount_point(path: str, mountinfo: str = "/proc/self/mountinfo") -> str:
    """The mount a path lies on: the longest mount point above it (a bind mount of the same
    filesystem has the same device number, so st_dev cannot tell)."""
    path = os.path.realpath(path)
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            points = [line.split()[4].encode().decode("unicode_escape") for line in f if len(line.split()) > 4]
    except OSError:
        return path
    above = [p for p in points if path == p or path.startswith(p.rstrip("/") + "/")]
    return max(above, key=len, default=path)


def run_checks(config_path: str) -> list[Check]:
    config_check, config = check_config(config_path)
    docker_check, containers = check_docker()
    return [config_check, docker_check, check_cgroups(), check_systemd(), *check_nvml(),
            check_slices(_containers_if(docker_check, containers), config), check_gateway(),
            check_setuid_binds(config)]


def report(checks: list[Check], color: bool, write: Callable[[str], None] = print) -> int:
    for c in checks:
        tag = ("\033[32m[ OK ]\033[0m" if c.ok else "\033[31m[FAIL]\033[0m") if color else \
            ("[ OK ]" if c.ok else "[FAIL]")
        write(f"{tag} {c.name}: {c.found}")
        if not c.ok and c.fix:
            write(f"       fix: {c.fix}")
    failed = sum(not c.ok for c in checks)
    write(f"{len(checks) - failed} of {len(checks)} checks passed" + (f"; {failed} need fixing" if failed else ""))
    return 0 if failed == 0 else 1


def main(config_path: str) -> int:
    return report(run_checks(config_path), os.isatty(1) and not os.environ.get("NO_COLOR"))
