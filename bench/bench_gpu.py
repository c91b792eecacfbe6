"""Cost of GPU sampling: one pass over 8 GPUs x 7 MIG instances and 200 containers, and the
daemon's RSS and CPU at a 10 s interval.

    scripts/bench-gpu            (or: .venv/bin/python -m bench.bench_gpu)

- pass: the real GpuWatch and NVML adapter over the scenario fake (56 MIG units with GPM,
  200 running GPU containers each with a GPU process), /proc/<pid>/cgroup files for
  attribution in a scratch tree, a real SQLite state database; median and p90 of 50 passes.
- daemon: ds01d.service in the box with 200 running GPU containers whose real PIDs are the
  fake's GPU processes, sampling every 10 s; RSS and CPU share over 60 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ds01d.testing import fake_pynvml
from ds01d.config import parse_config
from ds01d.rules.gpu_request import GpuRequest
from ds01d.daemon.gpu_watch import GpuWatch
from ds01d.rules.limits import resolve
from ds01d.host.nvml import Nvml
from ds01d.host.state_db import Store
from ds01d.rules.records import ContainerRecord
from tests.nvml_scenarios import mig_gpu, write

GPUS, SLOTS, CONTAINERS = 8, 7, 200


class Quiet:
    def stop(self, *a): pass
    def remove(self, *a): pass
    def warn(self, *a): pass
    def release(self, *a): pass
    def note(self, *a): pass


def scenario(path: Path, pids: dict[tuple[int, int], list[int]]) -> None:
    write(path, [mig_gpu(g, [{"slices": 1, "sm_activity": 30,
                              "processes": [{"pid": p, "used_memory_mib": 100} for p in pids.get((g, s), [])]}
                             for s in range(SLOTS)]) for g in range(GPUS)])


def bench_pass(runs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pids: dict[tuple[int, int], list[int]] = {}
        store = Store(str(root / "state.db"))
        for i in range(CONTAINERS):
            cid = f"{i:064x}"
            pid = 100000 + i
            slot = (i % GPUS, (i // GPUS) % SLOTS)
            pids.setdefault(slot, []).append(pid)
            (root / "proc" / str(pid)).mkdir(parents=True)
            (root / "proc" / str(pid) / "cgroup").write_text(
                f"0::/ds01.slice/ds01-g.slice/ds01-g-u{i % 40}.slice/docker-{cid}.scope\n")
            request = GpuRequest(device_ids=(f"{slot[0]}:{slot[1]}",), source="DeviceRequests")
            store.upsert_container(ContainerRecord(
                id=cid, name=f"c{i}", image="x", owner=f"u{i % 40}", owner_signal="label:ds01.user", kind="docker",
                group="g", slice="s", cgroup_parent="", gpu_request=request.__dict__, flags=(), status="running",
                started_at=time.time(), pid=pid))
        scenario(root / "nvml.json", pids)
        fake_pynvml.use_scenario(str(root / "nvml.json"))
        watch = GpuWatch(store, time.time, lambda: Nvml.open(fake_pynvml), proc=str(root / "proc"))
        watch.open()
        config = parse_config("defaults: {idle_timeout: 1h}\n", "c")
        cache: dict = {}

        def limits_for(owner):
            if owner not in cache:
                cache[owner] = resolve(config, owner or "", dt.date.today())
            return cache[owner]
        records = store.live_containers()
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            watch.run_pass(records, limits_for, config.policies, 10, Quiet())
            times.append(time.perf_counter() - started)
        watch.close()
        store.close()
    times.sort()
    return {"units": GPUS * SLOTS, "containers": CONTAINERS, "median_ms": statistics.median(times) * 1000,
            "p90_ms": times[int(0.9 * (len(times) - 1))] * 1000, "runs": runs}


def bench_daemon(seconds: int) -> dict[str, float]:
    from tests.box import Box
    from tests.service import Service
    box = Box.boot("bench-gpu")
    try:
        service = Service(box, "", fake_nvml=True)
        scenario(service.nvml_scenario, {})
        names = "\n".join(f"g{i} u{i % 40} {i % GPUS}:{(i // GPUS) % SLOTS}" for i in range(CONTAINERS))
        box.run(["sh", "-c", "xargs -P 8 -L 1 sh -c 'docker run -d --name $0 --label ds01.user=$1 "
                             "--gpus device=$2 busybox:local sleep 3600 >/dev/null'"], input=names, timeout=900)
        out = box.docker("inspect", "-f", "{{.Name}} {{.State.Pid}}",
                         *[f"g{i}" for i in range(CONTAINERS)]).stdout.split("\n")
        pid_of = {n.lstrip("/"): int(p) for n, p in (line.split() for line in out if line.strip())}
        pids: dict[tuple[int, int], list[int]] = {}
        for i in range(CONTAINERS):
            pids.setdefault((i % GPUS, (i // GPUS) % SLOTS), []).append(pid_of[f"g{i}"])
        scenario(service.nvml_scenario, pids)
        service.reset("daemon: {state_dir: \"{state_dir}\", sampling_interval: 10s}\n"
                      "defaults: {gpu_quota: null, max_containers: null, idle_timeout: null}\n")
        time.sleep(15)  # past start-up and the first passes
        pid = service.main_pid()
        before = _cpu_ticks(box, pid)
        started = time.monotonic()
        time.sleep(seconds)
        used = (_cpu_ticks(box, pid) - before) / 100.0
        wall = time.monotonic() - started
        rss = int(box.run(["sh", "-c", f"grep VmRSS /proc/{pid}/status"]).stdout.split()[1]) * 1024
        return {"containers": CONTAINERS, "interval_s": 10, "window_s": round(wall, 1),
                "cpu_percent_of_a_core": round(100 * used / wall, 2), "rss_mb": round(rss / 2**20, 1),
                **status_times(box)}
    finally:
        box.shutdown()


def status_times(box, runs: int = 10) -> dict[str, float]:
    """Wall time of `ds01-gpu-status` (text and --json) as a user runs it, in the box, median of `runs`."""
    tool = box.tool("ds01-gpu-status")
    out = {}
    for label, argv in (("status_text", [tool]), ("status_json", [tool, "--json"])):
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            result = box.run(["sh", "-c", f"{' '.join(argv)} > /dev/null"])
            times.append(time.perf_counter() - started)
            assert result.returncode == 0
        out[f"{label}_median_ms"] = round(statistics.median(times) * 1000, 1)
    base = [0.0] * runs
    for i in range(runs):  # what entering the box costs by itself, to subtract
        started = time.perf_counter()
        box.run(["true"])
        base[i] = time.perf_counter() - started
    out["box_exec_overhead_median_ms"] = round(statistics.median(base) * 1000, 1)
    return out


def _cpu_ticks(box, pid: int) -> int:
    fields = box.run(["cat", f"/proc/{pid}/stat"]).stdout.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])   # utime + stime, in clock ticks (100/s)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--skip-daemon", action="store_true")
    args = parser.parse_args()
    result = {"pass": bench_pass(args.runs)}
    if not args.skip_daemon:
        result["daemon"] = bench_daemon(args.seconds)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
