"""What the gateway costs, measured in one box against dockerd's own socket.

    scripts/bench-gateway     (or: .venv/bin/python -m bench.bench_gateway [--runs N] [--json])

The gateway runs as shipped (ds01-gateway.socket/.service, pass-through policy) after
`ds01d gateway enable`; "direct" is dockerd's socket behind it.  Each figure is the
median of --runs runs, gateway and direct alternating within a run:
- latency: `GET /containers/json` (20 containers listed), p50 of 500 requests on one
  keep-alive connection, and p50 of 200 requests on a new connection each (as the
  docker CLI does); the added latency is gateway minus direct.
- create -> running: `POST /containers/create` then `/start`, 20 containers, median.
- docker cp of 1 GB (incompressible) into a container and back out, with the docker CLI.
- the gateway's RSS with 200 idle connections open.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

from bench.engine_api import UnixHTTP, call
from tests.box import Box
from tests.gateway_box import ENGINE, STANDARD, GatewayBox

IMAGE = "busybox:local"


def p50(samples: list[float]) -> float:
    return statistics.median(samples)


def latency_keepalive(path: str, n: int) -> float:
    conn = UnixHTTP(path)
    call(conn, "GET", "/v1.41/containers/json")
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        call(conn, "GET", "/v1.41/containers/json")
        samples.append(time.perf_counter() - t)
    conn.close()
    return p50(samples)


def latency_fresh(path: str, n: int) -> float:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        conn = UnixHTTP(path)
        call(conn, "GET", "/v1.41/containers/json")
        conn.close()
        samples.append(time.perf_counter() - t)
    return p50(samples)


def create_to_running(path: str, n: int, tag: str) -> float:
    conn = UnixHTTP(path)
    samples = []
    for i in range(n):
        t = time.perf_counter()
        cid = call(conn, "POST", f"/v1.41/containers/create?name=bench-{tag}-{i}",
                   {"Image": IMAGE, "Cmd": ["sleep", "600"], "Labels": {"ds01.test": "1"}})["Id"]
        call(conn, "POST", f"/v1.41/containers/{cid}/start")
        samples.append(time.perf_counter() - t)
    for i in range(n):
        call(conn, "DELETE", f"/v1.41/containers/bench-{tag}-{i}?force=1")
    conn.close()
    return p50(samples)


def cp_throughput(gw: GatewayBox, host: str, source: Path, container: str) -> tuple[float, float]:
    """MB/s of `docker cp` in and out of a container, through `host`."""
    size_mb = source.stat().st_size / 1e6
    out = source.with_name("back.bin")
    rates = []
    for args in ([str(source), f"{container}:/tmp/in.bin"], [f"{container}:/tmp/in.bin", str(out)]):
        t = time.perf_counter()
        gw.box.run(["docker", "-H", f"unix://{host}", "cp", *args], timeout=600)
        rates.append(size_mb / (time.perf_counter() - t))
        out.unlink(missing_ok=True)
    gw.direct("exec", container, "rm", "-f", "/tmp/in.bin")
    return rates[0], rates[1]


def idle_rss_mib(gw: GatewayBox, count: int) -> float:
    baseline = gw.open_fds()
    idle = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_UNIX)
            s.connect(gw.socket_from_host)
            idle.append(s)
        gw.box.wait_until(lambda: gw.open_fds() >= baseline + count, 20, what="idle connections accepted")
        return gw.rss_kib() / 1024
    finally:
        for s in idle:
            s.close()


def alternate(run: Callable[[str], float], through: str, direct: str) -> tuple[float, float]:
    return run(through), run(direct)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cp-mb", type=int, default=1024)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    box = Box.boot(f"bench-gw-{os.environ['DS01_TEST_BOX']}" if os.environ.get("DS01_TEST_BOX") else "bench-gw")
    results: dict[str, list[Any]] = {k: [] for k in ("keepalive", "fresh", "create", "cp_in", "cp_out")}
    try:
        gw = GatewayBox(box, "/etc/ds01/ds01.yaml")  # none: the defaults; root passes untouched
        gw.switch("enable")
        through, direct = f"/proc/{box.pid}/root{STANDARD}", f"/proc/{box.pid}/root{ENGINE}"
        for i in range(20):
            gw.direct("run", "-d", "--name", f"listed-{i}", "--label", "ds01.test=1", IMAGE, "sleep", "3600")
        gw.direct("run", "-d", "--name", "cp-target", IMAGE, "sleep", "3600")
        source = Path(box.run_dir) / "cp.bin"
        with open(source, "wb") as f:
            for _ in range(args.cp_mb):
                f.write(os.urandom(1 << 20))
        rss_before = gw.rss_kib() / 1024
        for run in range(args.runs):
            results["keepalive"].append(alternate(lambda p: latency_keepalive(p, 500), through, direct))
            results["fresh"].append(alternate(lambda p: latency_fresh(p, 200), through, direct))
            results["create"].append(alternate(lambda p: create_to_running(p, 20, str(run)), through, direct))
            gw_in, gw_out = cp_throughput(gw, STANDARD, source, "cp-target")
            d_in, d_out = cp_throughput(gw, ENGINE, source, "cp-target")
            results["cp_in"].append((gw_in, d_in))
            results["cp_out"].append((gw_out, d_out))
        rss_busy = gw.rss_kib() / 1024
        rss_idle = idle_rss_mib(gw, 200)
        source.unlink()
        report(results, rss_before, rss_busy, rss_idle, args.json)
    finally:
        box.shutdown()
    return 0


def report(results: dict[str, list[Any]], rss_before: float, rss_busy: float, rss_idle: float,
           as_json: bool) -> None:
    med = {k: (statistics.median(g for g, _ in v), statistics.median(d for _, d in v)) for k, v in results.items()}
    summary = {
        "keepalive_p50_ms": [x * 1000 for x in med["keepalive"]],
        "keepalive_added_ms": (med["keepalive"][0] - med["keepalive"][1]) * 1000,
        "fresh_p50_ms": [x * 1000 for x in med["fresh"]],
        "fresh_added_ms": (med["fresh"][0] - med["fresh"][1]) * 1000,
        "create_to_running_ms": [x * 1000 for x in med["create"]],
        "create_ratio": med["create"][0] / med["create"][1],
        "cp_in_mb_s": list(med["cp_in"]), "cp_in_ratio": med["cp_in"][0] / med["cp_in"][1],
        "cp_out_mb_s": list(med["cp_out"]), "cp_out_ratio": med["cp_out"][0] / med["cp_out"][1],
        "rss_mib_before": rss_before, "rss_mib_after_runs": rss_busy, "rss_mib_200_idle": rss_idle,
        "runs": {k: v for k, v in results.items()},
    }
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    print(f"medians of {len(results['keepalive'])} runs; gateway / direct")
    print(f"GET /containers/json, keep-alive:     p50 {summary['keepalive_p50_ms'][0]:.2f} / "
          f"{summary['keepalive_p50_ms'][1]:.2f} ms, added {summary['keepalive_added_ms']:.2f} ms")
    print(f"GET /containers/json, new connection: p50 {summary['fresh_p50_ms'][0]:.2f} / "
          f"{summary['fresh_p50_ms'][1]:.2f} ms, added {summary['fresh_added_ms']:.2f} ms")
    print(f"create -> running:                    {summary['create_to_running_ms'][0]:.1f} / "
          f"{summary['create_to_running_ms'][1]:.1f} ms, ratio {summary['create_ratio']:.2f}")
    print(f"docker cp 1 GB in:                    {summary['cp_in_mb_s'][0]:.0f} / {summary['cp_in_mb_s'][1]:.0f} MB/s, "
          f"{summary['cp_in_ratio'] * 100:.0f} %")
    print(f"docker cp 1 GB out:                   {summary['cp_out_mb_s'][0]:.0f} / {summary['cp_out_mb_s'][1]:.0f} "
          f"MB/s, {summary['cp_out_ratio'] * 100:.0f} %")
    print(f"gateway RSS: {rss_before:.1f} MiB at start, {rss_busy:.1f} MiB after the runs, {rss_idle:.1f} MiB "
          "with 200 idle connections open")


if __name__ == "__main__":
    sys.exit(main())
