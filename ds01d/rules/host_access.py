"""What a non-admin's container may reach of the host: the gateway's rules, pure.

Membership of the `docker` group is root on a plain Docker host: `-v /:/host`,
`--privileged` or `--pid host` reach every user's files and processes.  These rules close
that for everyone but root and the admin group.  Each is a per-user setting
(`ds01.yaml`: defaults, groups, user_overrides with a reason and an expiry), so an
exception is written like every other one.

Input is the canonical create body (`engine_json.canonical`: what dockerd will execute)
and the caller's `Access` (their settings, their home); paths are resolved by the caller
of these functions (`resolve`: the host's strict realpath, as dockerd will follow
symlinks; an OSError, for a path that is not there or cannot be read, refuses the bind).
Output is the body with every bind source replaced by the path it was checked as (so
no swap between the check and the create changes it), or `Denied` with one sentence
that names the rule and how to ask for an exception.
"""

from __future__ import annotations

import copy
import posixpath
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from ds01d.rules.engine_json import UnreadableBody

#: Never a bind source (nor anything below one), whatever the roots say: the host's
#: configuration, the engine's and ds01d's state and sockets, the kernel's views.  `/` itself
#: is never one either.  ds01d's configured state and socket directories are added.
FORBIDDEN = ("/etc", "/var/lib/docker", "/var/lib/containerd", "/var/lib/ds01", "/run/docker.sock",
             "/run/ds01-engine", "/run/ds01", "/run/containerd", "/proc", "/sys", "/dev")
#: Sysctls a container may set (Docker's namespaced list): IPC ones, message queues, and
#: the network's own (not with the host's network namespace).
SAFE_SYSCTLS = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall", "kernel.shmmax",
                "kernel.shmmni", "kernel.shm_rmid_forced")
SAFE_SYSCTL_PREFIXES = ("fs.mqueue.", "net.")
_HOST_MODES = ("PidMode", "IpcMode", "UTSMode", "UsernsMode", "CgroupnsMode")
#: Log drivers that write where dockerd (root, in the host's network) is told to send them:
#: `syslog`/`fluentd`/`gelf` to any address, a unix socket of the host included.
LOG_DRIVERS_DEFAULT = ("json-file", "local", "journald", "none")
#: Network drivers a non-admin may create networks with (macvlan and ipvlan put containers
#: on the host's own interfaces; plugins run as root).
NETWORK_DRIVERS = ("bridge",)
#: Binds and mounts one create may have: each is resolved on the host (symlinks followed one by
#: one), so a create with thousands would keep the gateway busy for everyone.
MAX_MOUNTS = 64
#: Bind propagation that carries mounts made in the container (a volume, a tmpfs with `suid`)
#: back to the host, below the bind's source, past a `nosuid` on the host's own mount.
_OUTWARD_PROPAGATION = ("shared", "rshared")


class Denied(ValueError):
    """A request the rules refuse; str(exc) names the rule and says how to get an exception."""

    def __init__(self, rule: str, what: str):
        super().__init__(f"{what} ({rule}); ask an admin for an exception (a user_overrides entry with {rule})")
        self.rule = rule


@dataclass(frozen=True)
class Root:
    """A directory under which binds are allowed; `read_only`: binds below it are made read-only."""

    path: str
    read_only: bool = False


@dataclass(frozen=True)
class Access:
    """One caller's settings for these rules, their home resolved."""

    home: str
    allow_privileged: bool = False
    allow_host_namespaces: bool = False
    allow_host_network: bool = False
    bind_roots: tuple[str, ...] = ("~",)
    volume_drivers: tuple[str, ...] = ("local",)
    allowed_devices: tuple[str, ...] = ()
    cap_add: tuple[str, ...] = ()
    allow_unconfined: bool = False
    allow_unsafe_sysctls: bool = False
    allow_low_ports: bool = False
    log_drivers: tuple[str, ...] = LOG_DRIVERS_DEFAULT
    forbidden: tuple[str, ...] = ()        # ds01d's own state and socket directories

    def places(self, resolve: Callable[[str], str]) -> Places:
        roots = []
        for entry in self.bind_roots:
            path, _, mode = entry.partition(":")
            path = self.home if path == "~" else path
            try:
                real = resolve(path)
            except OSError:
                continue        # a root that is not there allows nothing (check-config warns of it)
            if real != "/":     # (an account whose home is / would otherwise reach everything)
                roots.append(Root(real, mode == "ro"))
        return Places(tuple(roots), (*FORBIDDEN, *self.forbidden), resolve)


