"""A scenario-driven stand-in for nvidia-ml-py's `pynvml`, for tests and the demo.

Same function names, return shapes (the real module's ctypes structures and
friendly objects) and NVMLError classes as nvidia-ml-py, so ds01d's NVML adapter
runs unchanged against it.  It is meant to be as unkind as the hardware, since a
kind fake hides the paths where a busy container would be judged idle:

- MIG devices, and the parents of MIG devices, answer NOT_SUPPORTED to utilization
  rates and per-process utilization, as real ones do.
- `nvmlDeviceGetProcessUtilization` returns only samples newer than the
  `lastSeenTimeStamp` it is given, taken on the driver's own tick
  (`process_util_period_s`, default 0.2 s), and raises NOT_FOUND when there is none;
  `process_list_grows` makes it raise INSUFFICIENT_SIZE, as pynvml does when the
  sample count grows between its sizing call and its reading call.
- Compute, graphics and MPS clients are listed by their own functions (a process's
  `type`); `used_memory_mib: null` is reported as `usedGpuMemory` None, as pynvml does
  for NVML_VALUE_NOT_AVAILABLE.
- GPM answers on GPUs marked `gpm: true`; the driver may lack functions altogether
  (`driver_lacks`, names or `prefix*`), which raises NVMLError_FunctionNotFound as
  pynvml does for a symbol the library does not export.
- `errors` on a GPU or a MIG instance makes the named functions raise that NVML
  error (`{"nvmlDeviceGetUtilizationRates": "NOT_SUPPORTED"}`); `fail` makes every
  call on that GPU raise GPU_IS_LOST.
- A changed `driver_epoch` is a driver reload: every call of the session opened
  before it raises GPU_IS_LOST until nvmlShutdown and nvmlInit; `driver_loaded: false`
  makes nvmlInit raise DRIVER_NOT_LOADED; `hang_s: N` makes every call block N seconds
  first (NVML has no timeouts).  A MIG handle whose
  instance was destroyed or recreated since it was handed out raises INVALID_ARGUMENT.
- `nvmlDeviceGetTotalEnergyConsumption` answers only on a GPU with `power_w` (the
  counter grows at that rate, in millijoules, from `energy_mj` when the module first saw
  the GPU: a driver reload does not reset it here) and NOT_SUPPORTED elsewhere, MIG
  device handles included, as boards without the counter do.
- MIG GPUs have `max_slices` slices (7: A100/H100; 4: A30).  Several entries with the
  same `gi` are compute instances of one GPU instance (`slices` is the GPU instance's
  slice count, `ci_slices` the compute instance's); GPM measures the GPU instance.

The scenario is a JSON file, re-read whenever it changes, so a test can turn a busy
GPU idle under a running daemon:

    {"driver": "550.54.15", "driver_epoch": 0, "driver_lacks": [],
     "gpus": [{"uuid": "GPU-...", "name": "NVIDIA H100 80GB HBM3", "memory_total_mib": 81559,
               "memory_used_mib": 1024, "utilization": 37, "gpm": true, "fail": null, "errors": {},
               "processes": [{"pid": 4242, "used_memory_mib": 1000, "sm_util": 37, "type": "compute"}],
               "mig": [{"uuid": "MIG-...", "gi": 1, "ci": 0, "slices": 3, "memory_total_mib": 40192,
                        "memory_used_mib": 0, "utilization": 40, "sm_activity": 12, "processes": []}]}]}

For a MIG instance `utilization` is GPM's GRAPHICS_UTIL (time any context was
active; defaults to `sm_activity`) and `sm_activity` is GPM's SM_UTIL (share of SMs
busy).  `mig` present means MIG mode is on for that GPU.  ds01d uses this module
only when the environment variable DS01D_FAKE_NVML names a scenario file.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import pynvml as _real
from pynvml import *  # noqa: F401,F403  constants, structures and NVMLError classes, as the real module has them
from pynvml import (NVML_ERROR_FUNCTION_NOT_FOUND, NVML_ERROR_GPU_IS_LOST, NVML_ERROR_INSUFFICIENT_SIZE,
                    NVML_ERROR_INVALID_ARGUMENT, NVML_ERROR_NOT_FOUND, NVML_ERROR_NOT_SUPPORTED,
                    NVML_ERROR_UNINITIALIZED, NVML_GPM_METRIC_GRAPHICS_UTIL, NVML_GPM_METRIC_SM_UTIL, NVMLError,
                    c_nvmlDeviceAttributes, c_nvmlGpmSupport_t, c_nvmlMemory_t, c_nvmlProcessUtilizationSample_t,
                    c_nvmlUtilization_t, nvmlFriendlyObject, struct_c_nvmlGpmSample_t)

F = TypeVar("F", bound=Callable[..., Any])
MIB = 1024 * 1024
NO_ID = 0xFFFFFFFF
_scenario_path: str | None = os.environ.get("DS01D_FAKE_NVML")
_cache: tuple[float, dict[str, Any]] | None = None
_session: int | None = None          # the driver epoch nvmlInit saw; None = not initialised
_gpm_samples: dict[int, tuple[float, float, float] | None] = {}   # live sample -> (time, graphics, SM) once taken
_energy_epoch: dict[str, float] = {}     # GPU uuid -> when its energy counter was first read


@dataclass(frozen=True)
class _Handle:
    gpu: int
    mig: int | None = None
    mig_uuid: str | None = None      # the instance the handle was made for


def use_scenario(path: str | None) -> None:
    global _scenario_path, _cache, _session
    _scenario_path, _cache, _session = path, None, None
    _gpm_samples.clear()


def live_gpm_samples() -> int:
    """GPM samples allocated and not freed: a test's leak detector."""
    return len(_gpm_samples)


