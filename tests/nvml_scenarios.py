"""Scenario files for the fake pynvml: whole GPUs, MIG-partitioned GPUs with and without GPM."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def gpu_uuid(i: int) -> str:
    return f"GPU-{i:08d}-0000-4000-8000-00000000000{i % 10}"


def mig_uuid(i: int, slot: int) -> str:
    return f"MIG-{i:08d}-{slot:04d}-4000-8000-000000000000"


def whole_gpu(i: int, utilization: int = 0, processes: list[dict] | None = None, **extra: Any) -> dict:
    return {"uuid": gpu_uuid(i), "name": "NVIDIA H100 80GB HBM3", "memory_total_mib": 81559,
            "memory_used_mib": sum(p.get("used_memory_mib") or 0 for p in processes or []),
            "utilization": utilization, "gpm": True, "processes": processes or [], **extra}


def mig_gpu(i: int, instances: list[dict], gpm: bool = True, name: str = "NVIDIA H100 80GB HBM3") -> dict:
    """`instances`: dicts with slices, and optionally utilization (GPM busy time), sm_activity and
    processes; any other key (errors, ci, ci_slices) goes to the instance as it is."""
    migs = []
    for slot, inst in enumerate(instances):
        slices = inst.get("slices", 1)
        migs.append({"uuid": mig_uuid(i, slot), "gi": slot + 1, "ci": 0, "slices": slices,
                     "memory_total_mib": 10 * 1024 * slices,
                     "memory_used_mib": sum(p.get("used_memory_mib") or 0 for p in inst.get("processes", [])),
                     "sm_activity": inst.get("sm_activity", 0), "processes": inst.get("processes", []),
                     **{k: v for k, v in inst.items() if k not in ("slices", "sm_activity", "processes")}})
    return {"uuid": gpu_uuid(i), "name": name, "memory_total_mib": 81559, "gpm": gpm, "mig": migs,
            "processes": []}


def write(path: Path, gpus: list[dict], driver: str = "550.54.15") -> Path:
    """Write atomically, so a daemon re-reading it never sees half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"driver": driver, "gpus": gpus}, indent=1))
    os.replace(tmp, path)
    return path