@dataclass(frozen=True)
class Places:
    """Where binds may come from (resolved roots), where never, and how paths are resolved."""

    roots: tuple[Root, ...]
    forbidden: tuple[str, ...]
    resolve: Callable[[str], str]


def judge_create(body: Mapping[str, Any], access: Access, resolve: Callable[[str], str]) -> dict[str, Any]:
    """The create body to forward, binds pinned to their checked paths; Denied if a rule refuses it."""
    host = body.get("HostConfig") or {}
    _namespaces(host, access)
    _privileges(host, access)
    _sysctls(host, access)
    _ports(host, access)
    _logging(host, access)
    out = copy.deepcopy(dict(body))
    out_host = out.setdefault("HostConfig", {})
    places = access.places(resolve)
    if len(host.get("Binds") or []) + len(host.get("Mounts") or []) > MAX_MOUNTS:
        raise Denied("bind_roots", f"more than {MAX_MOUNTS} binds and mounts in one container")
    if host.get("Binds"):
        out_host["Binds"] = [_bind(entry, places) for entry in host["Binds"]]
    if host.get("Mounts"):
        out_host["Mounts"] = [_mount(m, places, access) for m in host["Mounts"]]
    if host.get("VolumeDriver") and host["VolumeDriver"] not in access.volume_drivers:
        raise Denied("volume_drivers", f"the volume driver {host['VolumeDriver']!r} is not allowed here")
    restart_with_binds(host.get("RestartPolicy"), has_host_binds(out_host))
    return out


def has_host_binds(host: Mapping[str, Any]) -> bool:
    """Whether a container binds host paths (`-v /path:...`, `--mount type=bind`, or a
    `--mount type=volume` whose new local volume binds a folder)."""
    return any(isinstance(b, str) and b.startswith("/") for b in host.get("Binds") or []) or \
        any(_mount_binds(m) for m in host.get("Mounts") or [])


def _mount_binds(mount: Any) -> bool:
    if not isinstance(mount, Mapping):
        return False
    if mount.get("Type") == "bind":
        return True
    options = mount.get("VolumeOptions")
    config = options.get("DriverConfig") if isinstance(options, Mapping) else None
    opts = config.get("Options") if isinstance(config, Mapping) else None
    return mount.get("Type") == "volume" and isinstance(opts, Mapping) and volume_binds(opts)


def volume_binds(options: Mapping[str, Any]) -> bool:
    """Whether a local volume's mount(8) options bind a host folder (`o=bind`, or `type=none`):
    mounted again, symlinks followed, at every start of a container that uses it."""
    kind = str(options.get("type") or "").lower()
    flags = [f.strip().lower() for f in str(options.get("o") or "").split(",")]
    return "bind" in flags or "rbind" in flags or kind == "none"


def restart_with_binds(policy: Any, binds: bool) -> None:
    """dockerd's own restarts (`--restart`, its own restart, a reboot) resolve bind sources
    again without passing the gateway: a directory swapped for a symlink meanwhile would be
    mounted.  So a container with host binds restarts only through the gateway."""
    if binds and restarts(policy):
        name = policy["Name"]
        raise Denied("bind_roots", f"--restart {name} with host binds is not allowed: dockerd would resolve the "
                                   "binds again where nobody checks them; use a named volume that binds "
                                   "no folder, or restart it yourself")


def restarts(policy: Any) -> bool:
    """Whether a RestartPolicy has dockerd restart the container by itself (any but none/"no")."""
    return isinstance(policy, Mapping) and str(policy.get("Name") or "") not in ("", "no")


