"""A container-create body read the way dockerd reads it, and written back unambiguous.

dockerd decodes request bodies with Go's encoding/json, which does not do what a Python
reader of the same bytes would assume: an object key matches a struct field whatever its
case (and with Unicode simple folding, so "ſ" (U+017F) is an "s" and "K" (U+212A) a "k"),
a later key overwrites an earlier one that matched the same field, unknown keys are
ignored, and the create body's host settings may also sit at its top level (the container
config and the host config are one object for old clients).  A gateway that checks
`body["HostConfig"]["CgroupParent"]` while the engine executes `"hostconfig": {"cgroupparent": ...}`
checks nothing.

So the gateway never forwards what the client sent: it forwards `canonical(body)`, in which
every key that names a field of the engine's create structures is spelled the engine's
way and given the value the engine would have taken, host settings are inside
`HostConfig` only, and values the engine could not have decoded either (NaN, invalid
UTF-8, a body that is not an object) are refused.  What ds01d then reads and rewrites is
exactly what dockerd will execute.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

MAX_DEPTH = 64    # no create body nests deeper; a deeper one is refused the same on every Python
_DEVICE_REQUEST = ("Driver", "Count", "DeviceIDs", "Capabilities", "Options")
_DEVICE_MAPPING = ("PathOnHost", "PathInContainer", "CgroupPermissions")
_RESOURCES = (
    "CpuShares", "Memory", "NanoCpus", "CgroupParent", "BlkioWeight", "BlkioWeightDevice",
    "BlkioDeviceReadBps", "BlkioDeviceWriteBps", "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps",
    "CpuPeriod", "CpuQuota", "CpuRealtimePeriod", "CpuRealtimeRuntime", "CpusetCpus", "CpusetMems",
    "Devices", "DeviceCgroupRules", "DeviceRequests", "KernelMemory", "KernelMemoryTCP",
    "MemoryReservation", "MemorySwap", "MemorySwappiness", "OomKillDisable", "PidsLimit", "Ulimits",
    "CpuCount", "CpuPercent", "IOMaximumIOps", "IOMaximumBandwidth")
#: container.HostConfig of API 1.41 (Docker 20.10) and later, its embedded Resources included.
HOST_CONFIG = _RESOURCES + (
    "Binds", "ContainerIDFile", "LogConfig", "NetworkMode", "PortBindings", "RestartPolicy", "AutoRemove",
    "VolumeDriver", "VolumesFrom", "ConsoleSize", "Annotations", "CapAdd", "CapDrop", "CgroupnsMode", "Dns",
    "DnsOptions", "DnsSearch", "ExtraHosts", "GroupAdd", "IpcMode", "Cgroup", "Links", "OomScoreAdj",
    "PidMode", "Privileged", "PublishAllPorts", "ReadonlyRootfs", "SecurityOpt", "StorageOpt", "Tmpfs",
    "UTSMode", "UsernsMode", "ShmSize", "Sysctls", "Runtime", "Isolation", "Mounts", "MaskedPaths",
    "ReadonlyPaths", "Init")
#: container.Config.
CONFIG = ("Hostname", "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr", "ExposedPorts",
          "Tty", "OpenStdin", "StdinOnce", "Env", "Cmd", "Healthcheck", "ArgsEscaped", "Image", "Volumes",
          "WorkingDir", "Entrypoint", "NetworkDisabled", "MacAddress", "OnBuild", "Labels", "StopSignal",
          "StopTimeout", "Shell")
#: What the create handler's wrapper adds around them.
WRAPPER = ("HostConfig", "NetworkingConfig")

#: Object-valued fields whose own keys are struct fields too (the rest are maps: Labels,
#: Sysctls... keep their keys exactly).
_NESTED: dict[str, tuple[str, ...]] = {
    "DeviceRequests": _DEVICE_REQUEST, "Devices": _DEVICE_MAPPING,
    # mount.Mount and its options: `{"type": "bind", "source": "/"}` is a bind of / to Go
    "Mounts": ("Type", "Source", "Target", "ReadOnly", "Consistency", "BindOptions", "VolumeOptions", "TmpfsOptions"),
    "BindOptions": ("Propagation", "NonRecursive"),
    "VolumeOptions": ("NoCopy", "Labels", "DriverConfig"),
    "DriverConfig": ("Name", "Options"),
    "TmpfsOptions": ("SizeBytes", "Mode"),
    "RestartPolicy": ("Name", "MaximumRetryCount"),
    "LogConfig": ("Type", "Config"),
}
#: Maps (keys kept) whose values are lists of structs: `{"80/tcp": [{"hostport": "80"}]}`.
_MAP_OF_STRUCTS: dict[str, tuple[str, ...]] = {"PortBindings": ("HostIp", "HostPort")}


class _Pairs(list):
    """A JSON object as its (key, value) pairs in order, duplicates kept: Go's view of it."""


class UnreadableBody(ValueError):
    """A create body the gateway will not forward; str(exc) is the one sentence."""


def fold(key: str) -> str:
    """Go's case folding for field names: ASCII case, plus the two non-ASCII letters that fold
    to ASCII ones (KELVIN SIGN to k, LATIN SMALL LETTER LONG S to s)."""
    return key.replace("\u212a", "k").replace("\u017f", "s").lower()


def _strict_loads(data: bytes) -> Any:
    def no_constant(name: str) -> Any:
        raise UnreadableBody(f"the body has {name}, which is not JSON")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadableBody("the body is not UTF-8") from None
    try:
        value = json.loads(text, object_pairs_hook=_Pairs, parse_constant=no_constant)
        _check_depth(value)
        return value
    except RecursionError:
        raise UnreadableBody("the body is nested too deeply") from None
    except ValueError as exc:
        if isinstance(exc, UnreadableBody):
            raise
        raise UnreadableBody(f"the body is not JSON ({exc.msg} at character {exc.pos})") from None


