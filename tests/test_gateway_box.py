"""The gateway in front of the real dockerd, as an ordinary docker-group user sees it.

Under ds01d's policy, to a user working with their own containers, the gateway must be
invisible (what it adds to creates is the concern of test_gateway_door_box): the docker CLI
(interactive exec through a real pty, stdin EOF, attach, builds with a 100 MB context
with and without BuildKit, 500 MB copies both ways, save/load, events, logs -f),
Debian's docker-compose, the Python SDK and a raw-API dev-container create all work
through it unchanged.  Then what no client should send, a restart in the middle of an
interactive session, and callers that stall or vanish.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import h11
import pytest

from tests.gateway_box import CONFIG, ENGINE, SERVICE, STANDARD, UID, GatewayBox
from tests.service import Service

pytestmark = pytest.mark.box
IMAGE = "busybox:local"
REPO = Path(__file__).resolve().parent.parent
PTY_SESSION = "/run/ds01-checkout/tests/tools/pty_session.py"


@pytest.fixture(scope="module")
def gw(box):
    svc = Service(box, CONFIG)
    svc.reset(CONFIG)
    gateway = GatewayBox(box, str(svc.config_path))
    said = gateway.switch("enable")
    assert said.startswith("ds01d gateway: enabled:") and ENGINE in said
    yield gateway
    gateway.box.run(["systemctl", "kill", SERVICE], check=False)  # drainers of the restart test
    gateway.switch("disable")
    svc.stop()


class Output:
    """A process's stdout, read on a thread, to wait on without sleeping."""

    def __init__(self, proc: subprocess.Popen[bytes]):
        self.proc = proc
        self.data = bytearray()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := self.proc.stdout.read1(65536):
            self.data.extend(chunk)

    def wait_for(self, box, text: str, timeout: float = 20) -> None:
        box.wait_until(lambda: text.encode() in self.data, timeout, what=f"{text!r} in {bytes(self.data[-300:])!r}")

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()


