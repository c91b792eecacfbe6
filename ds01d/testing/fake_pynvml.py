"""A scenario-driven stand-in for nvidia-ml-py's `pynvml`, for tests and the demo.

Same function names, return shapes (the real module's ctypes structures and
friendly objects) and NVMLError classes as nvidia-ml-py, so ds01d's NVML adapter
runs unchanged against it.  MIG devices answer NOT_SUPPORTED where real ones do
(utilization rates, per-process utilization); GPM works only on GPUs the scenario
marks `gpm: true`, as on Hopper and later.

The scenario is a JSON file, re-read whenever it changes, so a test can turn a busy
GPU idle under a running daemon:

    {"driver": "550.54.15",
     "gpus": [{"uuid": "GPU-...", "name": "NVIDIA H100 80GB HBM3", "memory_total_mib": 81559,
               "memory_used_mib": 1024, "utilization": 37, "gpm": true, "fail": null,
               "processes": [{"pid": 4242, "used_memory_mib": 1000, "sm_util": 37}],
               "mig": [{"uuid": "MIG-...", "gi": 1, "ci": 0, "slices": 3, "memory_total_mib": 40192,
                        "memory_used_mib": 0, "sm_activity": 12, "processes": []}]}]}

`mig` present means MIG mode is on for that GPU.  `fail`, a string, makes every
call on that GPU raise NVMLError_GpuIsLost.  ds01d uses this module only when the
environment variable DS01D_FAKE_NVML names a scenario file.
"""

from __future__ import annotations

import ctypes
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import pynvml as _real
from pynvml import *  # noqa: F401,F403  constants, structures and NVMLError classes, as the real module has them
from pynvml import (NVML_ERROR_GPU_IS_LOST, NVML_ERROR_INVALID_ARGUMENT, NVML_ERROR_NOT_FOUND,
                    NVML_ERROR_NOT_SUPPORTED, NVML_ERROR_UNINITIALIZED, NVML_GPM_METRIC_SM_UTIL, NVMLError,
                    c_nvmlDeviceAttributes, c_nvmlGpmSupport_t, c_nvmlMemory_t, c_nvmlProcessUtilizationSample_t,
                    c_nvmlUtilization_t, nvmlFriendlyObject, struct_c_nvmlGpmSample_t)

MIB = 1024 * 1024
_scenario_path: str | None = os.environ.get("DS01D_FAKE_NVML")
_cache: tuple[float, dict[str, Any]] | None = None
_initialized = False
_gpm_samples: dict[int, tuple[float, float]] = {}   # sample address -> (time, SM activity then)


@dataclass(frozen=True)
class _Handle:
    gpu: int
    mig: int | None = None


def use_scenario(path: str | None) -> None:
    global _scenario_path, _cache
    _scenario_path, _cache = path, None


def _scenario() -> dict[str, Any]:
    global _cache
    if _scenario_path is None:
        raise NVMLError(_real.NVML_ERROR_LIBRARY_NOT_FOUND)
    mtime = os.stat(_scenario_path).st_mtime
    if _cache is None or _cache[0] != mtime:
        with open(_scenario_path, encoding="utf-8") as f:
            _cache = (mtime, json.load(f))
    return _cache[1]


def _check() -> None:
    if not _initialized:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)


def _gpu(handle: _Handle) -> dict[str, Any]:
    _check()
    gpus = _scenario()["gpus"]
    if not isinstance(handle, _Handle) or handle.gpu >= len(gpus):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    gpu = gpus[handle.gpu]
    if gpu.get("fail"):
        raise NVMLError(NVML_ERROR_GPU_IS_LOST)
    return gpu


def _dev(handle: _Handle) -> dict[str, Any]:
    gpu = _gpu(handle)
    if handle.mig is None:
        return gpu
    migs = gpu.get("mig") or []
    if handle.mig >= len(migs):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return migs[handle.mig]


def _no_mig(handle: _Handle) -> None:
    if handle.mig is not None:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)


# --- library ------------------------------------------------------------------

def nvmlInit() -> None:
    global _initialized
    _scenario()
    _initialized = True


def nvmlInitWithFlags(flags: int) -> None:
    nvmlInit()


def nvmlShutdown() -> None:
    global _initialized
    _check()
    _initialized = False


def nvmlSystemGetDriverVersion() -> str:
    _check()
    return _scenario().get("driver", "550.54.15")


# --- devices --------------------------------------------------------------------

def nvmlDeviceGetCount() -> int:
    _check()
    return len(_scenario()["gpus"])


def nvmlDeviceGetHandleByIndex(index: int) -> _Handle:
    _check()
    if not 0 <= index < len(_scenario()["gpus"]):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return _Handle(index)


def nvmlDeviceGetIndex(handle: _Handle) -> int:
    _gpu(handle)
    _no_mig(handle)
    return handle.gpu


def nvmlDeviceGetUUID(handle: _Handle) -> str:
    return _dev(handle)["uuid"]


def nvmlDeviceGetName(handle: _Handle) -> str:
    gpu = _gpu(handle)
    if handle.mig is None:
        return gpu["name"]
    mig = _dev(handle)
    return f"{gpu['name']} MIG {mig['slices']}g.{round(mig['memory_total_mib'] / 1024)}gb"


def nvmlDeviceGetMemoryInfo(handle: _Handle, version: Any = None) -> c_nvmlMemory_t:
    dev = _dev(handle)
    mem = c_nvmlMemory_t()
    mem.total = dev["memory_total_mib"] * MIB
    mem.used = dev.get("memory_used_mib", 0) * MIB
    mem.free = mem.total - mem.used
    return mem


def nvmlDeviceGetUtilizationRates(handle: _Handle) -> c_nvmlUtilization_t:
    dev = _dev(handle)
    _no_mig(handle)
    util = c_nvmlUtilization_t()
    util.gpu = int(dev.get("utilization", 0))
    util.memory = 0
    return util


