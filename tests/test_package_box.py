"""The .deb, installed with apt into a box whose root is private (an overlay): the packaged
service starts, reaches READY and does its job on Debian's python3 packages only; remove keeps
config and state, purge removes them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.box import Box, missing_requirements

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.box, pytest.mark.package,
              pytest.mark.skipif(shutil.which("dpkg-buildpackage") is None, reason="dpkg-buildpackage missing")]
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}


@pytest.fixture(scope="module")
def installed():
    if missing_requirements():
        pytest.skip(missing_requirements())
    subprocess.run([str(REPO / "scripts" / "build-deb")], check=True, capture_output=True, timeout=600)
    debs = [newest(name) for name in ("ds01d", "python3-nvidia-ml-py")]
    box = Box.boot("pytest-pkg", private_root=True)
    try:
        inside = [box.state_dir / deb.name for deb in debs]
        for deb, there in zip(debs, inside):
            shutil.copy(deb, there)
        # Build machines carry a policy-rc.d that forbids starting services from maintainer
        # scripts; a real host has none, and in this box's private root removing it is private.
        box.run(["rm", "-f", "/usr/sbin/policy-rc.d"])
        out = box.run(["apt-get", "install", "-y", "--no-install-recommends", *map(str, inside)], env=APT_ENV,
                      timeout=300)
        yield box, out
    finally:
        box.shutdown()


def newest(package: str) -> Path:
    return max((REPO / "dist").glob(f"{package}_*_all.deb"), key=lambda p: p.stat().st_mtime)


def test_the_host_is_untouched(installed, tmp_path):
    """The box's root is private: the package, its files and its dpkg entry exist only inside."""
    box, _ = installed
    assert exists(box, "/usr/share/man/man8/ds01d.8.gz")
    assert not Path("/usr/share/man/man8/ds01d.8.gz").exists()
    assert subprocess.run(["dpkg-query", "-W", "ds01d"], capture_output=True).returncode != 0
    assert box.run(["dpkg-query", "-W", "ds01d"]).stdout.split() == ["ds01d", "0.1.0"]


def active(box) -> str:
    return box.systemctl_show("ds01d.service", "ActiveState")["ActiveState"]


def exists(box, path: str) -> bool:
    return box.run(["test", "-e", path], check=False).returncode == 0


def test_packaged_service_starts_and_limits_a_users_slice(installed):
    box, out = installed
    assert "Setting up ds01d" in out.stdout
    box.wait_until(lambda: active(box) == "active", 30.0, what="ds01d.service active after install")
    shown = box.systemctl_show("ds01d.service", "Type", "FragmentPath", "ExecStart", "Environment")
    assert shown["Type"] == "notify" and shown["FragmentPath"].endswith("/lib/systemd/system/ds01d.service")
    assert "path=/usr/bin/ds01d" in shown["ExecStart"] and "PYTHONPATH" not in shown["Environment"]
    assert box.run(["head", "-1", "/usr/bin/ds01d"]).stdout.strip() == "#!/usr/bin/python3"
    notify = box.run(["getent", "passwd", "ds01-notify"]).stdout.split(":")   # debian/ds01d.sysusers
    assert int(notify[2]) < 1000 and notify[6].strip() == "/usr/sbin/nologin"
    assert not exists(box, "/usr/local/lib/python3.11/dist-packages/docker")  # Debian's python3-docker only
    box.docker("run", "-d", "--name", "pkg-alice", "--label", "ds01.user=alice", "busybox:local", "sleep", "600")
    entry = box.wait_until(lambda: box.journal("DS01_USER=alice", "DS01_ACTION=record", unit="ds01d.service"),
                           10.0, what="alice's container recorded")[-1]
    assert "owner alice by label:ds01.user" in entry["DS01_REASON"]
    box.wait_until(lambda: box.systemctl_show("ds01-students-alice.slice", "CPUQuotaPerSecUSec")
                   == {"CPUQuotaPerSecUSec": "8s"}, 10.0, what="alice's slice limited")
    assert exists(box, "/var/lib/ds01/state.db") and exists(box, "/run/ds01/ds01d.sock")
    # The packaged binding is the one imported; with no NVIDIA driver NVML does not start, said once.
    where = box.run(["/usr/bin/python3", "-c", "import pynvml; print(pynvml.__file__)"]).stdout.strip()
    assert where == "/usr/lib/python3/dist-packages/pynvml.py"
    cpu_only = box.journal("DS01_ACTION=gpu-cpu-only", unit="ds01d.service")
    assert len(cpu_only) == 1
    assert "NVML did not start" in cpu_only[0]["DS01_REASON"] and "running CPU-only" in cpu_only[0]["DS01_REASON"]


