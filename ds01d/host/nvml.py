"""NVML, the only place ds01d touches NVIDIA's library (through nvidia-ml-py's `pynvml`).

Every call that can fail is caught on its own (`NVMLError`, the base of all of
pynvml's errors): the device stays, and what that call would have told becomes
*unknown* with the reason, never 0 % and never "no process".  A GPU that stops
answering keeps its units in the inventory, as unknown, so its containers are not
judged idle for having no GPU.  Errors that mean the NVML session itself is gone
(a lost GPU, a driver reload) re-initialise NVML with backoff and re-read the
inventory; a MIG handle that went stale (instances destroyed and created) re-reads
the inventory at the next pass.

Activity is the share of time a kernel ran, measured where the device can tell:
`utilization.gpu` on whole GPUs, GPM GRAPHICS_UTIL per MIG GPU instance (Hopper
and later; the time-based metric, so the same threshold means the same on both),
per-process SM utilization where several containers share a whole GPU.  Where none
can tell (A100 MIG), activity is None with the reason.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, TypeVar

from ds01d.rules.gpu_units import GPM_BUSY, UTILIZATION, GpuProcess, Inventory, Unit, UnitSample

T = TypeVar("T")
FAKE_ENV = "DS01D_FAKE_NVML"
_PROFILE = re.compile(r"((?:\d+c\.)?\d+g\.\d+gb)\s*$")
MIG_NO_GPM = ("MIG instance on a GPU without GPM (before Hopper): NVML cannot measure "
              "per-instance activity")
FIRST_GPM = "first GPM sample; activity is known from the next pass"
#: Errors after which only a new NVML session can answer (the GPU or the driver went away).
SESSION_ERRORS = ("GPU_IS_LOST", "UNINITIALIZED", "DRIVER_NOT_LOADED", "RESET_REQUIRED",
                  "LIB_RM_VERSION_MISMATCH", "UNKNOWN")
#: Errors of a MIG handle whose instance was destroyed or recreated since the inventory.
STALE_HANDLE_ERRORS = ("INVALID_ARGUMENT", "NOT_FOUND")
#: Where a process can be listed: NVML lists compute, graphics and MPS clients separately.
PROCESS_LISTS = (("compute", "nvmlDeviceGetComputeRunningProcesses"),
                 ("graphics", "nvmlDeviceGetGraphicsRunningProcesses"),
                 ("MPS", "nvmlDeviceGetMPSComputeRunningProcesses"))
REOPEN_FIRST, REOPEN_MAX = 5.0, 300.0     # seconds between attempts to start NVML again, doubling
#: Errors of nvmlInit at ds01d's start that the host may get over without a restart of ds01d (the
#: kernel module loads after ds01d at boot, a GPU being reset); any other means a CPU-only host.
START_AGAIN_ERRORS = ("DRIVER_NOT_LOADED", "GPU_IS_LOST", "RESET_REQUIRED", "UNKNOWN")


class NvmlUnavailable(Exception):
    """No NVIDIA library (or no driver): ds01d runs CPU-only."""


class NvmlHung(Exception):
    """NVML did not answer in time (a GPU falling off the bus can hold a call for long):
    what it would have said is unknown; str(exc) says since when."""


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
    no_gpm: str | None            # why GPM cannot measure this MIG unit; None when it can


@dataclass
class Nvml:
    """An initialised NVML session and its view of the devices."""

    nv: ModuleType
    clock: Callable[[], float] = time.time
    handles: dict[str, _Handles] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)       # inventory problems: "GPU 2" -> reason
    lost: dict[str, str] = field(default_factory=dict)         # unit uuid -> why it cannot be read now
    events: list[str] = field(default_factory=list)            # re-initialisations, for the journal
    _gpm_prev: dict[tuple[str, int | None], Any] = field(default_factory=dict)
    _util_seen: dict[str, int] = field(default_factory=dict)
    _broken: str | None = None        # a session error seen: NVML must start again
    _stale = False                    # a MIG handle went stale: the inventory must be read again
    _reopen_at = 0.0
    _reopen_wait = REOPEN_FIRST

    @classmethod
    def open(cls, module: ModuleType | None = None, clock: Callable[[], float] = time.time) -> "Nvml":
        """A session; one not started yet (tried again with backoff, like a lost one) where the
        driver is only not loaded yet; NvmlUnavailable where the host has no NVIDIA driver."""
        nv = module or import_pynvml()
        try:
            nv.nvmlInit()
        except nv.NVMLError as exc:
            if getattr(exc, "value", None) not in {getattr(nv, f"NVML_ERROR_{n}", None) for n in START_AGAIN_ERRORS}:
                raise NvmlUnavailable(f"NVML did not start: {exc}") from None
            session = cls(nv, clock)
            session._broken = f"NVML did not start: {exc}"
            session._back_off()
            session.events.append(f"NVML did not start: {exc}; trying again in {REOPEN_FIRST:.0f}s, "
                                  "then less and less often")
            return session
        return cls(nv, clock)

    def close(self) -> None:
        self._free_gpm(set(self._gpm_prev))
        self._ask(self.nv.nvmlShutdown)

    def _ask(self, call: Callable[[], T]) -> T | None:
        """`call()`, or None when NVML raises (noted for recovery)."""
        try:
            return call()
        except self.nv.NVMLError as exc:
            self._note(exc)
            return None

    def _code(self, name: str) -> int | None:
        return getattr(self.nv, f"NVML_ERROR_{name}", None)

    def _note(self, exc: Exception) -> None:
        """Remember what an error means for the session: start again, or read the inventory again."""
        value = getattr(exc, "value", None)
        if value in {self._code(n) for n in SESSION_ERRORS}:
            self._broken = self._broken or str(exc)
        elif value in {self._code(n) for n in STALE_HANDLE_ERRORS}:
            self._stale = True

    # --- recovery ------------------------------------------------------------------

    def refresh(self, inventory: Inventory, due: bool) -> Inventory:
        """The inventory for this pass: NVML started again after a session error (with backoff),
        re-read when a MIG handle went stale or when `due`, else `inventory` as it was."""
        if self._broken and self.clock() >= self._reopen_at:
            return self._reopen(inventory)
        if self._stale or due:
            self._stale = False
            return self.inventory(inventory)
        return inventory

    def _reopen(self, inventory: Inventory) -> Inventory:
        self._free_gpm(set(self._gpm_prev))
        self._util_seen.clear()
        try:
            self.nv.nvmlShutdown()
        except self.nv.NVMLError:
            pass  # a session already gone cannot be shut down
        why, self._broken = self._broken, None
        try:
            self.nv.nvmlInit()
        except self.nv.NVMLError as exc:
            self._broken = str(exc)
            self._back_off()
            self.events.append(f"NVML did not start again after '{why}': {exc}; "
                               f"next try in {self._reopen_wait / 2:.0f}s")
            self.lost = {u.uuid: f"NVML is not running: {exc}" for u in inventory.units}
            self.handles.clear()
            return inventory
        fresh = self.inventory(inventory)
        self.events.append(f"NVML started again after '{why}': {len(fresh.units)} units, "
                           f"{len(self.lost)} of them unreadable")
        if self._broken:
            self._back_off()
        return fresh

    def _back_off(self) -> None:
        self._reopen_at = self.clock() + self._reopen_wait
        self._reopen_wait = min(self._reopen_wait * 2, REOPEN_MAX)

    # --- inventory ---------------------------------------------------------------

    def inventory(self, previous: Inventory | None = None) -> Inventory:
        """Every unit NVML lists now; the units of a GPU or MIG instance that fails to answer are
        kept from `previous` (as unreadable, in `lost`) and its error kept in `errors`."""
        nv, previous = self.nv, previous or Inventory()
        units: list[Unit] = []
        gpu_indexes: dict[str, int] = {}
        self.handles.clear()
        self.errors.clear()
        count = self._ask(nv.nvmlDeviceGetCount)
        if count is None:
            self.errors["GPUs"] = "NVML cannot count the GPUs"
        for index in range(count or 0):
            try:
                gpu_uuid, gpu_units = self._gpu(index)
            except nv.NVMLError as exc:
                self._note(exc)
                self.errors[f"GPU {index}"] = str(exc)
                continue
            gpu_indexes[gpu_uuid] = index
            units.extend(gpu_units)
        kept = self._kept(previous, units)
        gpu_indexes.update({u.gpu_uuid: u.gpu_index for u in kept})
        self.lost = {u.uuid: self._why_lost(u) for u in kept}
        self._free_gpm(set(self._gpm_prev) - {u.share_key for u in units})
        driver = self._ask(nv.nvmlSystemGetDriverVersion) or previous.driver
        return Inventory(tuple(sorted(units + kept, key=_order)), gpu_indexes, driver)

    def _kept(self, previous: Inventory, units: list[Unit]) -> list[Unit]:
        """Units of the previous inventory that failed to answer now (not those that are gone:
        a MIG instance destroyed on a GPU that answers)."""
        seen = {u.uuid for u in units}
        return [u for u in previous.units if u.uuid not in seen and self._why_lost(u)]

    def _why_lost(self, unit: Unit) -> str | None:
        if "GPUs" in self.errors:
            return self.errors["GPUs"]
        return self.errors.get(f"GPU {unit.gpu_index}") or self.errors.get(f"MIG {unit.index}")

    def _gpu(self, index: int) -> tuple[str, list[Unit]]:
        nv = self.nv
        handle = nv.nvmlDeviceGetHandleByIndex(index)
        uuid, name = nv.nvmlDeviceGetUUID(handle), nv.nvmlDeviceGetName(handle)
        mig_on = self._mig_mode(handle) == nv.NVML_DEVICE_MIG_ENABLE
        if not mig_on:
            total = nv.nvmlDeviceGetMemoryInfo(handle).total
            self.handles[uuid] = _Handles(handle, handle, None, None)
            return uuid, [Unit(uuid, str(index), name, uuid, index, 1.0, total)]
        no_gpm = self._gpm_support(handle)
        slots = nv.nvmlDeviceGetMaxMigDeviceCount(handle)
        units = []
        for slot in range(slots):
            unit = self._mig(handle, index, uuid, slot, slots, no_gpm)
            if unit is not None:
                units.append(unit)
        return uuid, units

    def _mig_mode(self, handle: Any) -> int:
        try:
            return self.nv.nvmlDeviceGetMigMode(handle)[0]
        except (self.nv.NVMLError_NotSupported, self.nv.NVMLError_FunctionNotFound):
            return 0   # a GPU (or a driver) without MIG

    def _gpm_support(self, handle: Any) -> str | None:
        """Why GPM cannot measure this GPU's MIG instances, or None when it can."""
        try:
            supported = self.nv.nvmlGpmQueryDeviceSupport(handle).isSupportedDevice
        except self.nv.NVMLError_FunctionNotFound:
            return "this NVIDIA driver has no GPM (Function Not Found): NVML cannot measure per-instance activity"
        except self.nv.NVMLError_NotSupported:
            return MIG_NO_GPM
        except self.nv.NVMLError as exc:
            self._note(exc)
            return f"GPM support query failed: {exc}"
        return None if supported else MIG_NO_GPM

    def _mig(self, parent: Any, gpu_index: int, gpu_uuid: str, slot: int, slots: int,
             no_gpm: str | None) -> Unit | None:
        nv = self.nv
        try:
            handle = nv.nvmlDeviceGetMigDeviceHandleByIndex(parent, slot)
        except nv.NVMLError_NotFound:
            return None
        except nv.NVMLError as exc:
            self._note(exc)
            self.errors[f"MIG {gpu_index}:{slot}"] = str(exc)
            return None
        try:
            uuid, name = nv.nvmlDeviceGetUUID(handle), nv.nvmlDeviceGetName(handle)
            attrs = nv.nvmlDeviceGetAttributes(handle)
            gi, ci = nv.nvmlDeviceGetGpuInstanceId(handle), nv.nvmlDeviceGetComputeInstanceId(handle)
            total = nv.nvmlDeviceGetMemoryInfo(handle).total
        except nv.NVMLError as exc:
            self._note(exc)
            self.errors[f"MIG {gpu_index}:{slot}"] = str(exc)
            return None
        m = _PROFILE.search(name)
        profile = m.group(1) if m else f"{attrs.gpuInstanceSliceCount}g.{round(attrs.memorySizeMB / 1024)}gb"
        self.handles[uuid] = _Handles(handle, parent, gi, no_gpm)
        # The GPU instance's share: its compute instances split it (gpu_equivalents counts it once).
        share = attrs.gpuInstanceSliceCount / max(slots, 1)
        return Unit(uuid, f"{gpu_index}:{slot}", name, gpu_uuid, gpu_index, round(share, 6), total,
                    profile, gi, ci)

    # --- sampling ------------------------------------------------------------------

    def sample(self, inventory: Inventory) -> list[UnitSample]:
        """Memory, processes and activity of every unit; what could not be read is unknown, with why.
        GPM is read once per GPU instance, and each compute instance's sample names the processes
        of its siblings, whose work the GPU instance's activity includes."""
        gpm: dict[tuple[str, int | None], tuple[float | None, str | None, str | None]] = {}
        samples = {unit.uuid: self._sample_unit(unit, gpm) for unit in inventory.units}
        siblings: dict[tuple[str, int | None], list[Unit]] = {}
        for unit in inventory.units:
            if unit.is_mig:
                siblings.setdefault(unit.share_key, []).append(unit)
        for group in siblings.values():
            for unit in group if len(group) > 1 else ():
                shared = tuple(p for other in group if other is not unit for p in samples[other.uuid].processes)
                samples[unit.uuid] = dataclasses.replace(samples[unit.uuid], shared_with=shared)
        if not self._broken:
            self._reopen_wait = REOPEN_FIRST
        return list(samples.values())

    def energy(self, inventory: Inventory) -> dict[str, int | None]:
        """Each physical GPU's total-energy counter (millijoules since the driver loaded), by GPU
        uuid; None where the GPU has none (before Volta, some boards) or it cannot be read."""
        out: dict[str, int | None] = {}
        for unit in inventory.units:
            h = self.handles.get(unit.uuid)
            if unit.gpu_uuid in out and out[unit.gpu_uuid] is not None:
                continue
            out[unit.gpu_uuid] = None if h is None else self._energy(h.parent)
        return out

    def _energy(self, handle: Any) -> int | None:
        try:
            return int(self.nv.nvmlDeviceGetTotalEnergyConsumption(handle))
        except self.nv.NVMLError as exc:
            self._note(exc)
            return None
        except AttributeError:          # a pynvml without the function: no counter either
            return None

    def _sample_unit(self, unit: Unit, gpm: dict) -> UnitSample:
        h = self.handles.get(unit.uuid)
        if h is None:
            why = self.lost.get(unit.uuid) or "not in NVML's inventory"
            return UnitSample(unit.uuid, None, None, None, f"NVML error: {why}", error=why, process_gap=why)
        nv, memory, error = self.nv, None, None
        try:
            memory = nv.nvmlDeviceGetMemoryInfo(h.handle).used
        except nv.NVMLError as exc:
            self._note(exc)
            error = f"memory: {exc}"
        procs, gap = self._processes(h.handle)
        if unit.is_mig:
            if unit.share_key not in gpm:
                gpm[unit.share_key] = self._gpm_activity(unit, h)
            activity, source, reason = gpm[unit.share_key]
            per_process: dict[int, float | None] = {}
        else:
            activity, source, reason = self._utilization(h)
            per_process = self._process_utilization(unit, h, list(procs)) if len(procs) > 1 else {}
        processes = tuple(GpuProcess(pid, mem, per_process.get(pid)) for pid, mem in procs.items())
        return UnitSample(unit.uuid, memory, activity, source, reason, processes, error, gap)

    def _processes(self, handle: Any) -> tuple[dict[int, int | None], str | None]:
        """PID -> used memory (None where NVML cannot tell) over the compute, graphics and MPS
        lists, and which lists could not be read (then a missing PID proves nothing)."""
        found: dict[int, int | None] = {}
        gaps = []
        for kind, function in PROCESS_LISTS:
            try:
                listed = getattr(self.nv, function)(handle)
            except self.nv.NVMLError_NotSupported:
                if kind == "compute":
                    gaps.append("compute processes: Not Supported")
                continue  # graphics or MPS clients cannot run on this device
            except self.nv.NVMLError as exc:
                self._note(exc)
                gaps.append(f"{kind} processes: {exc}")
                continue
            for p in listed:
                if found.get(p.pid) is None:
                    found[p.pid] = p.usedGpuMemory
        return found, "; ".join(gaps) or None

    def _utilization(self, h: _Handles) -> tuple[float | None, str | None, str | None]:
        try:
            return float(self.nv.nvmlDeviceGetUtilizationRates(h.handle).gpu), UTILIZATION, None
        except self.nv.NVMLError as exc:
            self._note(exc)
            return None, None, f"utilization.gpu: {exc}"

    def _gpm_activity(self, unit: Unit, h: _Handles) -> tuple[float | None, str | None, str | None]:
        """GRAPHICS_UTIL of the unit's GPU instance between the previous pass's GPM sample and now."""
        if h.no_gpm:
            return None, None, h.no_gpm
        nv, key = self.nv, unit.share_key
        sample = self._ask(nv.nvmlGpmSampleAlloc)
        if sample is None:
            return None, None, "GPM sample could not be allocated"
        try:
            nv.nvmlGpmMigSampleGet(h.parent, h.gpu_instance_id, sample)
        except nv.NVMLError as exc:
            self._note(exc)
            self._ask(lambda: nv.nvmlGpmSampleFree(sample))
            self._free_gpm({key})  # the next reading needs two fresh samples
            return None, None, f"GPM sample: {exc}"
        previous = self._gpm_prev.get(key)
        self._gpm_prev[key] = sample
        if previous is None:
            return None, None, FIRST_GPM
        try:
            value = self._gpm_metric(previous, sample, nv.NVML_GPM_METRIC_GRAPHICS_UTIL)
        finally:
            self._ask(lambda: nv.nvmlGpmSampleFree(previous))
        if isinstance(value, str):
            return None, None, value
        return value, GPM_BUSY, None

    def _gpm_metric(self, first: Any, second: Any, metric_id: int) -> float | str:
        """One GPM metric between two samples, or why it is not known."""
        nv = self.nv
        metrics = nv.c_nvmlGpmMetricsGet_t()
        metrics.version = nv.NVML_GPM_METRICS_GET_VERSION
        metrics.numMetrics = 1
        metrics.sample1, metrics.sample2 = first, second
        metrics.metrics[0].metricId = metric_id
        try:
            nv.nvmlGpmMetricsGet(metrics)
        except nv.NVMLError as exc:
            self._note(exc)
            return f"GPM GRAPHICS_UTIL: {exc}"
        if metrics.metrics[0].nvmlReturn != 0:
            return f"GPM GRAPHICS_UTIL not available (NVML return {metrics.metrics[0].nvmlReturn})"
        return float(metrics.metrics[0].value)

    def _free_gpm(self, keys: set) -> None:
        for key in keys:
            sample = self._gpm_prev.pop(key, None)
            if sample is not None:
                self._ask(lambda: self.nv.nvmlGpmSampleFree(sample))

    def _process_utilization(self, unit: Unit, h: _Handles, pids: list[int]) -> dict[int, float | None]:
        """SM utilization per PID from NVML's samples newer than the last one seen (NVML's own
        timestamps).  No new sample at all (NOT_FOUND) tells nothing about anyone: unknown.  A PID
        missing from an answer that has samples did not compute meanwhile: 0."""
        nv = self.nv
        samples = None
        for _ in range(2):  # INSUFFICIENT_SIZE: the list grew between pynvml's two calls; ask again
            try:
                samples = nv.nvmlDeviceGetProcessUtilization(h.handle, self._util_seen.get(unit.uuid, 0))
                break
            except nv.NVMLError_InsufficientSize:
                continue
            except (nv.NVMLError_NotFound, nv.NVMLError_NotSupported):
                return {}
            except nv.NVMLError as exc:
                self._note(exc)
                return {}
        if not samples:
            return {}
        self._util_seen[unit.uuid] = max(s.timeStamp for s in samples)
        util: dict[int, float | None] = {pid: 0.0 for pid in pids}
        for s in samples:
            if s.pid in util:
                util[s.pid] = max(util[s.pid] or 0.0, float(s.smUtil))
        return util


def _order(unit: Unit) -> tuple[int, int]:
    return unit.gpu_index, int(unit.index.split(":")[1]) if ":" in unit.index else -1
