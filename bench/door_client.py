"""Run inside the box by bench_door.py, as an ordinary user through the gateway or as root on
dockerd's own socket: timings of one caller, printed as JSON.

    PYTHONPATH=<checkout> python -m bench.door_client SOCKET TAG N
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any

from bench.engine_api import UnixHTTP, call

IMAGE = "busybox:local"


def p50_ms(run: Any, n: int) -> float:
    samples = []
    for i in range(n):
        t = time.perf_counter()
        run(i)
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1000


def main() -> int:
    path, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    conn = UnixHTTP(path)
    own = call(conn, "POST", f"/v1.41/containers/create?name=door-{tag}-own", {"Image": IMAGE, "Cmd": ["sleep", "600"]})
    call(conn, "POST", f"/v1.41/containers/{own['Id']}/start")
    inspect = p50_ms(lambda i: call(conn, "GET", f"/v1.41/containers/door-{tag}-own/json"), n)
    listing = p50_ms(lambda i: call(conn, "GET", "/v1.41/containers/json"), n)

    def create(i: int) -> None:
        cid = call(conn, "POST", f"/v1.41/containers/create?name=door-{tag}-{i}",
                   {"Image": IMAGE, "Cmd": ["sleep", "600"]})["Id"]
        call(conn, "POST", f"/v1.41/containers/{cid}/start")
    created = p50_ms(create, 20)
    for i in range(20):
        call(conn, "DELETE", f"/v1.41/containers/door-{tag}-{i}?force=1")
    call(conn, "DELETE", f"/v1.41/containers/door-{tag}-own?force=1")
    print(json.dumps({"inspect_ms": inspect, "list_ms": listing, "create_ms": created}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
