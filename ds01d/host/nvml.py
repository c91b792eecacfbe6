"""NVML, the only place ds01d touches NVIDIA's library (through nvidia-ml-py's `pynvml`).

Every call goes through `_query`, which turns NVML's errors into either a value
for "not supported" or a per-device error, so one failing GPU never stops the
others.  Activity comes from the best source the device has: GPM SM activity per
MIG instance (Hopper and later), utilization rates on whole GPUs, per-process
utilization where a whole GPU is shared.  Where none can tell (A100 MIG), activity
is None with the reason, never 0.
"""

from __future__ import annotations

import importlib
import os
import re
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, TypeVar

from ds01d.rules.gpu_units import GpuProcess, Inventory, Unit, UnitSample

T = TypeVar("T")
FAKE_ENV = "DS01D_FAKE_NVML"
_PROFILE = re.compile(r"(\d+g\.\d+gb)\s*$")
MIG_NO_GPM = ("MIG instance on a GPU without GPM (before Hopper): NVML cannot measure "
              "per-instance activity")


class NvmlUnavailable(Exception):
    """No NVIDIA library (or no driver): ds01d runs CPU-only."""


def import_pynvml() -> ModuleType:
    """nvidia-ml-py's pynvml, or the scenario fake when DS01D_FAKE_NVML names a file."""
    scenario = os.environ.get(FAKE_ENV)
    if scenario:
        fake = importlib.import_module("ds01d.testing.fake_pynvml")
        fake.use_scenario(scenario)
        return fake
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        raise NvmlUnavailable("nvidia-ml-py is not installed") from None


@dataclass
class _Handles:
    """What sampling needs per unit, found once at inventory time."""

    handle: Any
    parent: Any
    gpu_instance_id: int | None
    gpm: bool


