"""ds01-gpu-status as a user runs it, against a real status socket serving a fixed view."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ds01d.daemon.status_server import StatusApp, StatusServer
from tests.test_status_render import scenes

TOOL = [sys.executable, "-m", "ds01d.cli.gpu_status"]
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def served(tmp_path):
    sock = tmp_path / "ds01d.sock"
    app = StatusApp(lambda request: None, admin_group=None)
    app.view = scenes()["mig"]
    server = StatusServer(str(sock), app)
    server.start()
    cfg = tmp_path / "ds01.yaml"
    cfg.write_text(f"daemon: {{socket_path: {sock}}}\n")
    yield cfg
    server.shutdown()
    server.server_close()


def run(*args, env=None, **kw):
    return subprocess.run([*TOOL, *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=30, **kw)


def test_text_json_and_mine(served):
    text = run("--config", str(served))
    assert text.returncode == 0 and "inference (bob, docker, up 45m)" in text.stdout and "\033[" not in text.stdout
    doc = json.loads(run("--config", str(served), "--json").stdout)
    assert doc["caller"]["admin"] in (True, False) and doc["gpus"][0]["units"][2]["state"] == "free"
    assert json.loads(run("--config", str(served), "--json", "--mine").stdout)["gpus"] == []


def test_pipe_to_head_ends_quietly(served):
    done = subprocess.run(f"{' '.join(TOOL)} --config {served} --watch 0.5 | head -3", shell=True,
                          capture_output=True, text=True, cwd=REPO, timeout=30)
    assert done.stdout.count("\n") == 3 and done.stderr == ""


def test_watch_redraws(served):
    proc = subprocess.Popen([*TOOL, "--config", str(served), "--watch", "0.5"], stdout=subprocess.PIPE, text=True,
                            cwd=REPO)
    seen = 0
    assert proc.stdout is not None
    for line in proc.stdout:
        seen += line.startswith("ds01 GPU status")
        if seen == 2:
            break
    proc.terminate()
    proc.wait(timeout=10)
    assert seen == 2


def test_daemon_down(tmp_path):
    cfg = tmp_path / "ds01.yaml"
    cfg.write_text(f"daemon: {{socket_path: {tmp_path}/none.sock}}\n")
    done = run("--config", str(cfg))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("ds01-gpu-status: ds01d is not running (nothing answers on")
    assert "Traceback" not in done.stderr
