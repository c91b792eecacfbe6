"""What an ordinary user pays at the door, measured in one box.

    scripts/bench-door     (or: .venv/bin/python -m bench.bench_door [--runs N] [--json])

The gateway and ds01d run as shipped (`ds01d gateway enable`, ds01d's policy); a client
in the box (`bench/door_client.py`) measures, as the docker-group user `gwuser` through
the gateway and as root on dockerd's own socket, alternating within each run:
- inspect of one's own container, p50 of N on one keep-alive connection (the gateway
  looks the container up on the engine first: whose it is);
- `GET /containers/json`, p50 of N (passed on; the caller is looked up);
- create -> running, 20 containers, median (ds01d admits the caller, its slice is made
  with its limits, the body is read the way dockerd reads it and rewritten).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from typing import Any

from tests.box import Box
from tests.gateway_box import CONFIG, ENGINE, STANDARD, GatewayBox
from tests.service import Service

CHECKOUT = "/run/ds01-checkout"   # the checkout as the box sees it


def measure(gw: GatewayBox, as_user: bool, tag: str, n: int) -> dict[str, float]:
    argv = [gw.box.python, "-m", "bench.door_client", STANDARD if as_user else ENGINE, tag, str(n)]
    if as_user:
        out = gw.as_user(*argv, timeout=600, PYTHONPATH=CHECKOUT).stdout
    else:
        out = gw.box.run(argv, timeout=600, env={"PYTHONPATH": CHECKOUT}).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("-n", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    name = f"bench-door-{os.environ['DS01_TEST_BOX']}" if os.environ.get("DS01_TEST_BOX") else "bench-door"
    box = Box.boot(name)
    runs: list[tuple[dict[str, float], dict[str, float]]] = []
    try:
        config = CONFIG.replace("max_containers: 6", "max_containers: 50")   # 21 running at once
        svc = Service(box, config)
        svc.reset(config)
        gw = GatewayBox(box, str(svc.config_path))
        gw.switch("enable")
        svc.start()
        for run in range(args.runs):
            runs.append((measure(gw, True, f"u{run}", args.n), measure(gw, False, f"r{run}", args.n)))
        report(runs, args.json)
    finally:
        box.shutdown()
    return 0


def report(runs: list[tuple[dict[str, float], dict[str, float]]], as_json: bool) -> None:
    keys = ("inspect_ms", "list_ms", "create_ms")
    med = {k: (statistics.median(u[k] for u, _ in runs), statistics.median(d[k] for _, d in runs)) for k in keys}
    summary: dict[str, Any] = {k: {"gateway": g, "direct": d, "added_ms": g - d, "ratio": g / d}
                               for k, (g, d) in med.items()}
    summary["runs"] = runs
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    print(f"medians of {len(runs)} runs; gwuser through the gateway / root on dockerd's socket")
    for key, what in zip(keys, ("inspect own container, p50", "GET /containers/json, p50",
                                "create -> running, median")):
        g, d = med[key]
        print(f"{what:30} {g:7.2f} / {d:7.2f} ms: +{g - d:.2f} ms, {g / d:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
