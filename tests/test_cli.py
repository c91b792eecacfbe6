"""`ds01d check-config` and `ds01d limits` as an admin runs them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ds01d.cli.main import main

REPO = Path(__file__).resolve().parent.parent
SHIPPED = str(REPO / "config" / "ds01.yaml")


def test_check_config_accepts_the_shipped_file(capsys):
    assert main(["check-config", SHIPPED]) == 0
    assert capsys.readouterr().out == f"{SHIPPED}: OK (3 groups, 0 user overrides)\n"


def test_check_config_lists_every_problem_with_its_line(tmp_path, capsys):
    bad = tmp_path / "ds01.yaml"
    bad.write_text("defaults:\n  cpus: lots\n  memory_max: -1G\nfoo: 1\n")
    assert main(["check-config", str(bad)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{bad}:2: defaults.cpus: CPUs must be a number like 8 or 0.5, not 'lots'",
        f"{bad}:3: defaults.memory_max: size '-1G' is negative",
        f"{bad}:4: top level: unknown key 'foo' (known: daemon, policies, defaults, default_group, "
        "groups, user_overrides)",
    ]


def test_limits_text_names_sources(tmp_path, capsys):
    cfg = tmp_path / "ds01.yaml"
    cfg.write_text("default_group: g\ngroups:\n  g:\n    members: [jean-luc.dupont@lab]\n    cpus: 12\n"
                   "    bind_roots: [~, /data/shared:ro]\n"
                   "user_overrides:\n  jean-luc.dupont@lab: {reason: deadline, memory_max: 96g, cap_add: [sys_ptrace]}\n")
    assert main(["limits", "jean-luc.dupont@lab", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "Slice:     ds01-g-jean\\x2dluc.dupont\\x40lab.slice" in out
    assert "Override:  deadline" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[5:] if line and "[" not in line}
    assert rows["cpus"] == ["12", "group", "g"]
    assert rows["memory_max"] == ["96G", "override", "(deadline)"]
    assert rows["gpu_quota"] == ["1", "GPU", "built-in", "default"]
    assert rows["allow_privileged"] == ["no", "built-in", "default"]     # the door's rules are settings too
    access = {line.split()[0]: line for line in out.splitlines() if line.startswith(("bind_roots", "cap_add"))}
    assert access["bind_roots"].split() == ["bind_roots", "[~,", "/data/shared:ro]", "group", "g"]
    assert access["cap_add"].split() == ["cap_add", "[SYS_PTRACE]", "override", "(deadline)"]


def test_limits_json_and_docker_args(tmp_path, capsys):
    cfg = tmp_path / "ds01.yaml"
    cfg.write_text("defaults: {container_memory: 16G, container_cpus: 2.5, idle_timeout: {ds01: null}}\n")
    assert main(["limits", "alice", "--config", str(cfg), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["slice"] == "ds01-default-alice.slice" and data["group"] == "default"
    assert data["settings"]["container_memory"] == {"value": 16 * 2**30, "display": "16G", "source": "defaults"}
    assert data["settings"]["idle_timeout"]["ds01"] == {"value": None, "display": "never", "source": "defaults"}
    assert data["settings"]["idle_timeout"]["docker"]["value"] == 1800
    assert main(["limits", "alice", "--config", str(cfg), "--docker-args"]) == 0
    assert capsys.readouterr().out.split() == [
        "--cgroup-parent=ds01-default-alice.slice", "--label=ds01.user=alice", "--cpus=2.5", "--memory=16g"]


def test_limits_with_a_broken_config_prints_problems_not_a_traceback(tmp_path):
    cfg = tmp_path / "ds01.yaml"
    cfg.write_text("defaults: [\n")
    result = subprocess.run([sys.executable, "-m", "ds01d.cli.main", "limits", "alice", "--config", str(cfg)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1
    assert result.stderr.startswith(f"{cfg}:2: bad YAML:")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("argv", [[], ["nope"], ["limits"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2


def test_usage_reports_gpu_seconds_per_user(tmp_path, capsys):
    import datetime as dt

    from ds01d.host.state_db import GpuStore, Store

    cfg = tmp_path / "ds01.yaml"
    cfg.write_text(f"daemon: {{state_dir: {tmp_path}/state}}\n")
    gpu = GpuStore(Store(f"{tmp_path}/state/state.db"))
    today = dt.datetime.now(dt.timezone.utc).date()
    gpu.add_usage(today.isoformat(), "alice", "c1", "busy", 3600)
    gpu.add_usage(today.isoformat(), "alice", "c1", "idle", 1800)
    gpu.add_usage(today.isoformat(), "alice", "c2", "unknown", 360)
    gpu.add_usage((today - dt.timedelta(days=30)).isoformat(), "bob", "c3", "busy", 7200)
    assert main(["usage", "--config", str(cfg), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["users"] == [{"user": "alice", "containers": 2, "busy_gpu_seconds": 3600.0,
                              "idle_gpu_seconds": 1800.0, "unknown_gpu_seconds": 360.0}]
    assert main(["usage", "--config", str(cfg), "--since", "60d"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split() == ["bob", "1", "2.00", "0.00", "0.00", "0%"]
    assert lines[3].split() == ["alice", "2", "1.00", "0.50", "0.10", "31%"]


def test_usage_without_a_database_or_a_daemon_says_so(tmp_path, capsys):
    cfg = tmp_path / "ds01.yaml"
    cfg.write_text(f"daemon: {{state_dir: {tmp_path}/none, socket_path: {tmp_path}/none.sock}}\n")
    assert main(["usage", "--config", str(cfg)]) == 2
    assert f"ds01d is not running (nothing answers on {tmp_path}/none.sock)" in capsys.readouterr().err
