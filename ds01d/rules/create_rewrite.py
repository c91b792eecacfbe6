"""What the gateway makes of a non-admin's container-create body: pure.

Input is the canonical body (`engine_json.canonical`: what dockerd will execute) and what
ds01d decided for the caller (`Admission`); output is the body to forward.  The caller's
slice replaces any cgroup parent; ds01d's labels replace whatever the client wrote under
`ds01.`; and a GPU request in any form (`--gpus` device requests, CDI names,
NVIDIA_VISIBLE_DEVICES, `/dev/nvidiaN` mappings) becomes one device request for exactly
the units the allocator gave, with NVIDIA_VISIBLE_DEVICES saying the same.  A container
that asked for no GPU gets NVIDIA_VISIBLE_DEVICES=void: under the nvidia runtime a CUDA
image's own environment (NVIDIA_VISIBLE_DEVICES=all) would otherwise hand it every GPU
past the allocator.
"""

from __future__ import annotations

import copy
import posixpath
import re
from dataclasses import dataclass
from typing import Any, Mapping

from ds01d.rules.engine_json import UnreadableBody
from ds01d.rules.gpu_request import GpuRequest, gpu_request, is_gpu_device_request

OWN_LABEL_PREFIX = "ds01."
VISIBLE = "NVIDIA_VISIBLE_DEVICES"
#: NVIDIA's device nodes (GPUs, control, UVM, MIG caps): the runtime adds what the allocated
#: devices need; a mapping of one by the client is dropped.
_GPU_NODE = re.compile(r"^/dev/nvidia.*$")


class NotAllowed(ValueError):
    """A create the gateway refuses for a non-admin; str(exc) is the one sentence."""


@dataclass(frozen=True)
class Admission:
    """What ds01d decided for one create: whose it is, where it runs, which GPUs it gets."""

    user: str
    uid: int
    slice: str
    kind: str
    mark: str                             # ds01.admission: proof the gateway wrote these labels
    gpu_uuids: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()         # host devices the caller may map besides GPUs (allowed_devices)


def _list_of(value: Any, kind: type, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, kind) for v in value):
        raise UnreadableBody(f"{what} is not what the engine takes")
    return value


def check_shapes(body: Mapping[str, Any]) -> None:
    """The fields read here have the types the engine requires (it would refuse the body too):
    UnreadableBody, not a crash, for anything else."""
    host = body.get("HostConfig") or {}
    _list_of(body.get("Env"), str, "Env")
    for request in _list_of(host.get("DeviceRequests"), dict, "HostConfig.DeviceRequests"):
        if not isinstance(request.get("Driver", ""), str) or isinstance(request.get("Count", 0), bool) or \
                not isinstance(request.get("Count", 0) or 0, int):
            raise UnreadableBody("HostConfig.DeviceRequests is not what the engine takes")
        _list_of(request.get("DeviceIDs"), str, "HostConfig.DeviceRequests[].DeviceIDs")
        for caps in _list_of(request.get("Capabilities"), list, "HostConfig.DeviceRequests[].Capabilities"):
            _list_of(caps, str, "HostConfig.DeviceRequests[].Capabilities")
    for device in _list_of(host.get("Devices"), dict, "HostConfig.Devices"):
        if not isinstance(device.get("PathOnHost", ""), str):
            raise UnreadableBody("HostConfig.Devices is not what the engine takes")
    if not isinstance(body.get("Labels") or {}, dict) or \
            not all(isinstance(v, str) for v in (body.get("Labels") or {}).values()):
        raise UnreadableBody("Labels is not what the engine takes")


def requested_gpus(body: Mapping[str, Any]) -> GpuRequest:
    """The GPU request of a canonical create body, in any of its forms.  The runtime is the
    engine's default when unset, which may be nvidia: an env request counts then too."""
    check_shapes(body)
    host = dict(body.get("HostConfig") or {})
    if not host.get("Runtime"):
        host["Runtime"] = "nvidia"
    return gpu_request({"HostConfig": host, "Config": {"Env": body.get("Env") or []}})


def gpus_wanted(request: GpuRequest) -> int:
    """How many units to allocate: `all` is one device (the seeds: "a dedicated MIG instance,
    not all GPUs"), named devices as many as named (the allocator picks which)."""
    if not request.wants_gpu:
        return 0
    if request.all_gpus:
        return 1
    return max(request.count, len(request.device_ids), 1)


def allowed_devices(host: Mapping[str, Any], extra: tuple[str, ...] = ()) -> list[Any]:
    """The device mappings a non-admin's container keeps: those of `extra` (the caller's
    `allowed_devices`).  GPU nodes are dropped (the allocated devices come through the device
    request); any other device, under any path spelling, and device cgroup rules are
    refused: a device node is a door to the host."""
    if host.get("DeviceCgroupRules"):
        raise NotAllowed("device cgroup rules (--device-cgroup-rule) are not allowed here (allowed_devices); ask an "
                         "admin for an exception (a user_overrides entry with allowed_devices)")
    kept = []
    for device in host.get("Devices") or []:
        path = posixpath.normpath(str(device.get("PathOnHost") or "/")) if isinstance(device, Mapping) else "?"
        if path in extra:
            kept.append({**device, "PathOnHost": path})
        elif not _GPU_NODE.match(path):
            raise NotAllowed(f"the device {path} is not allowed here: GPUs come with --gpus (allowed_devices); ask an "
                             "admin for an exception (a user_overrides entry with allowed_devices)")
    return kept


def rewrite(body: Mapping[str, Any], admission: Admission) -> dict[str, Any]:
    """The body to forward for a non-admin caller (see the module's docstring)."""
    check_shapes(body)
    out = copy.deepcopy(dict(body))
    host = dict(out.get("HostConfig") or {})
    host["CgroupParent"] = admission.slice
    host["DeviceRequests"] = [r for r in host.get("DeviceRequests") or [] if not is_gpu_device_request(r)]
    host["Devices"] = allowed_devices(host, admission.devices)
    if admission.gpu_uuids:
        host["DeviceRequests"].append({"Driver": "nvidia", "Count": 0, "DeviceIDs": list(admission.gpu_uuids),
                                       "Capabilities": [["gpu"]]})
    out["HostConfig"] = host
    out["Env"] = [e for e in out.get("Env") or [] if not (isinstance(e, str) and e.split("=", 1)[0] == VISIBLE)]
    out["Env"].append(f"{VISIBLE}={','.join(admission.gpu_uuids) or 'void'}")
    labels = {k: v for k, v in (out.get("Labels") or {}).items() if not k.startswith(OWN_LABEL_PREFIX)}
    labels.update({"ds01.user": admission.user, "ds01.uid": str(admission.uid),
                   "ds01.container_type": admission.kind, "ds01.admission": admission.mark})
    out["Labels"] = labels
    return out

