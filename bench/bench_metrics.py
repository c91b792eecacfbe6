"""Cost of the metrics: building and writing ds01d's textfile after a pass, on a full host.

    scripts/bench-metrics        (or: .venv/bin/python -m bench.bench_metrics)

A status view of 8 GPUs x 7 MIG instances with 200 running GPU containers of 50 users (and 50
stopped ones holding their units), usage totals for 200 users, and 20 decision counters: the
families (`daemon.metrics_model`), their exposition (prometheus_client) and the atomic write,
median and p90 of 50 runs; the file's size and series count.  What it is compared with: the
sampling pass itself (bench_gpu), which the write follows every interval.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from ds01d.daemon.metrics_model import Health, MetricsInput, SliceUsage, families
from ds01d.daemon.status_model import StatusView
from ds01d.host.metrics_file import exposition, write_atomically
from ds01d.rules.gpu_units import Inventory, Unit, UnitSample
from ds01d.rules.placement import Hold
from ds01d.rules.records import ContainerRecord, GpuState
from ds01d.rules.usage_totals import UsageTotals

GPUS, SLOTS, RUNNING, STOPPED, USERS = 8, 7, 200, 50, 50


def scene() -> MetricsInput:
    units = tuple(Unit(f"MIG-{g}-{s}", f"{g}:{s}", "H100 MIG 1g.10gb", f"GPU-{g}", g, 1 / 7, 10 << 30, "1g.10gb",
                       s + 1, 0) for g in range(GPUS) for s in range(SLOTS))
    records, states, holds = [], {}, []
    for i in range(RUNNING + STOPPED):
        running = i < RUNNING
        cid = f"{i:064x}"
        unit = units[i % len(units)]
        records.append(ContainerRecord(cid, f"c{i}", "img", f"user{i % USERS}", "gateway", "docker", "lab", None, "",
                                       {"source": "DeviceRequests"}, (), "running" if running else "exited",
                                       started_at=1e9, finished_at=None if running else 1e9 + 5))
        states[cid] = GpuState(cid, (unit.uuid,))
        if not running:
            holds.append(Hold(cid, f"user{i % USERS}", f"c{i}", (unit.uuid,), 2e9))
    view = StatusView(now=2e9, records=tuple(records), gpu_states=states,
                      inventory=Inventory(units, {f"GPU-{g}": g for g in range(GPUS)}),
                      samples={u.uuid: UnitSample(u.uuid, 1 << 30, 30.0, "GPM GRAPHICS_UTIL") for u in units},
                      holds=tuple(holds), quotas={f"user{u}": (2.0, 1.0) for u in range(USERS)},
                      queue=({"user": "user1", "waiting_s": 30},), docker_connected=True)
    usage = UsageTotals()
    for u in range(4 * USERS):
        usage.add(f"user{u}", "lab", "busy", 3600.0, 1e6, 0.0)
    counts = {("ds01_stops_total", f"rule{r}"): r for r in range(10)}
    counts.update({("ds01_creates_refused_total", f"reason{r}"): r for r in range(10)})
    return MetricsInput("gpu1", view, Health("0.1.0", 2e9, 0.04, 0.2, 0.01, True, True, 2e9),
                        {f"user{u}": "lab" for u in range(USERS)}, usage,
                        {f"user{u}": SliceUsage(100.0, 1 << 30) for u in range(USERS)}, counts,
                        {f"GPU-{g}": True for g in range(GPUS)}, 2)


def bench(runs: int) -> dict[str, float]:
    m = scene()
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "ds01d.prom")
        for _ in range(runs):
            started = time.perf_counter()
            data = exposition(families(m))
            write_atomically(path, data, private=False)
            times.append((time.perf_counter() - started) * 1000)
    times.sort()
    series = sum(1 for line in data.decode().splitlines() if line and not line.startswith("#"))
    return {"median_ms": round(statistics.median(times), 2), "p90_ms": round(times[int(0.9 * len(times))], 2),
            "bytes": len(data), "series": series}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    print(json.dumps(bench(parser.parse_args().runs), indent=2))


if __name__ == "__main__":
    main()
