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
    gpu.add_usage(today.isoformat(), "alice", "c1", "busy", 3600, energy_j=720_000)
    gpu.add_usage(today.isoformat(), "alice", "c1", "idle", 1800, energy_j=90_000)
    gpu.add_usage(today.isoformat(), "alice", "c2", "unknown", 360, energy_j=10_000)
    gpu.add_usage((today - dt.timedelta(days=31)).isoformat(), "bob", "c3", "busy", 7200)
    assert main(["usage", "--config", str(cfg), "--json"]) == 0     # 30 days by default: not bob's
    data = json.loads(capsys.readouterr().out)
    assert data["users"] == [{"user": "alice", "containers": 2, "busy_gpu_seconds": 3600.0,
                              "idle_gpu_seconds": 1800.0, "unknown_gpu_seconds": 360.0,
                              "energy_joules": 820_000.0, "unmetered_gpu_seconds": 0.0}]
    assert (data["by"], data["until"]) == ("user", (today + dt.timedelta(days=1)).isoformat())
    assert main(["usage", "--config", str(cfg), "--since", "60d"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split() == ["bob", "1", "2.00", "0.00", "0.00", "0%", "unknown"]
    assert lines[3].split() == ["alice", "2", "1.00", "0.50", "0.10", "31%", "0.23", "kWh"]


def _october(tmp_path):
    """A config and a database with rows on both edges of October 2026: September 30th and
    November 1st must not count, October 1st and 31st must."""
    from ds01d.host.state_db import GpuStore, Store

    cfg = tmp_path / "ds01.yaml"
    cfg.write_text(f"daemon: {{state_dir: {tmp_path}/state}}\n")
    gpu = GpuStore(Store(f"{tmp_path}/state/state.db"))
    gpu.add_usage("2026-09-30", "alice", "c0", "busy", 99_000, energy_j=1e9, group="vision")
    gpu.add_usage("2026-10-01", "alice", "c1", "busy", 7200, energy_j=3.6e6, unmetered_s=3600, group="vision")
    gpu.add_usage("2026-10-31", "bob", "c2", "idle", 3600, unmetered_s=3600, group="vision")
    gpu.add_usage("2026-10-15", "carol", "c3", "busy", 1800, energy_j=0.9e6, group="nlp")
    gpu.add_usage("2026-10-20", "dave", "c4", "busy", 900)          # before migration 6: no group, no energy
    gpu.add_usage("2026-11-01", "bob", "c5", "busy", 99_000, energy_j=1e9, group="vision")
    return ["usage", "--config", str(cfg), "--since", "2026-10-01", "--until", "2026-11-01"]


def test_usage_for_a_month_counts_its_days_only(tmp_path, capsys):
    argv = _october(tmp_path)
    assert main([*argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["since"], data["until"], data["by"]) == ("2026-10-01", "2026-11-01", "user")
    assert [(u["user"], u["containers"], u["busy_gpu_seconds"], u["idle_gpu_seconds"]) for u in data["users"]] == \
        [("alice", 1, 7200.0, 0.0), ("bob", 1, 0.0, 3600.0), ("carol", 1, 1800.0, 0.0), ("dave", 1, 900.0, 0.0)]
    assert [(u["energy_joules"], u["unmetered_gpu_seconds"]) for u in data["users"]] == \
        [(3.6e6, 3600.0), (None, 3600.0), (0.9e6, 0.0), (None, 900.0)]


def test_usage_by_group_with_older_rows_as_unknown(tmp_path, capsys):
    argv = _october(tmp_path)
    assert main([*argv, "--by", "group", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["by"] == "group" and "users" not in data
    assert [(g["group"], g["containers"], g["busy_gpu_seconds"] + g["idle_gpu_seconds"], g["energy_joules"])
            for g in data["groups"]] == [("vision", 2, 10800.0, 3.6e6), ("nlp", 1, 1800.0, 0.9e6),
                                         ("(unknown)", 1, 900.0, None)]
    assert main([*argv, "--by", "group"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[0] == "group" and [line.split()[0] for line in lines[2:5]] == \
        ["vision", "nlp", "(unknown)"]


def test_usage_text_never_shows_unknown_energy_as_0(tmp_path, capsys):
    assert main(_october(tmp_path)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("GPU time from 2026-10-01 to 2026-10-31 (UTC days, both counted)")
    rows = {line.split()[0]: line.split()[6:] for line in lines[2:6]}
    assert rows == {"alice": ["1.00", "kWh*"], "bob": ["unknown"], "carol": ["0.25", "kWh"], "dave": ["unknown"]}
    assert lines[6:] == [
        "* alice: plus 1.00 GPU-hours without an energy reading (GPUs without an energy counter, or before "
        "ds01d read it; energy unknown)",
        "unknown: none of that GPU time had an energy reading (energy unknown, not 0)"]


def test_usage_csv_reads_back(tmp_path, capsys):
    import csv
    import io

    assert main([*_october(tmp_path), "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert list(rows[0]) == ["user", "containers", "busy_gpu_hours", "idle_gpu_hours", "unknown_gpu_hours",
                             "energy_kwh", "unmetered_gpu_hours", "since", "until"]
    assert rows[0] == {"user": "alice", "containers": "1", "busy_gpu_hours": "2.0000", "idle_gpu_hours": "0.0000",
                       "unknown_gpu_hours": "0.0000", "energy_kwh": "1.0000", "unmetered_gpu_hours": "1.0000",
                       "since": "2026-10-01", "until": "2026-11-01"}
    assert [(r["user"], r["energy_kwh"]) for r in rows] == \
        [("alice", "1.0000"), ("bob", ""), ("carol", "0.2500"), ("dave", "")]
    assert main([*_october(tmp_path), "--csv", "--by", "group"]) == 0
    groups = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert groups[0][0] == "group" and [g[0] for g in groups[1:]] == ["vision", "nlp", "(unknown)"]


@pytest.mark.parametrize("options,says", [
    (["--since", "soon"], "--since: 'soon' is neither a duration back from now (like 30d) nor a UTC date"),
    (["--since", "30"], "--since: '30' is neither"),
    (["--since=-5d"], "--since: '-5d' is neither"),
    (["--since", "2026-02-30"], "--since: '2026-02-30' is not a date"),
    (["--since", "20261001"], "--since: '20261001' is neither"),
    (["--since", "99999999999999999999d"], "--since: a duration back from now is at most 3660d"),
    (["--until", "later"], "--until: 'later' is neither"),
    (["--until", "2026-13-01"], "--until: '2026-13-01' is not a date"),
    (["--by", "project"], "--by must be user or group, not 'project'"),
    (["--by", "\x1b[2J"], "--by must be user or group, not '\\x1b[2J'"),
    (["--since", "2026-11-01", "--until", "2026-10-01"],
     "--until (2026-10-01) is not after --since (2026-11-01), so no day would be counted"),
    (["--since", "2026-10-01", "--until", "2026-10-01"], "--until (2026-10-01) is not after --since"),
    (["--since", "10d", "--until", "30d"], "--until ("),
])
def test_usage_bad_options_are_one_sentence(tmp_path, capsys, options, says):
    cfg = tmp_path / "ds01.yaml"
    cfg.write_text(f"daemon: {{state_dir: {tmp_path}/none, socket_path: {tmp_path}/none.sock}}\n")
    assert main(["usage", "--config", str(cfg), *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ds01d usage: {says}") and err.count("\n") == 1, err


def test_usage_asks_the_daemon_only_what_it_was_told():
    """A plain `--since 7d` is the body an older daemon takes; dates go as dates."""
    import argparse

    from ds01d.cli.main import _usage_query

    def body(since="30d", until=None, by="user"):
        return _usage_query(argparse.Namespace(since=since, until=until, by=by)).body()
    assert body("7d") == {"since_s": 7 * 86400}
    assert body("2026-10-01", "2026-11-01", "group") == {"since": "2026-10-01", "until": "2026-11-01", "by": "group"}
    assert body("2026-10-01", "1d") == {"since": "2026-10-01", "until_s": 86400}


def test_usage_without_a_database_or_a_daemon_says_so(tmp_path, capsys):
    cfg = tmp_path / "ds01.yaml"
    cfg.write_text(f"daemon: {{state_dir: {tmp_path}/none, socket_path: {tmp_path}/none.sock}}\n")
    assert main(["usage", "--config", str(cfg)]) == 2
    assert f"ds01d is not running (nothing answers on {tmp_path}/none.sock)" in capsys.readouterr().err
