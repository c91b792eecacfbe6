"""ds01d's metrics as a lab's Prometheus sees them: Debian's `prometheus` scrapes ds01d's
textfile through a real `prometheus-node-exporter`, and the shipped HTTP unit
(ds01-metrics.socket/.service), in the box; the test asks Prometheus's HTTP API for the
series after a scenario (fake NVML, two users, one idle stop)."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
import urllib.parse
from pathlib import Path

import pytest

from tests.nvml_scenarios import mig_gpu, whole_gpu, write
from tests.service import REPO, Service, ids_of
from ds01d.rules.metric_catalogue import exposed_names

pytestmark = pytest.mark.box
PROMETHEUS, NODE, HTTP = "127.0.0.1:19090", "127.0.0.1:19100", "127.0.0.1:19839"
CONFIG = textwrap.dedent("""\
    daemon: {state_dir: "{state_dir}", sampling_interval: 1s}
    policies: {idle_threshold: 5, idle_window: 1s, grace_after_start: 0s, warning_lead_times: [3s], sigterm_grace: 1s}
    defaults: {gpu_quota: 2, idle_timeout: 5s, max_runtime: null, gpu_hold_after_stop: 1h, cpus: 4, memory_max: 8G}
    """)
ASK = textwrap.dedent("""\
    import json, sys, urllib.request
    with urllib.request.urlopen(sys.argv[1], timeout=10) as answer:
        print(answer.read().decode())
    """)


@pytest.fixture(scope="module")
def env(box):
    for tool in ("prometheus", "prometheus-node-exporter", "promtool"):
        assert shutil.which(tool), f"{tool} is missing: run scripts/install-deps"
    svc = Service(box, CONFIG, fake_nvml=True)
    svc.reset(CONFIG)
    scrape = Path(box.state_dir) / "prometheus"
    box.run(["systemctl", "stop", "test-prometheus", "test-node-exporter"], check=False)   # a run before ours
    box.run(["systemctl", "reset-failed", "test-prometheus", "test-node-exporter"], check=False)
    shutil.rmtree(scrape, ignore_errors=True)
    scrape.mkdir(parents=True)
    (scrape / "prometheus.yml").write_text(textwrap.dedent(f"""\
        global: {{scrape_interval: 1s, evaluation_interval: 1s}}
        scrape_configs:
          - job_name: node
            static_configs: [{{targets: ["{NODE}"]}}]
          - job_name: ds01d-http
            static_configs: [{{targets: ["{HTTP}"]}}]
        """))
    box.run(["systemd-run", "--unit=test-node-exporter", "prometheus-node-exporter", "--collector.disable-defaults",
             "--collector.textfile", f"--collector.textfile.directory={svc.metrics_dir}",
             f"--web.listen-address={NODE}"])
    box.run(["systemd-run", "--unit=test-prometheus", "prometheus", f"--config.file={scrape / 'prometheus.yml'}",
             f"--storage.tsdb.path={scrape / 'data'}", f"--web.listen-address={PROMETHEUS}"])
    socket_unit = (REPO / "systemd" / "ds01-metrics.socket").read_text()
    box.install_unit("ds01-metrics.socket", socket_unit.replace("ListenStream=127.0.0.1:9839", f"ListenStream={HTTP}"))
    box.install_unit("ds01-metrics.service", (REPO / "systemd" / "ds01-metrics.service").read_text())
    box.install_unit("ds01-metrics.service.d/box.conf", "[Service]\nExecStart=\n"
                     f"ExecStart={box.tool('ds01d')} metrics-http --config {svc.config_path}\n")
    box.run(["systemctl", "start", "ds01-metrics.socket"])
    yield box, svc
    box.run(["systemctl", "stop", "test-prometheus", "test-node-exporter", "ds01-metrics.socket",
             "ds01-metrics.service"], check=False)
    svc.stop()


def query(box, expr: str) -> list[dict]:
    """Prometheus's answer to an instant query: its result vector."""
    url = f"http://{PROMETHEUS}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    done = box.run(["python3", "-c", ASK, url], check=False, timeout=20)
    if done.returncode != 0:
        return []
    return json.loads(done.stdout)["data"]["result"]