def test_packaged_gateway_enables_and_disables(installed):
    """Shipped disabled; `ds01d gateway enable` puts it in front of dockerd (refusing to stop
    running containers unless forced), an ordinary docker-group user's container is then
    theirs in their slice whatever it claims, and both directions are idempotent."""
    box, _ = installed
    assert box.run(["systemctl", "is-enabled", "ds01-gateway.socket"], check=False).stdout.strip() == "disabled"
    box.docker("run", "-d", "--name", "pkg-running", "busybox:local", "sleep", "600")
    refused = box.run(["ds01d", "gateway", "enable"], check=False, timeout=120)
    assert refused.returncode == 1 and "would stop 2 running containers" in refused.stderr   # with pkg-alice
    box.docker("rm", "-f", "pkg-running", "pkg-alice", check=False)
    assert box.run(["ds01d", "gateway", "enable"], timeout=180).stdout.startswith("ds01d gateway: enabled:")
    assert box.run(["ds01d", "gateway", "enable"], timeout=180).stdout.startswith("ds01d gateway: already enabled:")
    box.run(["useradd", "-m", "-u", "2801", "-G", "docker", "pkgbob"])
    as_bob = ["setpriv", "--reuid=2801", "--regid=2801", "--init-groups", "docker"]
    box.run([*as_bob, "run", "-d", "--name", "pkg-bob", "--label", "ds01.user=alice",
             "--cgroup-parent=ds01-students-alice.slice", "busybox:local", "sleep", "600"], timeout=120)
    shown = box.docker("inspect", "-f", "{{.HostConfig.CgroupParent}} {{index .Config.Labels \"ds01.user\"}}",
                       "pkg-bob").stdout.split()
    assert shown == ["ds01-students-pkgbob.slice", "pkgbob"]
    assert box.run([*as_bob, "-H", "unix:///run/ds01-engine/docker.sock", "ps"], check=False).returncode != 0
    box.docker("rm", "-f", "pkg-bob")
    assert box.run(["ds01d", "gateway", "disable"], timeout=180).stdout.startswith("ds01d gateway: disabled:")
    assert box.run(["ds01d", "gateway", "disable"], timeout=180).stdout.startswith("ds01d gateway: already disabled:")
    assert not exists(box, "/etc/systemd/system/docker.socket.d/ds01-gateway.conf")
    assert box.docker("ps", "-q").returncode == 0 and not exists(box, "/run/ds01-engine/docker.sock")


def test_remove_keeps_config_and_state_and_purge_removes_them(installed):
    box, _ = installed
    box.run(["apt-get", "remove", "-y", "ds01d"], env=APT_ENV, timeout=300)
    assert active(box) in ("inactive", "failed") and not exists(box, "/usr/bin/ds01d")
    assert exists(box, "/etc/ds01/ds01.yaml") and exists(box, "/var/lib/ds01/state.db")
    box.run(["apt-get", "purge", "-y", "ds01d"], env=APT_ENV, timeout=300)
    assert not exists(box, "/etc/ds01") and not exists(box, "/var/lib/ds01")