def _scenario() -> dict[str, Any]:
    global _cache
    if _scenario_path is None:
        raise NVMLError(_real.NVML_ERROR_LIBRARY_NOT_FOUND)
    mtime = os.stat(_scenario_path).st_mtime
    if _cache is None or _cache[0] != mtime:
        with open(_scenario_path, encoding="utf-8") as f:
            _cache = (mtime, json.load(f))
    return _cache[1]


def _lacks(name: str) -> bool:
    return any(name == n or (n.endswith("*") and name.startswith(n[:-1]))
               for n in _scenario().get("driver_lacks", []))


def _nvml(fn: F) -> F:
    """An NVML entry point: absent from an old driver, refused before nvmlInit or after a driver reload."""
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        if _lacks(fn.__name__):
            raise NVMLError(NVML_ERROR_FUNCTION_NOT_FOUND)
        if _scenario_path is not None and _scenario().get("hang_s"):
            time.sleep(_scenario()["hang_s"])   # a GPU falling off the bus: calls block, no timeout
        if _session is None:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        if _session != _scenario().get("driver_epoch", 0):
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        return fn(*args, **kwargs)
    return call  # type: ignore[return-value]


def _told(name: str, *devs: dict[str, Any]) -> None:
    """Raise the error a scenario names for this function on one of these devices."""
    for dev in devs:
        code = (dev.get("errors") or {}).get(name)
        if code:
            raise NVMLError(getattr(_real, f"NVML_ERROR_{code}"))


def _gpu(handle: _Handle) -> dict[str, Any]:
    gpus = _scenario()["gpus"]
    if not isinstance(handle, _Handle) or handle.gpu >= len(gpus):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    gpu = gpus[handle.gpu]
    if gpu.get("fail"):
        raise NVMLError(NVML_ERROR_GPU_IS_LOST)
    return gpu


def _dev(handle: _Handle, name: str | None = None) -> dict[str, Any]:
    gpu = _gpu(handle)
    if handle.mig is None:
        dev = gpu
    else:
        migs = gpu.get("mig") or []
        if handle.mig >= len(migs) or migs[handle.mig]["uuid"] != handle.mig_uuid:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)  # the instance was destroyed or recreated
        dev = migs[handle.mig]
    if name:
        _told(name, dev)
    return dev


def _no_mig(handle: _Handle) -> None:
    """MIG devices, and GPUs with MIG mode on, cannot answer device-wide utilization."""
    if handle.mig is not None or _gpu(handle).get("mig") is not None:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)