def value(box, expr: str) -> float | None:
    found = query(box, expr)
    return float(found[0]["value"][1]) if len(found) == 1 else None


def test_a_scenario_as_prometheus_sees_it(env, box_cleanup):
    box, svc = env
    write(svc.nvml_scenario, [whole_gpu(0, power_w=250), mig_gpu(1, [{"slices": 3}, {"slices": 4}])])
    svc.start()
    busy = box_cleanup.unique("metrics-busy")
    box.docker("run", "-d", "--name", busy, "--label", "ds01.user=alice", "--cgroup-parent", "ds01-default-alice.slice",
               "--gpus", "device=0", "busybox:local", "sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; "
               "sleep 600")
    pid = int(box.docker("inspect", "-f", "{{.State.Pid}}", busy).stdout)
    write(svc.nvml_scenario, [whole_gpu(0, power_w=250, utilization=80,
                                        processes=[{"pid": pid, "used_memory_mib": 2000}]),
                              mig_gpu(1, [{"slices": 3}, {"slices": 4}])])
    idle = box_cleanup.unique("metrics-idle")
    box.docker("run", "-d", "--name", idle, "--label", "ds01.user=bob", "--cgroup-parent", "ds01-default-bob.slice",
               "--gpus", "device=1:0", "busybox:local", "sleep", "600")
    ids = ids_of(box, [busy, idle])
    # bob's idle MIG instance is warned, then stopped: ds01d's counters, scraped through the node exporter
    box.wait_until(lambda: (value(box, 'ds01_stops_total{job="node",rule="idle"}') or 0) >= 1, 60.0,
                   interval=0.5, what="the idle stop in Prometheus")
    assert value(box, 'ds01_warnings_total{job="node",rule="idle"}') >= 1
    box.wait_until(lambda: box.docker("inspect", "-f", "{{.State.Status}}", ids[idle]).stdout.strip() == "exited",
                   30.0, interval=0.2, what="bob's container stopped")

    box.wait_until(lambda: {(s["metric"]["user"], s["metric"]["state"]) for s in
                            query(box, 'ds01_gpu_container_info{job="node"}')} ==
                   {("alice", "running"), ("bob", "held")}, 10.0, interval=0.5, what="bob's hold scraped")
    held = query(box, 'ds01_gpu_container_info{job="node"}')
    holders = {(s["metric"]["user"], s["metric"]["gpu"], s["metric"].get("GPU_I_ID", ""),
                s["metric"].get("GPU_I_PROFILE", ""), s["metric"]["state"], s["metric"]["container_id"])
               for s in held}
    assert holders == {("alice", "0", "", "", "running", ids[busy]),
                       ("bob", "1", "1", "3g.30gb", "held", ids[idle])}
    assert value(box, 'ds01_gpu_activity_ratio{job="node",gpu="0"}') == pytest.approx(0.8)
    # a plain join on DCGM's labels tells whose each unit's activity is
    joined = query(box, 'ds01_gpu_activity_ratio{job="node"} * on(Hostname, gpu, GPU_I_ID) '
                        'group_left(user) ds01_gpu_container_info{job="node",state="running"}')
    assert [(s["metric"]["user"], float(s["value"][1])) for s in joined] == [("alice", pytest.approx(0.8))]

    assert value(box, 'ds01_user_gpu_seconds_total{job="node",user="alice",state="busy"}') > 0
    assert value(box, 'ds01_user_gpu_seconds_total{job="node",user="bob",state="idle"}') > 0
    box.wait_until(lambda: (value(box, 'ds01_user_gpu_energy_joules_total{job="node",user="alice"}') or 0) > 0,
                   10.0, interval=0.5, what="alice's energy")
    assert value(box, 'ds01_user_gpu_energy_joules_total{job="node",user="bob"}') == 0    # no counter on GPU 1:
    assert value(box, 'ds01_user_gpu_unmetered_seconds_total{job="node",user="bob"}') > 0  # unknown, said so
    assert value(box, 'ds01_user_gpus_in_use{job="node",user="alice"}') == 1.0
    assert value(box, 'ds01_user_gpus_held{job="node",user="bob"}') == pytest.approx(3 / 7, abs=1e-6)
    assert value(box, 'ds01_user_gpu_quota{job="node",user="alice"}') == 2.0
    # the slice's own cgroup files, where this host has them (cgroup v2: cpu.stat; v1: cpuacct, which
    # some hybrid hosts mount apart from cpu, where systemd does not place slices: then no sample)
    alice = "ds01.slice/ds01-default.slice/ds01-default-alice.slice"
    cpu_file = box.run(f"ls /sys/fs/cgroup/cpu.stat /sys/fs/cgroup/{alice}/cpu.stat "
                       f"/sys/fs/cgroup/cpuacct/{alice}/cpuacct.usage", check=False).stdout.strip()
    cpu = value(box, 'ds01_user_cpu_seconds_total{job="node",user="alice"}')
    assert (cpu is not None and cpu > 0) if cpu_file else cpu is None, (cpu_file, cpu)
    assert value(box, 'ds01_user_memory_bytes{job="node",user="alice"}') > 0
    assert value(box, 'sum(ds01_gpu_unit_share_ratio{job="node"})') == pytest.approx(2.0)   # 1 + 3/7 + 4/7
    assert value(box, 'ds01_idle_threshold_ratio{job="node"}') == pytest.approx(0.05)
    assert value(box, 'ds01_docker_connected{job="node"}') == 1.0
    assert value(box, 'ds01_nvml_up{job="node"}') == 1.0
    assert value(box, 'time() - ds01_last_sample_time_seconds{job="node"}') < 10

    # the same series through the shipped HTTP unit (socket-activated, a dynamic user)
    box.wait_until(lambda: value(box, 'up{job="ds01d-http"}') == 1.0, 20.0, interval=0.5, what="the HTTP unit")
    assert value(box, 'ds01_user_gpus_in_use{job="ds01d-http",user="alice"}') == 1.0
    user = box.run(["systemctl", "show", "-p", "User,DynamicUser", "ds01-metrics.service"]).stdout
    assert "DynamicUser=yes" in user

    # nothing undocumented, and the file itself passes promtool
    names = set(json.loads(box.run(["python3", "-c", ASK,
                                    f"http://{PROMETHEUS}/api/v1/label/__name__/values"]).stdout)["data"])
    ours = {n for n in names if n.startswith("ds01_")}
    assert ours <= exposed_names() and len(ours) >= 25, sorted(ours - exposed_names())
    text = (svc.metrics_dir / "ds01d.prom").read_bytes()
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_docker_away_is_said_and_a_stop_leaves_the_file_to_age(env):
    """Without Docker there are no passes, but the metrics still say Docker is away; a stopped
    ds01d leaves its file, whose last sample time ages (the alert names the host)."""
    box, svc = env
    svc.start()
    prom = svc.metrics_dir / "ds01d.prom"

    def said(name: str) -> str | None:
        lines = [line for line in prom.read_text().splitlines() if line.startswith(name)] if prom.exists() else []
        return lines[0].rsplit(" ", 1)[1] if lines else None
    box.wait_until(lambda: said("ds01_docker_connected") == "1.0", 15.0, what="Docker connected")
    box.run(["systemctl", "stop", "docker.service", "docker.socket"], timeout=120)
    try:
        box.wait_until(lambda: said("ds01_docker_connected") == "0.0", 20.0, interval=0.2, what="Docker away")
    finally:
        box.run(["systemctl", "start", "docker.socket", "docker.service"], timeout=120)
    box.wait_until(lambda: said("ds01_docker_connected") == "1.0", 30.0, interval=0.2, what="Docker back")
    last = said("ds01_last_sample_time_seconds")
    svc.stop()
    assert prom.exists() and said("ds01_last_sample_time_seconds") == last