def judge_exec(body: Mapping[str, Any], access: Access) -> None:
    """An exec may not be privileged (it would be a privileged process in any container)."""
    if _truthy(body.get("Privileged")) and not access.allow_privileged:
        raise Denied("allow_privileged", "a privileged exec is not allowed")


def judge_update(body: Mapping[str, Any], binds: bool) -> None:
    """`docker update` may change resources, never devices or placement; and a restart
    policy only for a container without host binds (`binds`: it has some now, its local
    volumes' included)."""
    for field in ("Devices", "DeviceRequests", "DeviceCgroupRules", "CgroupParent"):
        if body.get(field):
            raise Denied("allowed_devices", f"an update may not change {field}")
    restart_with_binds(body.get("RestartPolicy"), binds)


def judge_network(body: Mapping[str, Any], access: Access) -> None:
    """`networks/create`: a bridge of its own; not a macvlan or ipvlan network on the host's
    interfaces, nor an existing host bridge by name (`com.docker.network.bridge.name`)."""
    driver = str(body.get("Driver") or "bridge")
    if access.allow_host_network:
        return
    if driver not in NETWORK_DRIVERS:
        raise Denied("allow_host_network", f"a network with the driver {driver!r} reaches the host's own "
                                           "interfaces or runs as root; only bridge networks are allowed")
    options = _mapping(body.get("Options"), "Options")
    if any(str(k).strip().lower() == "com.docker.network.bridge.name" for k in options):
        raise Denied("allow_host_network", "naming the bridge (com.docker.network.bridge.name) could join a "
                                           "bridge of the host's")


def judge_volume(body: Mapping[str, Any], access: Access, resolve: Callable[[str], str]) -> dict[str, Any]:
    """`volumes/create`: an allowed driver, and a local volume that binds a host path only
    below the roots (`type=none,o=bind,device=/` is a bind mount by another name), made
    read-only below a read-only root; the body to forward."""
    driver = body.get("Driver") or "local"
    if driver not in access.volume_drivers:
        raise Denied("volume_drivers", f"the volume driver {driver!r} is not allowed here")
    options = _local_options(_mapping(body.get("DriverOpts"), "DriverOpts"), access.places(resolve))
    return {**body, "DriverOpts": options} if body.get("DriverOpts") is not None else dict(body)


def restart_with_volume_binds(host: Mapping[str, Any], volumes: Sequence[Mapping[str, Any]],
                              joined: bool = False) -> None:
    """A restart policy with named local volumes that bind folders (`volumes`: their
    `Options`), or with the binds of a `--volumes-from` container (`joined`), refused like
    one with host binds (see `restart_with_binds`)."""
    restart_with_binds(host.get("RestartPolicy"), joined or any(volume_binds(options) for options in volumes))


def check_binds_at_start(binds: Sequence[str], mounts: Sequence[Mapping[str, Any]], access: Access,
                         resolve: Callable[[str], str]) -> None:
    """A container's binds again, before each start: dockerd resolves bind sources at every
    start, so a directory swapped for a symlink since the create must not get through."""
    places = access.places(resolve)
    for entry in binds:
        _bind(entry, places)
    for mount in mounts:
        if mount.get("Type") == "bind":
            _checked_source(str(mount.get("Source") or ""), places)


# ---- the rules ------------------------------------------------------------------------------


def _namespaces(host: Mapping[str, Any], access: Access) -> None:
    for mode in _HOST_MODES:
        if str(host.get(mode) or "").lower() == "host" and not access.allow_host_namespaces:
            raise Denied("allow_host_namespaces", f"{mode} host shares the host's namespace")
    if str(host.get("NetworkMode") or "").lower() == "host" and not access.allow_host_network:
        raise Denied("allow_host_network", "--network host is not allowed here")