def big_file(path: Path, mib: int) -> str:
    """A file of random data (incompressible, as a real context or dataset), and its sha256."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(mib):
            block = os.urandom(1 << 20)
            digest.update(block)
            f.write(block)
    os.chmod(path, 0o644)
    return digest.hexdigest()


# ---- switching ----------------------------------------------------------------


def test_enable_moves_dockerd_to_a_root_only_socket(gw, box):
    modes = box.run(["stat", "-c", "%n %a %U %G", STANDARD, ENGINE, os.path.dirname(ENGINE)]).stdout.split("\n")
    assert modes[:3] == [f"{STANDARD} 660 root docker", f"{ENGINE} 600 root root", "/run/ds01-engine 700 root root"]
    assert gw.switch("enable").startswith("ds01d gateway: already enabled:")
    denied = gw.as_user("docker", "-H", f"unix://{ENGINE}", "ps", check=False)
    assert denied.returncode != 0 and "permission denied" in denied.stderr
    assert box.systemctl_show(SERVICE, "ActiveState", "KillMode")["KillMode"] == "process"


# ---- the docker CLI, unchanged ---------------------------------------------------------


def test_run_ps_inspect_logs_stop_rm(gw, box, box_cleanup):
    name = box_cleanup.unique("gw-life")
    cid = gw.docker("run", "-d", "--name", name, "--label", "ds01.test=1", IMAGE,
                    "sh", "-c", "echo started; exec sleep 600").stdout.strip()
    assert name in gw.docker("ps", "--format", "{{.Names}}").stdout.split()
    assert json.loads(gw.docker("inspect", name).stdout)[0]["Id"] == cid
    box.wait_until(lambda: "started" in gw.docker("logs", name).stdout, 10, what="the log line")
    gw.docker("stop", "-t", "1", name)
    assert gw.docker("inspect", "-f", "{{.State.Status}}", name).stdout.strip() == "exited"
    gw.docker("rm", name)
    assert gw.direct("ps", "-aq", "--filter", f"name={name}").stdout.strip() == ""


def test_logs_follow_streams_and_ends_with_the_container(gw, box, box_cleanup):
    name = box_cleanup.unique("gw-logs")
    gw.docker("run", "-d", "--name", name, IMAGE, "sh", "-c",
              "echo first; read x < /dev/null; sleep 2; echo second; sleep 1; echo third")
    started = time.monotonic()
    out = gw.docker("logs", "-f", name, timeout=30).stdout
    assert out.split() == ["first", "second", "third"]
    assert time.monotonic() - started >= 1.5  # it followed, rather than read what was there
    assert gw.docker("inspect", "-f", "{{.State.Status}}", name).stdout.strip() == "exited"


def shell(gw, box, name: str, first: str, expect: str) -> Output:
    """`docker exec -it NAME sh` on a real pty in a fresh container, once it answered `first`."""
    gw.docker("run", "-d", "--name", name, IMAGE, "sleep", "600")
    session = Output(gw.popen_user("python3", PTY_SESSION, "docker", "exec", "-it", name, "sh"))
    session.send(first + "\n")
    session.wait_for(box, expect)
    return session


def test_exec_it_through_a_real_pty(gw, box, box_cleanup):
    session = shell(gw, box, box_cleanup.unique("gw-tty"), "echo answer-$((6*7))", "answer-42")
    assert b"echo answer-$((6*7))" in session.data  # the terminal echoed what was typed
    session.send("exit 3\n")
    assert session.proc.wait(20) == 3


def test_stdin_eof_is_a_half_close(gw, box, box_cleanup):
    name = box_cleanup.unique("gw-half")
    gw.docker("run", "-d", "--name", name, IMAGE, "sleep", "600")
    assert gw.docker("exec", "-i", name, "cat", input="hi\n", timeout=20).stdout == "hi\n"
    out = gw.as_user("sh", "-c", f"seq 1 20000 | docker exec -i {name} sh -c 'wc -l; echo done'", timeout=30)
    assert out.stdout.split() == ["20000", "done"]
    assert gw.docker("run", "-i", "--rm", IMAGE, "tr", "a-z", "A-Z", input="shout\n", timeout=30).stdout == "SHOUT\n"


def test_attach(gw, box, box_cleanup):
    name = box_cleanup.unique("gw-attach")
    gw.docker("run", "-di", "--name", name, IMAGE, "sh", "-c",
              "trap 'echo bye; exit 0' TERM; while read l; do echo got-$l; done")
    attached = Output(gw.popen_user("docker", "attach", name))
    attached.send("one\ntwo\n")
    attached.wait_for(box, "got-two")
    gw.docker("stop", "-t", "5", name)  # the container ends: so does the attached stream (a -d container
    assert attached.proc.wait(20) == 0   # keeps its stdin open after the client's EOF, as with dockerd alone)
    assert attached.data.decode().split() == ["got-one", "got-two", "bye"]


@pytest.mark.parametrize("buildkit", ["0", "1"])
def test_build_with_a_100_mb_context(gw, box, buildkit):
    context = Path(box.run_dir) / f"gw-context-{buildkit}"
    context.mkdir(exist_ok=True)
    digest = big_file(context / "big", 100)
    (context / "Dockerfile").write_text(f"FROM {IMAGE}\nCOPY big /big\nRUN sha256sum /big > /sum\n")
    tag = f"gw-built-{buildkit}"
    try:
        gw.as_user("sh", "-c", f"cd {context} && docker build -t {tag} .", timeout=300, DOCKER_BUILDKIT=buildkit)
        inside = gw.docker("run", "--rm", tag, "cat", "/sum").stdout.split()[0]
        assert inside == digest
    finally:
        gw.direct("rmi", "-f", tag, check=False)
        subprocess.run(["rm", "-rf", str(context)])


def test_cp_500_mb_both_ways(gw, box, box_cleanup):
    name = box_cleanup.unique("gw-cp")
    gw.docker("run", "-d", "--name", name, IMAGE, "sleep", "600")
    area = Path(gw.home) / "cp"
    area.mkdir(exist_ok=True)
    os.chown(area, UID, UID)
    digest = big_file(area / "data.bin", 500)
    try:
        gw.docker("cp", str(area / "data.bin"), f"{name}:/tmp/data.bin", timeout=300)
        assert gw.docker("exec", name, "sha256sum", "/tmp/data.bin").stdout.split()[0] == digest
        gw.docker("cp", f"{name}:/tmp/data.bin", str(area / "back.bin"), timeout=300)
        back = hashlib.sha256()
        with open(area / "back.bin", "rb") as f:
            while block := f.read(1 << 20):
                back.update(block)
        assert back.hexdigest() == digest
    finally:
        subprocess.run(["rm", "-rf", str(area)])


def test_save_and_load(gw, box):
    gw.direct("tag", IMAGE, "gw-saved:1")
    try:
        out = gw.as_user("sh", "-c", "docker save gw-saved:1 > ~/saved.tar && docker rmi gw-saved:1 >/dev/null && "
                                     "docker load < ~/saved.tar", timeout=120)
        assert "Loaded image: gw-saved:1" in out.stdout
        assert gw.direct("image", "inspect", "gw-saved:1", check=False).returncode == 0
    finally:
        gw.direct("rmi", "-f", "gw-saved:1", check=False)


def test_events_stream(gw, box, box_cleanup):
    name = box_cleanup.unique("gw-events")
    since = box.run(["date", "+%s"]).stdout.strip()  # events from here on, however soon the stream connects
    events = Output(gw.popen_user("docker", "events", "--since", since, "--filter", f"container={name}",
                                  "--format", "{{.Action}}"))
    try:
        gw.docker("run", "--name", name, IMAGE, "true")
        gw.docker("rm", name)
        events.wait_for(box, "destroy")
        assert [a for a in events.data.decode().split() if a in ("create", "start", "die", "destroy")] == \
            ["create", "start", "die", "destroy"]
    finally:
        events.proc.kill()
        events.proc.wait()


def test_debian_docker_compose_up_and_down(gw, box):
    project = Path(gw.home) / "compose"
    project.mkdir(exist_ok=True)
    (project / "docker-compose.yml").write_text(
        f'version: "3"\nservices:\n  web:\n    image: {IMAGE}\n    command: sleep 600\n'
        '    labels: ["ds01.test=1"]\n')
    os.chown(project, UID, UID)
    try:
        gw.as_user("sh", "-c", f"cd {project} && docker-compose -p gwproj up -d", timeout=120)
        assert gw.docker("ps", "--format", "{{.Names}}", "--filter", "label=com.docker.compose.project=gwproj"
                         ).stdout.split() == ["gwproj_web_1"]
        gw.as_user("sh", "-c", f"cd {project} && docker-compose -p gwproj down", timeout=120)
        assert gw.direct("ps", "-aq", "--filter", "label=com.docker.compose.project=gwproj").stdout == ""
    finally:
        gw.direct("rm", "-f", "gwproj_web_1", check=False)
        gw.direct("network", "rm", "gwproj_default", check=False)


def test_python_sdk(gw, box, box_cleanup):
    name = box_cleanup.unique("gw-sdk")
    script = f"""
