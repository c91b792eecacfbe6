"""`ds01d doctor` in the box: all checks pass on a good host; Docker on the cgroupfs driver fails with the fix."""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.nvml_scenarios import mig_gpu, whole_gpu, write
from tests.service import Service

pytestmark = pytest.mark.box
CONFIG = textwrap.dedent("""\
    daemon: {state_dir: "{state_dir}", sampling_interval: 1s}
    defaults: {bind_roots: ["~:ro"]}
    """)


@pytest.fixture(scope="module")
def env(box):
    svc = Service(box, CONFIG, fake_nvml=True)
    write(svc.nvml_scenario, [whole_gpu(0), mig_gpu(1, [{"slices": 3}, {"slices": 4}]),
                              mig_gpu(2, [{"slices": 7}], gpm=False, name="NVIDIA A100-SXM4-80GB")])
    svc.reset(CONFIG)
    yield svc
    svc.stop()


def doctor(box, svc, scenario=None):
    env = {"DS01D_FAKE_NVML": str(scenario or svc.nvml_scenario)}
    return box.run([box.tool("ds01d"), "doctor", "--config", str(svc.config_path)], check=False,
                   env=env)


@pytest.mark.cgroup_v2
def test_doctor_passes_on_a_good_host(env, box, box_cleanup):
    write(env.nvml_scenario, [whole_gpu(0), mig_gpu(1, [{"slices": 3}, {"slices": 4}])])
    box.docker("run", "-d", "--name", box_cleanup("doc-ok"), "--label", "ds01.user=alice", "busybox:local",
               "sleep", "600")
    box.wait_until(lambda: box.systemctl_show("ds01-default-alice.slice", "ActiveState")["ActiveState"] == "active",
                   5.0, what="alice's slice")
    out = doctor(box, env)
    lines = out.stdout.splitlines()
    assert lines[0].startswith("[ OK ] config:") and "cgroup driver systemd" in lines[1]
    assert "[ OK ] gpu 1: MIG (3g.30gb, 4g.40gb): activity per instance from GPM" in lines
    assert "user slices active" in lines[-5]
    # Everything ds01d needs is there; only the door is open (test_gateway_door_box enables it).
    assert lines[-4].startswith("[FAIL] gateway: not enabled: /run/docker.sock is dockerd's own")
    assert lines[-3] == "       fix: `ds01d gateway enable` (restarts Docker once)"
    assert lines[-2] == "[ OK ] setuid: no writable bind roots"      # (test_host_access_box: writable ones)
    assert lines[-1] == "9 of 10 checks passed; 1 need fixing" and out.returncode == 1


def test_doctor_names_what_fails_and_how_to_fix_it(env, box):
    write(env.nvml_scenario, [whole_gpu(0), mig_gpu(2, [{"slices": 7}], gpm=False, name="NVIDIA A100-SXM4-80GB")])
    daemon_json = box.run_dir / "etc-docker" / "daemon.json"
    original = daemon_json.read_text()
    settings = json.loads(original)
    settings["exec-opts"] = ["native.cgroupdriver=cgroupfs"]
    daemon_json.write_text(json.dumps(settings))
    try:
        box.run(["systemctl", "restart", "docker.service"], timeout=120)
        out = doctor(box, env)
    finally:
        daemon_json.write_text(original)
        box.run(["systemctl", "restart", "docker.service"], timeout=120)
    assert out.returncode == 1
    text = out.stdout
    assert "[FAIL] docker: Docker" in text and "cgroup driver cgroupfs" in text
    assert 'fix: add "exec-opts": ["native.cgroupdriver=systemd"] to /etc/docker/daemon.json' in text
    assert "[FAIL] gpu 1: MIG (7g.70gb) without GPM" in text
    assert "[FAIL] slices: not checked: Docker is not usable" in text