def _privileges(host: Mapping[str, Any], access: Access) -> None:
    if _truthy(host.get("Privileged")) and not access.allow_privileged:
        raise Denied("allow_privileged", "--privileged is not allowed")
    allowed = {_cap(c) for c in access.cap_add}
    for cap in host.get("CapAdd") or []:
        if _cap(str(cap)) not in allowed:
            raise Denied("cap_add", f"the capability {_cap(str(cap))} is not allowed")
    if not access.allow_unconfined:
        for option in host.get("SecurityOpt") or []:
            key = str(option).replace(":", "=", 1).split("=", 1)[0].strip().lower()
            value = str(option).replace(":", "=", 1).partition("=")[2].strip().lower()
            if _confinement_changed(key, value):
                raise Denied("allow_unconfined", f"--security-opt {option} is not allowed")
        if host.get("MaskedPaths") is not None or host.get("ReadonlyPaths") is not None:
            raise Denied("allow_unconfined", "changing the masked and read-only /proc paths is not allowed")
    adjust = host.get("OomScoreAdj")
    if isinstance(adjust, (int, float)) and adjust < 0 and not access.allow_privileged:
        raise Denied("allow_privileged", f"--oom-score-adj {adjust} would have the kernel kill other users' "
                                         "processes before this container's")


def _confinement_changed(key: str, value: str) -> bool:
    """A `--security-opt` that changes the container's confinement: any seccomp profile
    but the default, any AppArmor profile but docker-default (another loaded one may allow
    anything), any SELinux label (`type:spc_t` is unconfined), systempaths=unconfined."""
    if key in ("seccomp", "label", "disable"):     # a bare "disable" is dockerd's old label=disable
        return True
    if key == "apparmor":
        return value != "docker-default"
    return key == "systempaths" and value == "unconfined"


def _ports(host: Mapping[str, Any], access: Access) -> None:
    """Host ports below 1024 are the host's services' (ssh, dns, http): not a container's."""
    if access.allow_low_ports:
        return
    for port, bindings in _mapping(host.get("PortBindings"), "PortBindings").items():
        for binding in bindings if isinstance(bindings, list) else []:
            low = _lowest_port(binding.get("HostPort") if isinstance(binding, Mapping) else None)
            if low is not None and 0 < low < 1024:
                raise Denied("allow_low_ports", f"publishing {port} on host port {binding['HostPort']} is not "
                                                "allowed: host ports below 1024 are the host's services'")


def _lowest_port(value: Any) -> int | None:
    """The first port of a HostPort (`80`, `8000-8010`; empty: the engine picks one)."""
    text = str(value or "").strip()
    if not text:
        return None
    try:
        return int(text.split("-", 1)[0])
    except ValueError:
        raise UnreadableBody(f"the host port {text!r} is not a number") from None


def _logging(host: Mapping[str, Any], access: Access) -> None:
    """Log drivers that send elsewhere do so as dockerd, from the host: only the listed ones."""
    config = _mapping(host.get("LogConfig"), "LogConfig")
    driver = str(config.get("Type") or "")
    if driver and driver not in access.log_drivers:
        raise Denied("log_drivers", f"the log driver {driver!r} is not allowed here (it sends from the host)")


def _sysctls(host: Mapping[str, Any], access: Access) -> None:
    if access.allow_unsafe_sysctls:
        return
    for name in _mapping(host.get("Sysctls"), "Sysctls"):
        key = str(name).replace("/", ".")
        if key in SAFE_SYSCTLS or key.startswith("fs.mqueue."):
            continue
        if key.startswith("net.") and str(host.get("NetworkMode") or "").lower() != "host":
            continue
        raise Denied("allow_unsafe_sysctls", f"the sysctl {key} is not namespaced to the container")


def _bind(entry: Any, places: Places) -> Any:
    """`src:dst[:opts]`: a host path is checked and pinned; a volume name is left as it is."""
    if not isinstance(entry, str):
        return entry
    source, sep, rest = entry.partition(":")
    if not source.startswith("/"):
        return entry              # a named volume
    target, _, options = rest.partition(":")
    if any(flag.strip().lower() in _OUTWARD_PROPAGATION for flag in options.split(",")):
        raise Denied("bind_roots", f"bind propagation {options} would carry mounts made in the container "
                                   "back to the host")
    checked, root = _checked_source(source, places)
    if root.read_only:
        flags = [f for f in options.split(",") if f and f not in ("rw", "ro")]
        options = ",".join([*flags, "ro"])
    return checked + sep + target + (f":{options}" if options else "")


