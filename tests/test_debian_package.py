"""The Debian package: it builds from the checkout, carries what an admin expects, passes lintian,
and ds01d runs on the python3 packages Debian 12 ships (python3-docker 5.0.3 and the rest)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEBIAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}

pytestmark = [pytest.mark.package,
              pytest.mark.skipif(shutil.which("dpkg-buildpackage") is None,
                                 reason="dpkg-buildpackage is not installed (scripts/install-deps installs it)")]


@pytest.fixture(scope="module")
def built() -> dict[str, Path]:
    subprocess.run([str(REPO / "scripts" / "build-deb")], check=True, capture_output=True, text=True, timeout=600)
    return {name: max((REPO / "dist").glob(f"{name}_*_all.deb"), key=lambda p: p.stat().st_mtime)
            for name in ("ds01d", "python3-nvidia-ml-py")}


@pytest.fixture(scope="module")
def deb(built) -> Path:
    return built["ds01d"]


@pytest.fixture(scope="module")
def nvml_deb(built) -> Path:
    return built["python3-nvidia-ml-py"]


def contents(deb: Path) -> set[str]:
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], check=True, capture_output=True, text=True).stdout
    return {line.split()[-1].lstrip(".") for line in listing.splitlines()}


def test_contents(deb):
    files = contents(deb)
    for path in ("/usr/bin/ds01d", "/usr/bin/ds01-gpu-status", "/lib/systemd/system/ds01d.service",
                 "/lib/systemd/system/ds01.slice", "/etc/ds01/ds01.yaml", "/usr/lib/tmpfiles.d/ds01d.conf",
                 "/usr/share/man/man8/ds01d.8.gz", "/usr/share/man/man1/ds01-gpu-status.1.gz",
                 "/usr/bin/ds01", "/usr/share/man/man1/ds01.1.gz", "/usr/bin/ds01d-notify-mail",
                 "/usr/bin/ds01d-notify-webhook", "/usr/lib/sysusers.d/ds01d.conf",
                 "/usr/lib/python3/dist-packages/ds01d/daemon/loop.py",
                 "/lib/systemd/system/ds01-gateway.service", "/lib/systemd/system/ds01-gateway.socket",
                 "/usr/lib/python3/dist-packages/ds01d/gateway/exchange.py",
                 "/lib/systemd/system/ds01-metrics.service", "/lib/systemd/system/ds01-metrics.socket",
                 "/usr/share/ds01d/monitoring/prometheus/ds01d-alerts.yml",
                 "/usr/share/ds01d/monitoring/grafana/ds01d-dashboard.json"):
        assert path in files, path
    conffiles = subprocess.run(["dpkg-deb", "-I", str(deb), "conffiles"], check=True, capture_output=True,
                               text=True).stdout
    assert conffiles.split() == ["/etc/ds01/ds01.yaml"]
    control = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends", "Recommends"], check=True,
                             capture_output=True, text=True).stdout
    assert "python3-docker (>= 5.0.3)" in control and "libnvidia-ml1" in control
    assert "python3-nvidia-ml-py" in control and "python3-prometheus-client (>= 0.16)" in control
    scripts = subprocess.run(["dpkg-deb", "-I", str(deb), "postinst"], check=True, capture_output=True,
                             text=True).stdout
    assert "deb-systemd-helper" in scripts and "ds01d.service" in scripts  # enabled and started on install
    assert "systemd-sysusers" in scripts  # the ds01-notify user, for notify commands
    # The gateway's units ship disabled: enabled again on upgrade only where an admin enabled them, never started.
    assert "if deb-systemd-helper debian-installed 'ds01-gateway.socket'; then" in scripts
    assert not [line for line in scripts.splitlines() if "deb-systemd-invoke" in line and "ds01-gateway" in line]
    assert "if deb-systemd-helper debian-installed 'ds01-metrics.socket'; then" in scripts      # so is the HTTP one
    assert not [line for line in scripts.splitlines() if "deb-systemd-invoke" in line and "ds01-metrics" in line]


@pytest.mark.parametrize("package", ["ds01d", "python3-nvidia-ml-py"])
def test_lintian_finds_no_errors_or_warnings(built, package):
    out = subprocess.run(["lintian", "--tag-display-limit", "0", str(built[package])], capture_output=True, text=True)
    tags = [line for line in out.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert tags == []


def test_the_nvml_binding_package_keeps_nvidias_license_and_only_pynvml(nvml_deb):
    files = contents(nvml_deb)
    assert "/usr/lib/python3/dist-packages/pynvml.py" in files
    assert not [f for f in files if f.endswith("/example.py")]
    with_copyright = subprocess.run(f"dpkg-deb --fsys-tarfile {nvml_deb} | tar -xO ./usr/share/doc/python3-nvidia-ml-py/copyright",
                                    shell=True, check=True, capture_output=True, text=True).stdout
    assert "Copyright: 2011-" in with_copyright and "NVIDIA Corporation" in with_copyright
    assert "Redistribution and use in source and binary forms" in with_copyright
    upstream = (REPO / "packaging" / "python3-nvidia-ml-py" / "upstream").read_text()
    version = next(line.split("=", 1)[1] for line in upstream.splitlines() if line.startswith("version="))
    shown = subprocess.run(["dpkg-deb", "-f", str(nvml_deb), "Version", "Depends"], check=True,
                           capture_output=True, text=True).stdout
    assert f"Version: {version}-" in shown and "python3:any" in shown


@pytest.mark.skipif(not Path("/usr/lib/python3/dist-packages/docker").exists(), reason="python3-docker missing")
def test_runs_on_debians_python3_packages(tmp_path):
    """Debian's python3 with only Debian's packages (no venv): imports, config check, limits."""
    code = ("import docker, jeepney, sdnotify, systemd.journal, yaml, psutil, h11; "
            "import ds01d.daemon.loop, ds01d.cli.gpu_status, ds01d.cli.doctor, ds01d.gateway.server; "
            "print(docker.__version__)")
    out = subprocess.run(["/usr/bin/python3", "-I", "-c", f"import sys; sys.path.insert(0, {str(REPO)!r}); {code}"],
                         capture_output=True, text=True, env=DEBIAN_ENV, check=True)
    assert out.stdout.strip() == "5.0.3"
    check = subprocess.run(["/usr/bin/python3", "-m", "ds01d.cli.main", "check-config", "config/ds01.yaml"], cwd=REPO,
                           capture_output=True, text=True, env=DEBIAN_ENV)
    assert check.returncode == 0, check.stderr