# --- library ------------------------------------------------------------------

def nvmlInit() -> None:
    global _session
    if _scenario().get("driver_loaded") is False:
        raise NVMLError(_real.NVML_ERROR_DRIVER_NOT_LOADED)
    _session = _scenario().get("driver_epoch", 0)


def nvmlInitWithFlags(flags: int) -> None:
    nvmlInit()


def nvmlShutdown() -> None:
    global _session
    if _session is None:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    _session = None


@_nvml
def nvmlSystemGetDriverVersion() -> str:
    return _scenario().get("driver", "550.54.15")


# --- devices --------------------------------------------------------------------

@_nvml
def nvmlDeviceGetCount() -> int:
    return len(_scenario()["gpus"])


@_nvml
def nvmlDeviceGetHandleByIndex(index: int) -> _Handle:
    if not 0 <= index < len(_scenario()["gpus"]):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return _Handle(index)


@_nvml
def nvmlDeviceGetIndex(handle: _Handle) -> int:
    _gpu(handle)
    if handle.mig is not None:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return handle.gpu


@_nvml
def nvmlDeviceGetUUID(handle: _Handle) -> str:
    return _dev(handle, "nvmlDeviceGetUUID")["uuid"]


@_nvml
def nvmlDeviceGetName(handle: _Handle) -> str:
    gpu, dev = _gpu(handle), _dev(handle, "nvmlDeviceGetName")
    if handle.mig is None:
        return gpu["name"]
    gib, ci = round(dev["memory_total_mib"] / 1024), dev.get("ci_slices", dev["slices"])
    split = f"{ci}c." if ci != dev["slices"] else ""
    return f"{gpu['name']} MIG {split}{dev['slices']}g.{gib}gb"


@_nvml
def nvmlDeviceGetMemoryInfo(handle: _Handle, version: Any = None) -> c_nvmlMemory_t:
    dev = _dev(handle, "nvmlDeviceGetMemoryInfo")
    mem = c_nvmlMemory_t()
    mem.total = dev["memory_total_mib"] * MIB
    mem.used = dev.get("memory_used_mib", 0) * MIB
    mem.free = mem.total - mem.used
    return mem


@_nvml
def nvmlDeviceGetUtilizationRates(handle: _Handle) -> c_nvmlUtilization_t:
    dev = _dev(handle, "nvmlDeviceGetUtilizationRates")
    _no_mig(handle)
    util = c_nvmlUtilization_t()
    util.gpu = int(dev.get("utilization", 0))
    util.memory = 0
    return util


@_nvml
def nvmlDeviceGetTotalEnergyConsumption(handle: _Handle) -> int:
    dev = _dev(handle, "nvmlDeviceGetTotalEnergyConsumption")
    if handle.mig is not None or dev.get("power_w") is None:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    since = _energy_epoch.setdefault(dev["uuid"], time.monotonic())
    return int(dev.get("energy_mj", 0) + float(dev["power_w"]) * 1000 * (time.monotonic() - since))


@_nvml
def nvmlDeviceGetMigMode(handle: _Handle) -> list[int]:
    gpu = _dev(handle, "nvmlDeviceGetMigMode")
    if handle.mig is not None:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    mode = 1 if gpu.get("mig") is not None else 0
    return [mode, mode]


@_nvml
def nvmlDeviceGetMaxMigDeviceCount(handle: _Handle) -> int:
    gpu = _dev(handle, "nvmlDeviceGetMaxMigDeviceCount")
    return int(gpu.get("max_slices", 7)) if gpu.get("mig") is not None else 0


@_nvml
def nvmlDeviceGetMigDeviceHandleByIndex(handle: _Handle, index: int) -> _Handle:
    gpu = _gpu(handle)
    migs = gpu.get("mig")
    if migs is None:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    if not 0 <= index < len(migs):
        raise NVMLError(NVML_ERROR_NOT_FOUND)
    _told("nvmlDeviceGetMigDeviceHandleByIndex", migs[index])
    return _Handle(handle.gpu, index, migs[index]["uuid"])


@_nvml
def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle: _Handle) -> _Handle:
    _dev(handle)
    return _Handle(handle.gpu)