@dataclass
class Nvml:
    """An initialised NVML session and its view of the devices."""

    nv: ModuleType
    clock: Callable[[], float] = time.time
    handles: dict[str, _Handles] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    _gpm_prev: dict[str, Any] = field(default_factory=dict)
    _util_ts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def open(cls, module: ModuleType | None = None) -> "Nvml":
        nv = module or import_pynvml()
        try:
            nv.nvmlInit()
        except nv.NVMLError as exc:
            raise NvmlUnavailable(f"NVML did not start: {exc}") from None
        return cls(nv)

    def close(self) -> None:
        for sample in self._gpm_prev.values():
            self._query(lambda: self.nv.nvmlGpmSampleFree(sample), None)
        self._gpm_prev.clear()
        self._query(self.nv.nvmlShutdown, None)

    def _query(self, call: Callable[[], T], not_supported: T) -> T:
        """`call()`, or `not_supported` when NVML says the device cannot answer."""
        try:
            return call()
        except self.nv.NVMLError_NotSupported:
            return not_supported

    # --- inventory ---------------------------------------------------------------

    def inventory(self) -> Inventory:
        """Every unit; a GPU that fails is left out and its error kept in `errors`."""
        nv = self.nv
        units: list[Unit] = []
        gpu_indexes: dict[str, int] = {}
        self.handles.clear()
        self.errors.clear()
        for index in range(nv.nvmlDeviceGetCount()):
            try:
                gpu_uuid, gpu_units = self._gpu(index)
            except nv.NVMLError as exc:
                self.errors[f"GPU {index}"] = str(exc)
                continue
            gpu_indexes[gpu_uuid] = index
            units.extend(gpu_units)
        driver = self._query(nv.nvmlSystemGetDriverVersion, None)
        return Inventory(tuple(units), gpu_indexes, driver)

    def _gpu(self, index: int) -> tuple[str, list[Unit]]:
        nv = self.nv
        handle = nv.nvmlDeviceGetHandleByIndex(index)
        uuid, name = nv.nvmlDeviceGetUUID(handle), nv.nvmlDeviceGetName(handle)
        mig_on = self._query(lambda: nv.nvmlDeviceGetMigMode(handle)[0], 0) == nv.NVML_DEVICE_MIG_ENABLE
        if not mig_on:
            total = nv.nvmlDeviceGetMemoryInfo(handle).total
            self.handles[uuid] = _Handles(handle, handle, None, False)
            return uuid, [Unit(uuid, str(index), name, uuid, index, 1.0, total)]
        gpm = bool(self._query(lambda: nv.nvmlGpmQueryDeviceSupport(handle).isSupportedDevice, 0))
        slots = nv.nvmlDeviceGetMaxMigDeviceCount(handle)
        units = []
        for slot in range(slots):
            unit = self._mig(handle, index, uuid, slot, slots, gpm)
            if unit is not None:
                units.append(unit)
        return uuid, units

    def _mig(self, parent: Any, gpu_index: int, gpu_uuid: str, slot: int, slots: int, gpm: bool) -> Unit | None:
        nv = self.nv
        try:
            handle = nv.nvmlDeviceGetMigDeviceHandleByIndex(parent, slot)
        except nv.NVMLError_NotFound:
            return None
        try:
            uuid, name = nv.nvmlDeviceGetUUID(handle), nv.nvmlDeviceGetName(handle)
            attrs = nv.nvmlDeviceGetAttributes(handle)
            gi, ci = nv.nvmlDeviceGetGpuInstanceId(handle), nv.nvmlDeviceGetComputeInstanceId(handle)
            total = nv.nvmlDeviceGetMemoryInfo(handle).total
        except nv.NVMLError as exc:
            self.errors[f"MIG {gpu_index}:{slot}"] = str(exc)
            return None
        m = _PROFILE.search(name)
        profile = m.group(1) if m else f"{attrs.gpuInstanceSliceCount}g.{round(attrs.memorySizeMB / 1024)}gb"
        self.handles[uuid] = _Handles(handle, parent, gi, gpm)
        share = attrs.gpuInstanceSliceCount / max(slots, 1)
        return Unit(uuid, f"{gpu_index}:{slot}", name, gpu_uuid, gpu_index, round(share, 6), total,
                    profile, gi, ci)

    # --- sampling ------------------------------------------------------------------

    def sample(self, inventory: Inventory) -> list[UnitSample]:
        """Memory, processes and activity of every unit; a failing unit gets an error sample."""
        out = []
        for unit in inventory.units:
            try:
                out.append(self._sample_unit(unit))
            except self.nv.NVMLError as exc:
                out.append(UnitSample(unit.uuid, None, None, None, f"NVML error: {exc}", error=str(exc)))
        return out

    def _sample_unit(self, unit: Unit) -> UnitSample:
        nv, h = self.nv, self.handles[unit.uuid]
        used = nv.nvmlDeviceGetMemoryInfo(h.handle).used
        procs = [(p.pid, p.usedGpuMemory) for p in nv.nvmlDeviceGetComputeRunningProcesses(h.handle)]
        if unit.is_mig:
            activity, source, reason = self._mig_activity(unit, h)
            per_process: dict[int, float] = {}
        else:
            activity = float(nv.nvmlDeviceGetUtilizationRates(h.handle).gpu)
            source, reason = "utilization", None
            per_process = self._process_utilization(unit, h, [pid for pid, _ in procs]) if len(procs) > 1 else {}
        processes = tuple(GpuProcess(pid, mem, per_process.get(pid) if per_process else None) for pid, mem in procs)
        return UnitSample(unit.uuid, used, activity, source, reason, processes)

    def _mig_activity(self, unit: Unit, h: _Handles) -> tuple[float | None, str | None, str | None]:
        if not h.gpm:
            return None, None, MIG_NO_GPM
        nv = self.nv
        sample = nv.nvmlGpmSampleAlloc()
        nv.nvmlGpmMigSampleGet(h.parent, h.gpu_instance_id, sample)
        previous = self._gpm_prev.get(unit.uuid)
        self._gpm_prev[unit.uuid] = sample
        if previous is None:
            return None, None, "first GPM sample; activity is known from the next pass"
        try:
            metrics = nv.c_nvmlGpmMetricsGet_t()
            metrics.version = nv.NVML_GPM_METRICS_GET_VERSION
            metrics.numMetrics = 1
            metrics.sample1, metrics.sample2 = previous, sample
            metrics.metrics[0].metricId = nv.NVML_GPM_METRIC_SM_UTIL
            nv.nvmlGpmMetricsGet(metrics)
        finally:
            nv.nvmlGpmSampleFree(previous)
        if metrics.metrics[0].nvmlReturn != 0:
            return None, None, f"GPM SM activity not available (NVML return {metrics.metrics[0].nvmlReturn})"
        return float(metrics.metrics[0].value), "gpm", None

    def _process_utilization(self, unit: Unit, h: _Handles, pids: list[int]) -> dict[int, float]:
        """SM utilization per PID since the last pass; a PID without samples did not compute."""
        nv = self.nv
        since = self._util_ts.get(unit.uuid, int((self.clock() - 60) * 1e6))
        self._util_ts[unit.uuid] = int(self.clock() * 1e6)
        util = {pid: 0.0 for pid in pids}
        try:
            samples = nv.nvmlDeviceGetProcessUtilization(h.handle, since)
        except nv.NVMLError_NotFound:
            return util
        except nv.NVMLError_NotSupported:
            return {}
        for s in samples:
            util[s.pid] = max(util.get(s.pid, 0.0), float(s.smUtil))
        return util
