"""ds01d's latency and throughput, measured in the box against real systemd and Docker.

    scripts/bench            (or: .venv/bin/python -m bench.bench_daemon [--runs N])

What is measured, all from timestamps the components themselves record:
- single: a container created on an idle host; Docker's `create` event time -> the
  record in ds01d's database (`first_seen`) -> the owner's slice limited (the
  `slice-limits` audit row).  Each container has a new owner, so every sample
  creates and limits a slice.
- burst: 300 containers created as fast as Docker allows (8 parallel clients,
  30 owners); lost = containers without a record; drain = last record written
  minus Docker's last `create` event.
- reconcile: ds01d restarted with 500 containers on the host; the reconcile time
  ds01d logs, and `systemctl restart` to READY.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.box import Box
from tests.service import Service

CONFIG = """\
daemon: {state_dir: "{state_dir}", sampling_interval: 10s}
defaults: {cpus: 2, memory_max: 2G, memory_high: 1G, tasks_max: 1000, max_containers: 1000}
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


class CreateEvents:
    """Docker's `create` events, read live (dockerd keeps only the last 256 for --since)."""

    def __init__(self, box: Box):
        argv = box.command(["docker", "events", "--filter", "type=container", "--filter", "event=create",
                            "--format", "{{.ID}} {{.TimeNano}}"])
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        self.times: dict[str, float] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            cid, nano = line.split()
            self.times[cid] = int(nano) / 1e9

    def wait(self, box: Box, ids: list[str]) -> dict[str, float]:
        box.wait_until(lambda: all(c in self.times for c in ids), 30.0, what="create events")
        return self.times

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def db(service: Service) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{service.state_dir / 'state.db'}?mode=ro", uri=True, timeout=10)


def single(box: Box, service: Service, events: CreateEvents, n: int, run: int) -> tuple[list[float], list[float]]:
    record_lat, slice_lat = [], []
    for i in range(n):
        user = f"single{run}x{i}"
        cid = box.docker("create", "--label", f"ds01.user={user}", "--label", "ds01.test=1",
                         "busybox:local", "true").stdout.strip()
        service.wait_record(cid, 5.0)
        created = events.wait(box, [cid])[cid]

        def slice_ts() -> float | None:
            with db(service) as conn:
                row = conn.execute("SELECT ts FROM audit WHERE action='slice-limits' AND user=?",
                                   (user,)).fetchone()
            return row[0] if row else None
        limited = box.wait_until(slice_ts, 5.0, what=f"slice of {user}")
        first_seen = service.record(cid)["first_seen"]
        record_lat.append(first_seen - created)
        slice_lat.append(limited - created)
    return record_lat, slice_lat


def burst(box: Box, service: Service, events: CreateEvents, count: int, run: int) -> dict[str, float]:
    names = "\n".join(f"burst{run}-{i} burst{run}u{i % 30}" for i in range(count))
    started = time.monotonic()
    box.run(["sh", "-c", "xargs -P 8 -L 1 sh -c 'docker create --name $0 --label ds01.user=$1 "
                         "--label ds01.test=1 busybox:local true >/dev/null'"], input=names, timeout=600)
    wall = time.monotonic() - started
    ids = box.docker("ps", "-aq", "--no-trunc", "--filter", f"name=burst{run}-").stdout.split()
    created = events.wait(box, ids)

    def all_recorded() -> bool:
        with db(service) as conn:
            marks = ",".join("?" * len(ids))
            return conn.execute(f"SELECT count(*) FROM containers WHERE id IN ({marks})", ids).fetchone()[0] \
                == len(ids)
    try:
        box.wait_until(all_recorded, 30.0, what="every burst container recorded")
    except TimeoutError:
        pass
    with db(service) as conn:
        marks = ",".join("?" * len(ids))
        seen = dict(conn.execute(f"SELECT id, first_seen FROM containers WHERE id IN ({marks})", ids).fetchall())
    lat = [seen[c] - created[c] for c in ids if c in seen]
    return {"created": len(ids), "lost": len(ids) - len(seen), "wall_s": wall,
            "rate_per_s": len(ids) / wall, "drain_s": max(seen.values()) - max(created.values()),
            "p50_s": pct(lat, 0.5), "p99_s": pct(lat, 0.99)}


