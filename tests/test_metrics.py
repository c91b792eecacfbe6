"""ds01d's metrics, pure: what each series says for a hand-built status view, DCGM's labels,
unknown never written as 0, energy shared out, the exposition accepted by `promtool check
metrics`, the file replaced atomically, the HTTP server's answers and its hostile callers."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from ds01d.cli.metrics_http import serve
from ds01d.daemon.metrics_export import MAX_LABELS, Tally
from ds01d.daemon.metrics_model import Health, MetricsInput, SliceUsage, families
from ds01d.daemon.status_model import StatusView
from ds01d.host.metrics_file import exposition, write_atomically
from ds01d.host.slice_usage import slice_dir, slice_usage
from ds01d.host.slices import CgroupMode
from ds01d.rules.energy import energy_deltas, share_energy
from ds01d.rules.gpu_units import Inventory, Unit, UnitSample
from ds01d.rules.metric_catalogue import CATALOGUE
from ds01d.rules.placement import Hold
from ds01d.rules.records import ContainerRecord, GpuState
from ds01d.rules.usage_totals import UsageTotals

NOW = 1795521600.0
WHOLE = Unit("GPU-aaa", "0", "H100", "GPU-aaa", 0, 1.0, 80 << 30)
MIG = tuple(Unit(f"MIG-{i}", f"1:{i}", "H100 MIG", "GPU-bbb", 1, s / 7, 40 << 30, p, gi, ci)
            for i, (p, s, gi, ci) in enumerate([("3g.40gb", 3, 2, 0), ("3g.40gb", 3, 2, 1), ("1g.10gb", 1, 9, 0)]))


def rec(cid, owner, status="running", kind="docker", started=NOW - 100, finished=None):
    return ContainerRecord(id=cid * 16, name=f"c-{cid}", image="img", owner=owner, owner_signal="gateway", kind=kind,
                           group="vision", slice=None, cgroup_parent="", gpu_request={"source": "DeviceRequests"},
                           flags=(), status=status, started_at=started, finished_at=finished)


def scene(**kw) -> MetricsInput:
    a, b, h = rec("a", "alice"), rec("b", "bob", kind="devcontainer"), rec("h", "alice", "exited", finished=NOW - 50)
    units = (WHOLE, *MIG)
    view = StatusView(
        now=NOW, records=(a, b, h),
        gpu_states={a.id: GpuState(a.id, ("MIG-0", "MIG-1")), b.id: GpuState(b.id, ("GPU-aaa",)),
                    h.id: GpuState(h.id, ("MIG-2",))},
        inventory=Inventory(units, {"GPU-aaa": 0, "GPU-bbb": 1}),
        samples={"GPU-aaa": UnitSample("GPU-aaa", 2 << 30, 37.0, "utilization.gpu"),
                 "MIG-0": UnitSample("MIG-0", None, None, None, "no GPM"),
                 "MIG-1": UnitSample("MIG-1", None, None, None, "no GPM"),
                 "MIG-2": UnitSample("MIG-2", 0, 0.0, "GPM GRAPHICS_UTIL")},
        holds=(Hold(h.id, "alice", h.name, ("MIG-2",), NOW + 3000),),
        quotas={"alice": (1.0, 1.0), "bob": (None, 1.0)},
        queue=({"user": "carol", "waiting_s": 75}, {"user": "dan", "waiting_s": 12}),
        docker_connected=True, sampling_interval=10)
    usage = UsageTotals()
    usage.add("alice", "vision", "busy", 3600.0, 9000.0, 0.0)
    usage.add("alice", "vision", "unknown", 60.0, 0.0, 60.0)
    base = dict(hostname="gpu1", view=view, health=Health("0.1.0", NOW - 3, 0.04, 0.2, 0.01, True, True, NOW - 900),
                groups={"alice": "vision", "bob": "nlp"}, usage=usage,
                slices={"alice": SliceUsage(12.5, 1 << 30), "bob": SliceUsage(None, None)},
                counts={("ds01_stops_total", "idle_timeout"): 2}, energy_known={"GPU-aaa": True, "GPU-bbb": False},
                reservations=1)
    return MetricsInput(**{**base, **kw})


def series(m: MetricsInput) -> dict[str, list[tuple[dict, float]]]:
    return {f.spec.name: list(f.samples) for f in families(m)}


def test_every_family_of_the_catalogue_is_listed_in_its_order():
    assert [f.spec.name for f in families(scene())] == [s.name for s in CATALOGUE]


def test_units_carry_dcgms_labels_and_unknown_activity_is_no_sample():
    s = series(scene())
    known = {(l["gpu"], l["GPU_I_ID"]): v for l, v in s["ds01_gpu_activity_known"]}
    assert known == {("0", ""): 1.0, ("1", "2"): 0.0, ("1", "9"): 1.0}   # two compute instances: one series
    shares = {(l["gpu"], l["GPU_I_ID"]): v for l, v in s["ds01_gpu_unit_share_ratio"]}
    assert shares == {("0", ""): 1.0, ("1", "2"): pytest.approx(3 / 7), ("1", "9"): pytest.approx(1 / 7)}
    ratio = {(l["gpu"], l["GPU_I_ID"], l["GPU_I_PROFILE"], l["UUID"]): v for l, v in s["ds01_gpu_activity_ratio"]}
    assert ratio == {("0", "", "", "GPU-aaa"): 0.37, ("1", "9", "1g.10gb", "GPU-bbb"): 0.0}   # 0-1, never percent
    assert all(l["Hostname"] == "gpu1" for name in s for l, _ in s[name])


def test_who_holds_each_unit_running_or_held_after_stop():
    info = {(l["container"], l["gpu"], l["GPU_I_ID"], l["state"], l["user"], l["kind"]) for l, v in
            series(scene())["ds01_gpu_container_info"] if v == 1.0}
    assert info == {("c-a", "1", "2", "running", "alice", "docker"), ("c-b", "0", "", "running", "bob", "devcontainer"),
                    ("c-h", "1", "9", "held", "alice", "docker")}
    since = {l["container"]: v for l, v in series(scene())["ds01_gpu_container_since_seconds"]}
    assert since == {"c-a": NOW - 100, "c-b": NOW - 100, "c-h": NOW - 50}


def test_users_equivalents_quota_containers_and_slice_figures():
    s = series(scene())
    by_user = {name: {l["user"]: v for l, v in s[name]} for name in
               ("ds01_user_gpus_in_use", "ds01_user_gpus_held", "ds01_user_gpu_quota", "ds01_user_cpu_seconds_total",
                "ds01_user_memory_bytes")}
    assert by_user["ds01_user_gpus_in_use"] == {"alice": pytest.approx(3 / 7), "bob": 1.0}
    assert by_user["ds01_user_gpus_held"] == {"alice": pytest.approx(1 / 7), "bob": 0.0}
    assert by_user["ds01_user_gpu_quota"] == {"alice": 1.0}                 # bob's is unlimited: no sample
    assert by_user["ds01_user_cpu_seconds_total"] == {"alice": 12.5}        # bob's slice unread: no sample
    assert by_user["ds01_user_memory_bytes"] == {"alice": float(1 << 30)}
    kinds = {(l["user"], l["kind"], l["state"]): v for l, v in s["ds01_user_containers"]}
    assert kinds == {("alice", "docker", "running"): 1, ("alice", "docker", "stopped"): 1,
                     ("bob", "devcontainer", "running"): 1}


def test_counters_queue_and_health():
    s = series(scene())
    assert {l["state"]: v for l, v in s["ds01_user_gpu_seconds_total"]} == {"busy": 3600.0, "idle": 0.0,
                                                                              "unknown": 60.0}
    assert [v for _, v in s["ds01_user_gpu_energy_joules_total"]] == [9000.0]
    assert [v for _, v in s["ds01_user_gpu_unmetered_seconds_total"]] == [60.0]
    assert [(l["rule"], v) for l, v in s["ds01_stops_total"]] == [("idle_timeout", 2.0)]
    assert [v for _, v in s["ds01_queue_length"]] == [2.0] and [v for _, v in s["ds01_queue_oldest_wait_seconds"]] == [75]
    assert {l["gpu"]: v for l, v in s["ds01_gpu_energy_metered"]} == {"0": 1.0, "1": 0.0}
    assert [v for _, v in s["ds01_nvml_up"]] == [1.0] and [v for _, v in s["ds01_docker_connected"]] == [1.0]
    assert series(scene(idle_threshold=5.0))["ds01_idle_threshold_ratio"] == [({"Hostname": "gpu1"}, 0.05)]
    quiet = series(scene(health=Health("0.1.0")))
    assert quiet["ds01_config_last_reload_success"] == [] and quiet["ds01_event_lag_seconds"] == []


def test_the_exposition_passes_promtool_and_names_counters_as_prometheus_does():
    text = exposition(families(scene()))
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run scripts/install-deps (Debian's prometheus package)"
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = text.decode().splitlines()
    assert "# TYPE ds01_user_gpu_seconds_total counter" in lines or "# TYPE ds01_user_gpu_seconds counter" in lines
    assert any(line.startswith("ds01_user_gpu_seconds_total{") and 'user="alice"' in line and 'state="busy"' in line
               and line.endswith(" 3600.0") for line in lines)
    assert any(line.startswith("ds01_gpu_activity_ratio{") and line.endswith(" 0.37") for line in lines)


def test_hostile_names_are_escaped_not_broken_out_of():
    evil = rec("e", 'mallory"} 1\nds01_up{x="')
    m = scene()
    m = scene(view=StatusView(**{**m.view.__dict__, "records": m.view.records + (evil,)}))
    text = exposition(families(m)).decode()
    assert "\nds01_up" not in text and 'user="mallory\\"} 1\\nds01_up{x=\\""' in text


def test_energy_is_shared_by_mig_share_and_by_holders_of_a_whole_gpu():
    joules = energy_deltas({"GPU-aaa": 1_000_000, "GPU-bbb": 5_000_000, "GPU-c": 10},
                           {"GPU-aaa": 1_700_000, "GPU-bbb": 5_700_000, "GPU-c": 5, "GPU-d": None})
    assert joules == {"GPU-aaa": 700.0, "GPU-bbb": 700.0, "GPU-c": None, "GPU-d": None}   # went backwards: unknown
    shares = share_energy({"a": MIG[:2], "b": [WHOLE], "c": [WHOLE], "d": [MIG[2]]}, joules)
    assert shares["a"].joules == pytest.approx(300.0)      # one 3g instance (two compute instances) of 7 slices
    assert shares["b"].joules == shares["c"].joules == pytest.approx(350.0)   # one GPU, two containers
    assert shares["d"].joules == pytest.approx(100.0) and shares["d"].unmetered == 0
    unknown = share_energy({"a": MIG[:1]}, {"GPU-bbb": None})
    assert unknown["a"].joules == 0 and unknown["a"].unmetered == pytest.approx(3 / 7)


def test_the_tally_counts_decisions_and_refuses_to_grow_without_bound():
    tally = Tally()
    tally.decision("warn-idle_timeout", None)
    tally.decision("stop", {"rule": "max_runtime"})
    tally.decision("remove", None)
    for action in ("allocate", "allocate", "allocate-timeout", "allocate-refused", "allocate-wait"):
        tally.decision(action, None)
    assert tally.counts == {("ds01_warnings_total", "idle_timeout"): 1, ("ds01_stops_total", "max_runtime"): 1,
                            ("ds01_removals_total", "container_hold_after_stop"): 1,
                            ("ds01_allocations_total", "served"): 2, ("ds01_allocations_total", "timed_out"): 1,
                            ("ds01_allocations_total", "refused"): 1}
    assert not tally.count("ds01_creates_refused_total", 'x"}\n')
    assert not tally.count("ds01_creates_refused_total", "a" * 49)
    assert all(tally.count("ds01_creates_refused_total", f"r{i}") for i in range(MAX_LABELS))
    assert not tally.count("ds01_creates_refused_total", "one_too_many")
    assert tally.count("ds01_creates_refused_total", "r0")                 # known values still count


def test_slice_cgroup_figures(tmp_path):
    assert slice_dir("ds01-vision-jean\\x2dluc.slice") == \
        "ds01.slice/ds01-vision.slice/ds01-vision-jean\\x2dluc.slice"
    path = tmp_path / "ds01.slice" / "ds01-vision.slice" / "ds01-vision-alice.slice"
    path.mkdir(parents=True)
    (path / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\n")
    (path / "memory.current").write_text("1048576\n")
    assert slice_usage("ds01-vision-alice.slice", str(tmp_path), CgroupMode.V2) == (2.5, 1048576)
    assert slice_usage("ds01-vision-bob.slice", str(tmp_path), CgroupMode.V2) == (None, None)
    v1 = tmp_path / "cpuacct" / "ds01.slice" / "ds01-vision.slice" / "ds01-vision-alice.slice"
    v1.mkdir(parents=True)
    (v1 / "cpuacct.usage").write_text("3000000000\n")
    assert slice_usage("ds01-vision-alice.slice", str(tmp_path), CgroupMode.V1) == (3.0, None)


def test_the_file_is_replaced_whole_with_its_mode(tmp_path):
    path = tmp_path / "ds01d.prom"
    write_atomically(str(path), b"a 1\n", private=False)
    assert path.read_bytes() == b"a 1\n" and stat.S_IMODE(path.stat().st_mode) == 0o644
    write_atomically(str(path), b"a 2\n", private=True)
    assert stat.S_IMODE(path.stat().st_mode) in (0o640, 0o600) and path.read_bytes() == b"a 2\n"
    assert sorted(os.listdir(tmp_path)) == ["ds01d.prom"]        # nothing left beside it
    with pytest.raises(OSError):
        write_atomically(str(tmp_path / "missing" / "x.prom"), b"", private=False)


@pytest.fixture()
def http(tmp_path):
    config = tmp_path / "ds01.yaml"
    prom = tmp_path / "ds01d.prom"
    config.write_text(f'daemon: {{metrics_file: "{prom}"}}\n')
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    threading.Thread(target=serve, args=(str(config), sock), daemon=True).start()
    yield sock.getsockname()[1], prom
    sock.close()


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_the_http_server_serves_the_file_and_nothing_else(http):
    port, prom = http
    assert get(port, "/metrics") == (503, f"no metrics at {prom}: ds01d is not running\n".encode())
    prom.write_bytes(exposition(families(scene())))
    code, body = get(port, "/metrics")
    assert code == 200 and body == prom.read_bytes()
    assert get(port, "/")[0] == 404 and get(port, "/metrics/../etc/passwd")[0] == 404


def test_a_silent_or_garbled_client_does_not_block_the_next(http):
    port, prom = http
    prom.write_bytes(b"ds01_queue_length 0\n")
    silent = socket.create_connection(("127.0.0.1", port))        # connects, says nothing
    garbled = socket.create_connection(("127.0.0.1", port))
    garbled.sendall(b"\x00\xff GET /metrics HTTP/9.9\r\n\r\n")
    started = time.monotonic()
    assert get(port, "/metrics") == (200, b"ds01_queue_length 0\n")
    assert time.monotonic() - started < 5
    garbled.settimeout(5)
    assert b"Error" in garbled.recv(1000)                         # answered (and closed), not hung
    silent.close()
    garbled.close()


def test_a_unit_held_and_used_again_by_its_owner_counts_once():
    m = scene()
    again = rec("g", "alice")
    view = StatusView(**{**m.view.__dict__, "records": m.view.records + (again,),
                         "gpu_states": {**m.view.gpu_states, again.id: GpuState(again.id, ("MIG-2",))}})
    s = series(scene(view=view))
    in_use = {l["user"]: v for l, v in s["ds01_user_gpus_in_use"]}
    held = {l["user"]: v for l, v in s["ds01_user_gpus_held"]}
    assert in_use["alice"] == pytest.approx(4 / 7) and held["alice"] == 0.0     # not 4/7 + 1/7


def test_compute_instances_carry_their_gpu_instances_profile():
    ci = (Unit("MIG-x0", "2:0", "H100 MIG", "GPU-c", 2, 3 / 7, 40 << 30, "1c.3g.40gb", 1, 0),
          Unit("MIG-x1", "2:1", "H100 MIG", "GPU-c", 2, 3 / 7, 40 << 30, "2c.3g.40gb", 1, 1))
    a, b = rec("x", "alice"), rec("y", "bob")
    view = StatusView(now=NOW, records=(a, b), gpu_states={a.id: GpuState(a.id, ("MIG-x0",)),
                                                          b.id: GpuState(b.id, ("MIG-x1",))},
                      inventory=Inventory(ci, {"GPU-c": 2}), samples={}, docker_connected=True)
    s = series(scene(view=view, energy_known={}))
    profiles = {l["GPU_I_PROFILE"] for name in ("ds01_gpu_container_info", "ds01_gpu_activity_known")
                for l, _ in s[name]}
    assert profiles == {"3g.40gb"}          # one GPU instance, one series to join on


def test_totals_never_start_below_what_was_last_exported():
    totals = UsageTotals()
    totals.add("alice", "vision", "busy", 0.1, 0.2, 0.0)
    totals.add("alice", "vision", "busy", 0.2, 0.1, 0.0)
    saved = totals.as_json()
    summed = UsageTotals()
    summed.add("alice", "vision", "busy", 0.30000000000000004 - 1e-16, 0.3 - 1e-16, 0.0)   # a sum a hair lower
    summed.raise_to(saved)
    assert summed.users["alice"].gpu_seconds["busy"] >= totals.users["alice"].gpu_seconds["busy"]
    assert summed.users["alice"].energy_joules >= totals.users["alice"].energy_joules
    assert UsageTotals().raise_to('{"x": [1, "two"]}').users == {}        # unreadable: ignored
    assert UsageTotals().raise_to("not json").users == {}


def test_refusal_counts_are_reported_in_batches_one_at_a_time(tmp_path):
    import asyncio
    import json as jsonlib
    from ds01d.gateway import daemon_client
    seen: list[dict] = []

    async def scenario() -> None:
        path = str(tmp_path / "d.sock")

        async def answer(reader, writer):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int([line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(
                b"content-length")][0])
            seen.append(jsonlib.loads(await reader.readexactly(length)))
            await asyncio.sleep(0.05)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
            writer.close()
        server = await asyncio.start_unix_server(answer, path)
        client = daemon_client.DaemonClient(path)
        for _ in range(500):
            client.count_refusal("bind_roots")
        client.count_refusal("cap_add")
        for _ in range(200):
            await asyncio.sleep(0.01)
            if not daemon_client._REPORTING:
                break
        server.close()
    asyncio.run(scenario())
    assert sorted((r["reason"], r["count"]) for r in seen) == [("bind_roots", 500), ("cap_add", 1)]