def _mount(mount: Any, places: Places, access: Access) -> Any:
    if not isinstance(mount, Mapping):
        return mount
    kind = str(mount.get("Type") or "")
    out = dict(mount)
    if kind == "bind":
        propagation = str(_mapping(mount.get("BindOptions"), "BindOptions").get("Propagation") or "").lower()
        if propagation in _OUTWARD_PROPAGATION:
            raise Denied("bind_roots", f"bind propagation {propagation} would carry mounts made in the container "
                                       "back to the host")
        checked, root = _checked_source(str(mount.get("Source") or ""), places)
        out["Source"] = checked
        if root.read_only:
            out["ReadOnly"] = True
    elif kind == "volume":
        volume = _mapping(mount.get("VolumeOptions"), "VolumeOptions")
        config = _mapping(volume.get("DriverConfig"), "DriverConfig")
        driver = config.get("Name") or "local"
        if driver not in access.volume_drivers:
            raise Denied("volume_drivers", f"the volume driver {driver!r} is not allowed here")
        options = _local_options(_mapping(config.get("Options"), "DriverConfig.Options"), places)
        labels = {k: v for k, v in _mapping(volume.get("Labels"), "VolumeOptions.Labels").items()
                  if not str(k).startswith("ds01.")}       # a volume's owner is the gateway's to say
        if volume:
            out["VolumeOptions"] = {**volume, **({"Labels": labels} if volume.get("Labels") is not None else {}),
                                    **({"DriverConfig": {**config, "Options": options}}
                                       if config.get("Options") is not None else {})}
    elif kind != "tmpfs":
        raise Denied("bind_roots", f"a mount of type {kind or '(none)'!r} is not allowed here")
    return out


def _local_options(options: Mapping[str, Any], places: Places) -> dict[str, Any]:
    """The local driver's mount(8) options: a bind (`o=bind`, or `type=none`) of `device`,
    only below the roots (made read-only below a read-only one), or a tmpfs.  Network file
    systems are refused: dockerd mounts them as root from the host, where a server that
    trusts the host would serve every user's files."""
    kind = str(options.get("type") or "").lower()
    out = dict(options)
    if volume_binds(options):
        _, root = _checked_source(str(options.get("device") or ""), places)
        flags = [f.strip() for f in str(options.get("o") or "").split(",") if f.strip()]
        if root.read_only and "ro" not in flags:
            out["o"] = ",".join([f for f in flags if f != "rw"] + ["ro"])
    elif kind in ("nfs", "nfs4", "cifs", "smb3"):
        raise Denied("volume_drivers", f"a local volume of type {kind} is mounted by dockerd as root, from the "
                                       "host; network file systems need an admin")
    elif options.get("device") and kind != "tmpfs":
        raise Denied("bind_roots", f"a local volume of type {kind or 'unknown'!r} over a device is not allowed")
    return out


def _checked_source(source: str, places: Places) -> tuple[str, Root]:
    """The resolved bind source and the root it is below; Denied where none allows it."""
    if not source.startswith("/"):
        raise Denied("bind_roots", f"the bind source {source!r} is not an absolute path")
    try:
        real = places.resolve(source)
    except OSError as exc:   # not there, or a directory on the way that cannot be read: not judged, refused
        raise Denied("bind_roots", f"the bind source {source} cannot be checked ({exc.strerror or exc}); "
                                   "it must exist") from None
    for bad in places.forbidden:
        if _below(real, bad) or real == "/":
            raise Denied("bind_roots", f"binding {source} ({real}) is never allowed")
    for root in places.roots:
        if _below(real, root.path):
            return real, root
    shown = source if real == posixpath.normpath(source) else f"{source} (which is {real})"
    raise Denied("bind_roots", f"binding {shown} is not allowed: binds must be below your home directory "
                               "or a shared path of this server")


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    """An object field (None: empty); anything else the engine could not read either."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UnreadableBody(f"{what} must be an object")
    return value


def _below(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _cap(name: str) -> str:
    upper = name.strip().upper()
    return upper if upper.startswith("CAP_") or upper == "ALL" else f"CAP_{upper}"


def _truthy(value: Any) -> bool:
    return value is True