def nvmlDeviceGetMigMode(handle: _Handle) -> list[int]:
    gpu = _gpu(handle)
    _no_mig(handle)
    mode = 1 if gpu.get("mig") is not None else 0
    return [mode, mode]


def nvmlDeviceGetMaxMigDeviceCount(handle: _Handle) -> int:
    gpu = _gpu(handle)
    return 7 if gpu.get("mig") is not None else 0


def nvmlDeviceGetMigDeviceHandleByIndex(handle: _Handle, index: int) -> _Handle:
    gpu = _gpu(handle)
    migs = gpu.get("mig")
    if migs is None:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    if not 0 <= index < len(migs):
        raise NVMLError(NVML_ERROR_NOT_FOUND)
    return _Handle(handle.gpu, index)


def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle: _Handle) -> _Handle:
    _dev(handle)
    return _Handle(handle.gpu)


def nvmlDeviceIsMigDeviceHandle(handle: _Handle) -> int:
    _dev(handle)
    return int(handle.mig is not None)


def nvmlDeviceGetGpuInstanceId(handle: _Handle) -> int:
    if handle.mig is None:
        _gpu(handle)
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return int(_dev(handle)["gi"])


def nvmlDeviceGetComputeInstanceId(handle: _Handle) -> int:
    if handle.mig is None:
        _gpu(handle)
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return int(_dev(handle).get("ci", 0))


def nvmlDeviceGetAttributes(handle: _Handle) -> c_nvmlDeviceAttributes:
    dev = _dev(handle)
    attrs = c_nvmlDeviceAttributes()
    slices = int(dev.get("slices", 7)) if handle.mig is not None else 7
    attrs.gpuInstanceSliceCount = slices
    attrs.computeInstanceSliceCount = slices
    attrs.multiprocessorCount = 16 * slices
    attrs.memorySizeMB = dev["memory_total_mib"]
    return attrs


nvmlDeviceGetAttributes_v2 = nvmlDeviceGetAttributes


def nvmlDeviceGetComputeRunningProcesses(handle: _Handle) -> list[nvmlFriendlyObject]:
    dev = _dev(handle)
    gi = dev.get("gi", 0xFFFFFFFF) if handle.mig is not None else 0xFFFFFFFF
    return [nvmlFriendlyObject({"pid": p["pid"], "usedGpuMemory": p.get("used_memory_mib", 0) * MIB,
                                "gpuInstanceId": gi, "computeInstanceId": dev.get("ci", 0xFFFFFFFF)})
            for p in dev.get("processes", [])]


nvmlDeviceGetComputeRunningProcesses_v3 = nvmlDeviceGetComputeRunningProcesses
nvmlDeviceGetComputeRunningProcesses_v2 = nvmlDeviceGetComputeRunningProcesses


def nvmlDeviceGetProcessUtilization(handle: _Handle, timeStamp: int) -> list[c_nvmlProcessUtilizationSample_t]:
    dev = _dev(handle)
    _no_mig(handle)
    now_us = int(time.time() * 1e6)
    samples = []
    for p in dev.get("processes", []):
        if p.get("sm_util") is None:
            continue
        s = c_nvmlProcessUtilizationSample_t()
        s.pid, s.timeStamp, s.smUtil = p["pid"], now_us, int(p["sm_util"])
        samples.append(s)
    if not samples:
        raise NVMLError(NVML_ERROR_NOT_FOUND)  # NVML's answer when no sample is newer than timeStamp
    return samples


# --- GPM (Hopper and later) -----------------------------------------------------------

def nvmlGpmQueryDeviceSupport(handle: _Handle) -> c_nvmlGpmSupport_t:
    gpu = _gpu(handle)
    support = c_nvmlGpmSupport_t()
    support.version = 1
    support.isSupportedDevice = 1 if gpu.get("gpm") else 0
    return support


def nvmlGpmSampleAlloc() -> Any:
    _check()
    return ctypes.pointer(struct_c_nvmlGpmSample_t())


def nvmlGpmSampleFree(sample: Any) -> None:
    _gpm_samples.pop(ctypes.addressof(sample.contents), None)


def _gpm_sample(gpu: dict[str, Any], dev: dict[str, Any], sample: Any) -> Any:
    if not gpu.get("gpm"):
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    activity = dev.get("sm_activity", dev.get("utilization", 0))
    _gpm_samples[ctypes.addressof(sample.contents)] = (time.time(), activity)
    return sample


def nvmlGpmSampleGet(handle: _Handle, sample: Any) -> Any:
    return _gpm_sample(_gpu(handle), _dev(handle), sample)


def nvmlGpmMigSampleGet(handle: _Handle, gpuInstanceId: int, sample: Any) -> Any:
    gpu = _gpu(handle)
    for mig in gpu.get("mig") or []:
        if int(mig["gi"]) == gpuInstanceId:
            return _gpm_sample(gpu, mig, sample)
    raise NVMLError(NVML_ERROR_NOT_FOUND)


def nvmlGpmMetricsGet(metrics: Any) -> Any:
    """SM utilization between two samples: the scenario's activity at the later one."""
    _check()
    first = _gpm_samples.get(ctypes.addressof(metrics.sample1.contents))
    second = _gpm_samples.get(ctypes.addressof(metrics.sample2.contents))
    if first is None or second is None:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    for i in range(metrics.numMetrics):
        metric = metrics.metrics[i]
        if metric.metricId == NVML_GPM_METRIC_SM_UTIL:
            metric.value, metric.nvmlReturn = float(second[1]), 0
        else:
            metric.nvmlReturn = NVML_ERROR_NOT_SUPPORTED
    return metrics