def _check_depth(value: Any) -> None:
    """Refuse nesting beyond MAX_DEPTH, and strings Go would read otherwise (walked without
    recursion): a lone surrogate (`"\\udc80"`) is U+FFFD to Go, so the path checked here
    would not be the path dockerd uses."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise UnreadableBody("the body is nested too deeply")
        if isinstance(item, _Pairs):
            stack.extend((v, depth + 1) for _, v in item)
            stack.extend((k, depth) for k, _ in item)
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, str) and not _whole_unicode(item):
            raise UnreadableBody("the body has a string with a lone UTF-16 surrogate escape")


def _whole_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _fields(pairs: list[tuple[str, Any]], known: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(known fields by canonical name, the other keys), each later key winning as in Go."""
    by_fold = {fold(k): k for k in known}
    fields: dict[str, Any] = {}
    other: dict[str, Any] = {}
    for key, value in pairs:
        name = by_fold.get(fold(key))
        if name is None:
            other[key] = value
        else:
            fields[name] = value
    return fields, other


def _plain(value: Any) -> Any:
    """Objects back to dicts with their keys as sent (maps such as Labels), later keys winning."""
    if isinstance(value, _Pairs):
        return {k: _plain(v) for k, v in value}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _object(value: Any, what: str) -> _Pairs | None:
    if value is None:
        return None
    if isinstance(value, _Pairs):
        return value
    raise UnreadableBody(f"{what} must be an object")


def _struct(pairs: list[tuple[str, Any]], known: tuple[str, ...]) -> dict[str, Any]:
    fields, _ = _fields(pairs, known)   # keys the engine ignores are dropped: never forwarded unread
    out: dict[str, Any] = {}
    for name, value in fields.items():
        nested = _NESTED.get(name)
        listed = _MAP_OF_STRUCTS.get(name)
        if listed is not None and isinstance(value, _Pairs):
            out[name] = {key: _struct_list(item, listed) for key, item in value}
        elif nested is not None and isinstance(value, _Pairs):      # (a _Pairs is a list too: first)
            out[name] = _struct(value, nested)
        elif nested is not None and isinstance(value, list):
            out[name] = [_struct(item, nested) if isinstance(item, _Pairs) else _plain(item) for item in value]
        else:
            out[name] = _plain(value)
    return out


def _struct_list(value: Any, known: tuple[str, ...]) -> Any:
    if isinstance(value, list) and not isinstance(value, _Pairs):
        return [_struct(item, known) if isinstance(item, _Pairs) else _plain(item) for item in value]
    return _plain(value)


def canonical(data: bytes) -> dict[str, Any]:
    """See `_canonical`; a body nested deeper than Python's stack is refused, not a crash."""
    try:
        return _canonical(data)
    except RecursionError:
        raise UnreadableBody("the body is nested too deeply") from None


def _canonical(data: bytes) -> dict[str, Any]:
    """The create body as dockerd will execute it, keys spelled its way, host settings in
    `HostConfig` only; UnreadableBody where the engine could not have read it either, or
    where host settings sit both inside and outside `HostConfig` (the engine merges some of
    them: too subtle to check, so refused)."""
    pairs = _object(_strict_loads(data) if data.strip() else _Pairs(), "the body")
    assert pairs is not None
    wrapper, rest = _fields(pairs, WRAPPER)
    config, rest_pairs = _fields(list(rest.items()), CONFIG)
    top_host, _ignored = _fields(list(rest_pairs.items()), HOST_CONFIG)
    inner = _object(wrapper.get("HostConfig"), "HostConfig")
    if inner is not None and top_host:
        raise UnreadableBody(f"host settings are both in HostConfig and at the top level ({sorted(top_host)[0]}); "
                             "put them in HostConfig")
    host_pairs = inner if inner is not None else _Pairs(top_host.items())
    body = _struct(_Pairs(config.items()), CONFIG)
    body["HostConfig"] = _struct(host_pairs, HOST_CONFIG)
    networking = wrapper.get("NetworkingConfig")
    if networking is not None:
        body["NetworkingConfig"] = _plain(networking)
    return body


def encode(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


#: The body of `POST /networks/{id}/connect`, as the engine reads it.
NETWORK_CONNECT = ("Container", "EndpointConfig", "Force")
#: `POST /containers/{id}/exec` (ExecConfig).
EXEC_CONFIG = ("User", "Privileged", "Tty", "ConsoleSize", "AttachStdin", "AttachStderr", "AttachStdout", "Detach",
               "DetachKeys", "Env", "WorkingDir", "Cmd")
#: `POST /containers/{id}/update` (UpdateConfig: the resources and the restart policy).
UPDATE_CONFIG = _RESOURCES + ("RestartPolicy",)
#: `POST /volumes/create`.
VOLUME_CREATE = ("Name", "Driver", "DriverOpts", "Labels")
#: `POST /networks/create` (types.NetworkCreateRequest).
NETWORK_CREATE = ("Name", "CheckDuplicate", "Driver", "Scope", "EnableIPv6", "IPAM", "Internal", "Attachable",
                  "Ingress", "ConfigOnly", "ConfigFrom", "Options", "Labels")


def canonical_fields(data: bytes, known: tuple[str, ...]) -> dict[str, Any]:
    """Any other request body the gateway judges (a network connect): its known fields as the
    engine reads them, others dropped; UnreadableBody as for a create."""
    pairs = _object(_strict_loads(data) if data.strip() else _Pairs(), "the body")
    assert pairs is not None
    return _struct(pairs, known)      # nested structs' keys folded too: {"RestartPolicy": {"name": ...}}