@_nvml
def nvmlDeviceIsMigDeviceHandle(handle: _Handle) -> int:
    _dev(handle)
    return int(handle.mig is not None)


@_nvml
def nvmlDeviceGetGpuInstanceId(handle: _Handle) -> int:
    if handle.mig is None:
        _gpu(handle)
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return int(_dev(handle, "nvmlDeviceGetGpuInstanceId")["gi"])


@_nvml
def nvmlDeviceGetComputeInstanceId(handle: _Handle) -> int:
    if handle.mig is None:
        _gpu(handle)
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return int(_dev(handle, "nvmlDeviceGetComputeInstanceId").get("ci", 0))


@_nvml
def nvmlDeviceGetAttributes(handle: _Handle) -> c_nvmlDeviceAttributes:
    dev = _dev(handle, "nvmlDeviceGetAttributes")
    attrs = c_nvmlDeviceAttributes()
    full = int(_gpu(handle).get("max_slices", 7))
    slices = int(dev.get("slices", full)) if handle.mig is not None else full
    attrs.gpuInstanceSliceCount = slices
    attrs.computeInstanceSliceCount = int(dev.get("ci_slices", slices)) if handle.mig is not None else slices
    attrs.multiprocessorCount = 16 * attrs.computeInstanceSliceCount
    attrs.memorySizeMB = dev["memory_total_mib"]
    return attrs


nvmlDeviceGetAttributes_v2 = nvmlDeviceGetAttributes


def _processes(handle: _Handle, kind: str, name: str) -> list[nvmlFriendlyObject]:
    dev = _dev(handle, name)
    gi = int(dev.get("gi", NO_ID)) if handle.mig is not None else NO_ID
    ci = int(dev.get("ci", 0)) if handle.mig is not None else NO_ID
    out = []
    for p in dev.get("processes", []):
        if p.get("type", "compute") != kind:
            continue
        mem = p.get("used_memory_mib", 0)
        out.append(nvmlFriendlyObject({"pid": p["pid"], "usedGpuMemory": None if mem is None else mem * MIB,
                                       "gpuInstanceId": gi, "computeInstanceId": ci}))
    return out


@_nvml
def nvmlDeviceGetComputeRunningProcesses(handle: _Handle) -> list[nvmlFriendlyObject]:
    return _processes(handle, "compute", "nvmlDeviceGetComputeRunningProcesses")


@_nvml
def nvmlDeviceGetGraphicsRunningProcesses(handle: _Handle) -> list[nvmlFriendlyObject]:
    return _processes(handle, "graphics", "nvmlDeviceGetGraphicsRunningProcesses")


@_nvml
def nvmlDeviceGetMPSComputeRunningProcesses(handle: _Handle) -> list[nvmlFriendlyObject]:
    return _processes(handle, "mps", "nvmlDeviceGetMPSComputeRunningProcesses")


nvmlDeviceGetComputeRunningProcesses_v3 = nvmlDeviceGetComputeRunningProcesses
nvmlDeviceGetComputeRunningProcesses_v2 = nvmlDeviceGetComputeRunningProcesses
nvmlDeviceGetGraphicsRunningProcesses_v3 = nvmlDeviceGetGraphicsRunningProcesses
nvmlDeviceGetGraphicsRunningProcesses_v2 = nvmlDeviceGetGraphicsRunningProcesses
nvmlDeviceGetMPSComputeRunningProcesses_v3 = nvmlDeviceGetMPSComputeRunningProcesses
nvmlDeviceGetMPSComputeRunningProcesses_v2 = nvmlDeviceGetMPSComputeRunningProcesses