import docker
client = docker.from_env()
c = client.containers.run({IMAGE!r}, "sh -c 'echo sdk-$((3*3)); sleep 600'", name={name!r}, detach=True,
                          labels={{"ds01.test": "1"}})
for line in c.logs(stream=True, follow=True):
    print(line.decode().strip())
    break
print(c.exec_run("echo exec-ok").output.decode().strip())
sock = c.attach_socket(params={{"stdout": 1, "stream": 1}})
print(type(sock).__name__)
sock.close()
c.remove(force=True)
print("removed")
"""
    out = gw.as_user("/run/ds01-checkout/.venv/bin/python", "-c", script, timeout=60).stdout.split()
    assert out == ["sdk-9", "exec-ok", "SocketIO", "removed"]


def test_raw_api_devcontainer_create(gw, box, box_cleanup):
    name = box_cleanup("gw-devcontainer")
    body = json.dumps({"Image": IMAGE, "Cmd": ["sleep", "600"], "Labels": {
        "devcontainer.local_folder": "/home/gwuser/project", "devcontainer.config_file":
        "/home/gwuser/project/.devcontainer/devcontainer.json", "ds01.test": "1"}})
    request = (f"POST /v1.41/containers/create?name={name} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json"
               f"\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n{body}")
    out = gw.as_user("python3", "/run/ds01-checkout/tests/tools/raw_http.py", STANDARD, input=request).stdout
    assert out.startswith("HTTP/1.1 201 Created")
    labels = json.loads(gw.direct("inspect", "-f", "{{json .Config.Labels}}", name).stdout)
    assert labels["devcontainer.local_folder"] == "/home/gwuser/project"


# ---- what no client should send --------------------------------------------------


def raw(gw, data: bytes, hang_up: bool = False, path: str | None = None) -> bytes:
    """Bytes to the gateway from here (the box's /run seen through its PID 1), the answer back
    (what arrived before the gateway closed, if it closed on a request it would not read)."""
    chunks = []
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(20)
        sock.connect(path or gw.socket_from_host)
        try:
            sock.sendall(data)
            if hang_up:
                return b""
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return b"".join(chunks)


def parse_response(data: bytes) -> tuple[int, bytes]:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "d")]))
    conn.receive_data(data)
    conn.receive_data(b"")
    status, body = 0, b""
    while not isinstance(event := conn.next_event(), (h11.EndOfMessage, h11.ConnectionClosed)):
        if isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
    return status, body


@pytest.mark.parametrize("data,status", [
    (b"NOT HTTP AT ALL\r\n\r\n", 400),
    (b"GET /containers/json HTTP/1.1\r\nHost: d\r\nX-Huge: " + b"a" * (2 << 20) + b"\r\n\r\n", 431),
    (b"POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST /containers/create HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n", 400),
    (b"GET //containers/json HTTP/1.1\r\nHost: d\r\n\r\n", 400),     # dockerd itself: 301
    (b"GET /v1.41.0/containers/json HTTP/1.1\r\nHost: d\r\n\r\n", 400),  # dockerd itself: 200
    (b"GET /containers/%zz/json HTTP/1.1\r\nHost: d\r\n\r\n", 400),  # dockerd itself: 400
])
def test_malformed_requests_get_a_clear_error(gw, data, status):
    got, body = parse_response(raw(gw, data))
    assert (got, bool(json.loads(body)["message"])) == (status, True)


@pytest.mark.parametrize("target", [b"/V1.41/containers/json", b"/v1.11/containers/json", b"/v1.42/containers/json",
                                    b"/containers%2Fjson", b"/%761.24/containers/json", b"/nowhere"])
def test_odd_but_unambiguous_requests_get_dockerds_own_answer(gw, box, target):
    request = b"GET " + target + b" HTTP/1.1\r\nHost: d\r\n\r\n"
    through = parse_response(raw(gw, request))
    direct = parse_response(raw(gw, request, path=f"/proc/{box.pid}/root{ENGINE}"))
    assert through == direct and through[0] in (200, 400, 404)


def test_a_stalled_body_and_early_hang_ups_stall_nobody(gw, box):
    baseline = gw.open_fds()
    stalled = socket.socket(socket.AF_UNIX)
    stalled.connect(gw.socket_from_host)
    stalled.sendall(b"POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 1000\r\n\r\n{\"Image\":")
    for target in (b"/events", b"/containers/json", b"/v1.41/images/json"):  # hang up before or mid-answer
        raw(gw, b"GET " + target + b" HTTP/1.1\r\nHost: d\r\n\r\n", hang_up=True)
    assert gw.docker("ps", "--format", "{{.ID}}", timeout=10).returncode == 0
    assert gw.docker("version", "--format", "{{.Server.APIVersion}}", timeout=10).stdout.strip() == "1.41"
    stalled.close()
    box.wait_until(lambda: gw.open_fds() <= baseline, 10, what="the gateway's connections to close")


def test_300_idle_connections(gw, box):
    baseline, rss_before = gw.open_fds(), gw.rss_kib()
    idle = []
    try:
        for _ in range(300):
            s = socket.socket(socket.AF_UNIX)
            s.connect(gw.socket_from_host)
            idle.append(s)
        box.wait_until(lambda: gw.open_fds() >= baseline + 300, 10, what="300 accepted connections")
        assert gw.docker("ps", timeout=10).returncode == 0
        assert gw.rss_kib() - rss_before < 30 * 1024
    finally:
        for s in idle:
            s.close()
    box.wait_until(lambda: gw.open_fds() <= baseline, 10, what="the idle connections to close")


# ---- restarts ------------------------------------------------------------------------


def test_a_restart_keeps_an_exec_session_and_refuses_no_one(gw, box, box_cleanup):
    session = shell(gw, box, box_cleanup.unique("gw-restart"), "echo before-$((1+1))", "before-2")
    old = gw.main_pid()
    failures: list[str] = []
    calls = 0
    restarting = True

    def callers() -> None:  # new connections all through the restart
        nonlocal calls
        while restarting:
            done = gw.docker("version", "--format", "{{.Server.Version}}", check=False, timeout=30)
            calls += 1
            if done.returncode != 0:
                failures.append(done.stderr)
    thread = threading.Thread(target=callers)
    thread.start()
    try:
        box.wait_until(lambda: calls >= 1, 20, what="a first call")
        box.run(["systemctl", "restart", SERVICE], timeout=60)
        at_restart = calls
        box.wait_until(lambda: calls >= at_restart + 2, 30, what="calls after the restart")
    finally:
        restarting = False
        thread.join()
    assert gw.main_pid() != old and failures == []
    session.send("echo after-$((2+2))\n")
    session.wait_for(box, "after-4")
    session.send("exit 5\n")
    assert session.proc.wait(20) == 5
