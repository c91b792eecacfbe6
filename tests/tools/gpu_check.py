"""What ds01d's NVML adapter reads, next to what nvidia-smi says, under a load this starts itself.

Run on a host with an NVIDIA GPU (`scripts/gpu-check`): it starts a CUDA busy loop (PyTorch,
else CuPy) on the first unit, samples through `ds01d.host.nvml` and through nvidia-smi
(`--query-gpu`, `--query-compute-apps`, `mig -lgi`/`-lci`, `dmon`) at the same moment, prints
both side by side, and exits 1 where they disagree: a unit one sees and the other does not,
a GPU's utilization more than 15 points apart, a loaded unit ds01d does not find busy, or a
process nvidia-smi lists that ds01d does not.  Without a GPU it says so and exits 2.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from typing import Any

from ds01d.host.nvml import Nvml, NvmlUnavailable
from ds01d.rules.gpu_units import Inventory, UnitSample

TOLERANCE = 15.0         # points of utilization two readers of the same second may differ by
BUSY = 5.0               # ds01d's default idle threshold
LOAD = ("import time, sys\n"
        "try:\n"
        "    import torch; x = torch.rand(2048, 2048, device='cuda')\n"
        "    step = lambda: torch.mm(x, x)\n"
        "except ImportError:\n"
        "    import cupy; x = cupy.random.rand(2048, 2048, dtype=cupy.float32)\n"
        "    step = lambda: x @ x\n"
        "end = time.time() + float(sys.argv[1])\n"
        "while time.time() < end: step()\n")


def smi(*args: str) -> list[list[str]]:
    """nvidia-smi's CSV answer as rows of fields ([] when it fails)."""
    out = subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=30)
    return [[f.strip() for f in line.split(",")] for line in out.stdout.splitlines() if line.strip()] \
        if out.returncode == 0 else []


def smi_text(*args: str) -> str:
    out = subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=30)
    return out.stdout if out.returncode == 0 else f"(nvidia-smi {' '.join(args)} failed: {out.stderr.strip()})"


def start_load(unit_uuid: str, seconds: int) -> subprocess.Popen | None:
    """A busy loop on one unit, from PyTorch or CuPy; None when neither is installed."""
    for module in ("torch", "cupy"):
        if subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0:
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": unit_uuid}
            return subprocess.Popen([sys.executable, "-c", LOAD, str(seconds)], env=env)
    return None


def adapter_view(session: Nvml, inventory: Inventory) -> dict[str, UnitSample]:
    """Two passes two seconds apart (GPM needs two samples), the second one kept."""
    session.sample(inventory)
    time.sleep(2)
    return {s.uuid: s for s in session.sample(inventory)}


def compare(inventory: Inventory, samples: dict[str, UnitSample], loaded: str | None) -> list[str]:
    """Every disagreement between the adapter and nvidia-smi, in one sentence each."""
    problems = []
    gpus = {row[1]: row for row in smi("--query-gpu=index,uuid,utilization.gpu,memory.used",
                                       "--format=csv,noheader,nounits")}
    listed = {line.split("UUID: ")[1].rstrip(")") for line in smi_text("-L").splitlines() if "UUID: " in line}
    seen = {u.uuid for u in inventory.units} | set(inventory.gpu_indexes)
    for uuid in sorted(listed - seen):
        problems.append(f"nvidia-smi -L lists {uuid}, ds01d's inventory does not")
    apps: dict[str, set[int]] = {}
    for row in smi("--query-compute-apps=gpu_uuid,pid", "--format=csv,noheader"):
        apps.setdefault(row[0], set()).add(int(row[1]))
    print(f"{'unit':<8}{'profile':<12}{'ds01d activity':<34}{'nvidia-smi util':<18}{'ds01d pids':<20}smi pids")
    for unit in inventory.units:
        s = samples.get(unit.uuid)
        mine = {p.pid for p in s.processes} if s else set()
        theirs = apps.get(unit.gpu_uuid, set()) if not unit.is_mig else set()
        row = gpus.get(unit.gpu_uuid)
        util = row[2] if row and not unit.is_mig else "n/a (MIG)"
        shown = "unknown" if not s or s.activity is None else f"{s.activity:.0f}% {s.activity_source}"
        if s and s.activity is None:
            shown += f" ({(s.unknown_reason or '')[:20]})"
        print(f"{unit.index:<8}{unit.profile or '':<12}{shown:<34}{util:<18}{str(sorted(mine)):<20}{sorted(theirs)}")
        if not unit.is_mig and row and s and s.activity is not None and abs(s.activity - float(row[2])) > TOLERANCE:
            problems.append(f"GPU {unit.index}: ds01d reads {s.activity:.0f}%, nvidia-smi {row[2]}%")
        if theirs - mine:
            problems.append(f"{unit.index}: nvidia-smi lists PIDs {sorted(theirs - mine)}, ds01d does not")
        if unit.uuid == loaded and (not s or s.activity is None or s.activity < BUSY):
            problems.append(f"{unit.index} runs this check's busy loop, and ds01d reads it as {shown}")
    return problems


def main() -> int:
    if shutil.which("nvidia-smi") is None:
        print("gpu-check: no NVIDIA GPU here (nvidia-smi is not installed); nothing to compare", file=sys.stderr)
        return 2
    try:
        session = Nvml.open()
    except NvmlUnavailable as exc:
        print(f"gpu-check: no NVIDIA GPU here ({exc}); nothing to compare", file=sys.stderr)
        return 2
    inventory = session.inventory()
    if not inventory.units:
        print("gpu-check: NVML lists no GPU; nothing to compare", file=sys.stderr)
        return 2
    target = inventory.units[0].uuid
    load = start_load(target, 20)
    what = (f"busy loop on {inventory.units[0].index}" if load
            else "none (neither PyTorch nor CuPy is installed: only idle readings are compared)")
    print(f"driver {inventory.driver}; load: {what}")
    if load:
        time.sleep(5)  # the CUDA context and the first kernels
    try:
        samples = adapter_view(session, inventory)
        problems = compare(inventory, samples, target if load else None)
        print("\nnvidia-smi mig -lgi / -lci / dmon:")
        print(smi_text("mig", "-lgi"), smi_text("mig", "-lci"), smi_text("dmon", "-c", "1", "-s", "u"), sep="\n")
    finally:
        if load:
            load.terminate()
        session.close()
    for p in problems:
        print(f"DISAGREE: {p}")
    print("agree" if not problems else f"{len(problems)} disagreement(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