@_nvml
def nvmlDeviceGetProcessUtilization(handle: _Handle, timeStamp: int) -> list[c_nvmlProcessUtilizationSample_t]:
    """Samples taken on the driver's last tick, if newer than `timeStamp` (microseconds)."""
    dev = _dev(handle, "nvmlDeviceGetProcessUtilization")
    _no_mig(handle)
    if dev.get("process_list_grows"):
        raise NVMLError(NVML_ERROR_INSUFFICIENT_SIZE)
    period_us = int(float(dev.get("process_util_period_s", 0.2)) * 1e6)
    tick_us = int(time.time() * 1e6) // period_us * period_us
    samples = []
    for p in dev.get("processes", []):
        if p.get("sm_util") is None or tick_us <= timeStamp:
            continue
        s = c_nvmlProcessUtilizationSample_t()
        s.pid, s.timeStamp, s.smUtil = p["pid"], tick_us, int(p["sm_util"])
        samples.append(s)
    if not samples:
        raise NVMLError(NVML_ERROR_NOT_FOUND)  # NVML's answer when no sample is newer than timeStamp
    return samples


# --- GPM (Hopper and later) -----------------------------------------------------------

@_nvml
def nvmlGpmQueryDeviceSupport(handle: _Handle) -> c_nvmlGpmSupport_t:
    gpu = _dev(handle, "nvmlGpmQueryDeviceSupport")
    support = c_nvmlGpmSupport_t()
    support.version = 1
    support.isSupportedDevice = 1 if gpu.get("gpm") else 0
    return support


@_nvml
def nvmlGpmSampleAlloc() -> Any:
    sample = ctypes.pointer(struct_c_nvmlGpmSample_t())
    _gpm_samples[ctypes.addressof(sample.contents)] = None
    return sample


def nvmlGpmSampleFree(sample: Any) -> None:
    """Frees host memory: works in any session, even one a driver reload ended."""
    if _lacks("nvmlGpmSampleFree"):
        raise NVMLError(NVML_ERROR_FUNCTION_NOT_FOUND)
    if _gpm_samples.pop(ctypes.addressof(sample.contents), False) is False:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)


def _take(sample: Any, instances: list[dict[str, Any]]) -> Any:
    """GPM figures of a GPU instance: busy time is its busiest compute instance's, SM
    activity the compute instances' weighted by their slices."""
    key = ctypes.addressof(sample.contents)
    if key not in _gpm_samples:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    sm = [float(m.get("sm_activity", m.get("utilization", 0))) for m in instances]
    busy = max(float(m.get("utilization", s)) for m, s in zip(instances, sm))
    weights = [int(m.get("ci_slices", m.get("slices", 1))) for m in instances]
    slices = int(instances[0].get("slices", sum(weights)))
    _gpm_samples[key] = (time.time(), busy, sum(s * w for s, w in zip(sm, weights)) / max(slices, 1))
    return sample


@_nvml
def nvmlGpmSampleGet(handle: _Handle, sample: Any) -> Any:
    gpu = _gpu(handle)
    dev = _dev(handle, "nvmlGpmSampleGet")
    if not gpu.get("gpm"):
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return _take(sample, [dev])


@_nvml
def nvmlGpmMigSampleGet(handle: _Handle, gpuInstanceId: int, sample: Any) -> Any:
    gpu = _dev(handle, "nvmlGpmMigSampleGet")
    instances = [m for m in gpu.get("mig") or [] if int(m["gi"]) == gpuInstanceId]
    if not instances:
        raise NVMLError(NVML_ERROR_NOT_FOUND)
    _told("nvmlGpmMigSampleGet", *instances)
    if not gpu.get("gpm"):
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return _take(sample, instances)


@_nvml
def nvmlGpmMetricsGet(metrics: Any) -> Any:
    """Busy time (GRAPHICS_UTIL) and SM activity (SM_UTIL) between two samples: the
    scenario's figures at the later one; other metrics are not supported."""
    first = _gpm_samples.get(ctypes.addressof(metrics.sample1.contents))
    second = _gpm_samples.get(ctypes.addressof(metrics.sample2.contents))
    if first is None or second is None:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    figures = {NVML_GPM_METRIC_GRAPHICS_UTIL: second[1], NVML_GPM_METRIC_SM_UTIL: second[2]}
    for i in range(metrics.numMetrics):
        metric = metrics.metrics[i]
        if metric.metricId in figures:
            metric.value, metric.nvmlReturn = float(figures[metric.metricId]), 0
        else:
            metric.nvmlReturn = NVML_ERROR_NOT_SUPPORTED
    return metrics