def fill(box: Box, total: int) -> None:
    """Exactly `total` containers on the host, 50 owners."""
    box.docker("container", "prune", "-f", timeout=600)
    names = "\n".join(f"fill-{i} fill{i % 50}" for i in range(total))
    if names:
        box.run(["sh", "-c", "xargs -P 8 -L 1 sh -c 'docker create --name $0 --label ds01.user=$1 "
                             "--label ds01.test=1 busybox:local true >/dev/null'"], input=names, timeout=600)


def reconcile(box: Box, service: Service) -> dict[str, float]:
    cursor = box.journal_cursor()
    started = time.monotonic()
    box.run(["systemctl", "restart", "ds01d.service"], timeout=120)
    to_ready = time.monotonic() - started
    entry = box.wait_until(lambda: [e for e in service.box.journal("DS01_ACTION=docker-connected",
                                                                   unit="ds01d.service", since_cursor=cursor)],
                           30.0, what="reconcile entry")[-1]
    words = entry["DS01_REASON"].split()  # "reconciled N containers in X.XXs"
    return {"containers": int(words[1]), "reconcile_s": float(words[-1].rstrip("s")), "restart_to_ready_s": to_ready}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--single", type=int, default=40, help="samples per run of the single-container test")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    box = Box.boot("bench")
    results: dict[str, list] = {"single_record": [], "single_slice": [], "burst": [], "reconcile": []}
    try:
        service = Service(box, "")
        service.reset(CONFIG)
        events = CreateEvents(box)
        for run in range(args.runs):
            rec, sl = single(box, service, events, args.single, run)
            results["single_record"] += rec
            results["single_slice"] += sl
            results["burst"].append(burst(box, service, events, 300, run))
        events.close()
        fill(box, 500)
        for _ in range(args.runs):
            results["reconcile"].append(reconcile(box, service))
        report(results, args.json)
    finally:
        box.shutdown()
    return 0


def report(results: dict[str, list], as_json: bool) -> None:
    summary = {
        "single_record_p50_ms": pct(results["single_record"], 0.5) * 1000,
        "single_record_p99_ms": pct(results["single_record"], 0.99) * 1000,
        "single_slice_p50_ms": pct(results["single_slice"], 0.5) * 1000,
        "single_slice_p99_ms": pct(results["single_slice"], 0.99) * 1000,
        "single_samples": len(results["single_slice"]),
        "burst_runs": results["burst"],
        "reconcile_runs": results["reconcile"],
        "reconcile_median_s": statistics.median(r["reconcile_s"] for r in results["reconcile"]),
        "restart_to_ready_median_s": statistics.median(r["restart_to_ready_s"] for r in results["reconcile"]),
    }
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    print(f"single container ({summary['single_samples']} samples, new owner each):")
    print(f"  event -> owner recorded:  p50 {summary['single_record_p50_ms']:.1f} ms, "
          f"p99 {summary['single_record_p99_ms']:.1f} ms")
    print(f"  event -> slice limited:   p50 {summary['single_slice_p50_ms']:.1f} ms, "
          f"p99 {summary['single_slice_p99_ms']:.1f} ms")
    for b in results["burst"]:
        print(f"burst: {b['created']} created in {b['wall_s']:.1f} s ({b['rate_per_s']:.0f}/s), lost {b['lost']}, "
              f"backlog drained {ms(b['drain_s'])} after Docker's last create, per-container p50 "
              f"{ms(b['p50_s'])} p99 {ms(b['p99_s'])}")
    for r in results["reconcile"]:
        print(f"restart with {r['containers']} containers: reconcile {r['reconcile_s']:.2f} s, "
              f"systemctl restart -> READY {r['restart_to_ready_s']:.2f} s")


if __name__ == "__main__":
    sys.exit(main())
