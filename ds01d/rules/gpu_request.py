"""Which GPUs a container asked Docker for, from its inspect data.

Four ways exist on real hosts: DeviceRequests (`--gpus`), CDI device requests
(`--device nvidia.com/gpu=0`, Docker 25 and later), the nvidia runtime reading
NVIDIA_VISIBLE_DEVICES (the image's own env included: inspect shows it merged), and raw
`/dev/nvidiaN` device nodes.  What none of them shows (`--privileged`, `-v /dev:/dev`)
is found from NVML's process list instead (the GPU watch).  Device ids
are kept as written (index, `GPU-`/`MIG-` UUID, or `0:1` MIG id); resolving them
to real devices needs NVML and happens in the GPU adapter.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any, Mapping

_DEV_NODE = re.compile(r"^/dev/nvidia(\d+)$")
_CDI_GPU = "nvidia.com/gpu="


@dataclass(frozen=True)
class GpuRequest:
    """`all_gpus`, or explicit `device_ids`, or `count` unnamed GPUs; `source` says how."""

    all_gpus: bool = False
    device_ids: tuple[str, ...] = ()
    count: int = 0
    source: str | None = None

    @property
    def wants_gpu(self) -> bool:
        return self.all_gpus or bool(self.device_ids) or self.count > 0

    def describe(self) -> str:
        if self.all_gpus:
            return "all GPUs"
        if self.device_ids:
            return "devices " + ",".join(self.device_ids)
        return f"{self.count} GPU(s)" if self.count else "no GPU"


NO_GPU = GpuRequest()


#: The capabilities dockerd's nvidia device driver registers: a request without a driver
#: goes to it when one of its capability sets is within these (even an empty set, `[[]]`).
NVIDIA_CAPABILITIES = frozenset({"gpu", "nvidia", "compute", "compat32", "graphics", "utility", "video", "display"})


def _is_gpu_request(req: Mapping[str, Any]) -> bool:
    """dockerd's own choice of driver: `nvidia` by name, or no driver and a capability set
    the nvidia driver matches (so `[["compute", "utility"]]` is a GPU request too)."""
    caps = req.get("Capabilities") or []
    if req.get("Driver") == "nvidia" or any("gpu" in (c or []) for c in caps if isinstance(c, list)):
        return True
    return not req.get("Driver") and any(isinstance(c, list) and set(c) <= NVIDIA_CAPABILITIES for c in caps)


def _cdi_gpu_names(req: Mapping[str, Any]) -> list[str]:
    """The NVIDIA GPU names (`nvidia.com/gpu=...`) of a device request of the `cdi` driver."""
    if req.get("Driver") != "cdi":
        return []
    return [i for i in req.get("DeviceIDs") or [] if isinstance(i, str) and i.startswith(_CDI_GPU)]


def is_gpu_device_request(req: Mapping[str, Any]) -> bool:
    """Whether one device request asks for NVIDIA GPUs, in `--gpus` or in CDI form."""
    return _is_gpu_request(req) or bool(_cdi_gpu_names(req))


def _from_cdi(host: Mapping[str, Any]) -> GpuRequest | None:
    """CDI names (`nvidia.com/gpu=0`, `=all`, `=GPU-<uuid>`, `=0:1`) of the `cdi` driver."""
    names = [n for r in host.get("DeviceRequests") or [] for n in _cdi_gpu_names(r)]
    if not names:
        return None
    ids = tuple(n[len(_CDI_GPU):] for n in names)
    if "all" in ids:
        return GpuRequest(all_gpus=True, source="CDI")
    return GpuRequest(device_ids=ids, source="CDI")


def _from_device_requests(host: Mapping[str, Any]) -> GpuRequest | None:
    requests = [r for r in host.get("DeviceRequests") or [] if _is_gpu_request(r)]
    if not requests:
        return _from_cdi(host)
    ids = tuple(i for r in requests for i in (r.get("DeviceIDs") or []))
    count = sum(max(r.get("Count") or 0, 0) for r in requests)
    return GpuRequest(all_gpus=any(r.get("Count") == -1 for r in requests),
                      device_ids=ids, count=count, source="DeviceRequests")


def _from_visible_devices(inspect: Mapping[str, Any]) -> GpuRequest | None:
    if (inspect.get("HostConfig") or {}).get("Runtime") != "nvidia":
        return None
    env = dict(e.split("=", 1) for e in (inspect.get("Config") or {}).get("Env") or [] if "=" in e)
    value = env.get("NVIDIA_VISIBLE_DEVICES", "").strip()
    if value in ("", "none", "void"):
        return None
    if value == "all":
        return GpuRequest(all_gpus=True, source="NVIDIA_VISIBLE_DEVICES")
    return GpuRequest(device_ids=tuple(v.strip() for v in value.split(",") if v.strip()),
                      source="NVIDIA_VISIBLE_DEVICES")


def _from_device_nodes(host: Mapping[str, Any]) -> GpuRequest | None:
    ids = tuple(m.group(1) for d in host.get("Devices") or []
                if (m := _DEV_NODE.match(posixpath.normpath(d.get("PathOnHost") or "/"))))
    return GpuRequest(device_ids=ids, source="/dev/nvidia") if ids else None


def gpu_request(inspect: Mapping[str, Any]) -> GpuRequest:
    """The container's GPU request, from the first mechanism that carries one."""
    host = inspect.get("HostConfig") or {}
    return (_from_device_requests(host) or _from_visible_devices(inspect)
            or _from_device_nodes(host) or NO_GPU)
