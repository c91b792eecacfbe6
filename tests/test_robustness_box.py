"""ds01d under attack and under a flaky Docker: it never falls over and never stalls.

Each test is a local user, or Docker, doing what the daemon must survive, then the checks
an admin would make: the same MainPID, no restart, no watchdog timeout in the journal,
and the status socket still answering others.
"""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

from tests.box.box import BOX_CHECKOUT
from tests.service import Service, ids_of

pytestmark = pytest.mark.box

SOCKET = "/run/ds01/ds01d.sock"
MALLORY, OSCAR = 2301, 2302
TOOLS = f"{BOX_CHECKOUT}/tests/tools"
CONFIG = textwrap.dedent("""\
    daemon:
      state_dir: {state_dir}
      sampling_interval: 1s
    policies:
      sigterm_grace: 1s
    default_group: students
    groups:
      students: {}
    """)


@pytest.fixture(scope="module")
def svc(box):
    box.add_user("mallory", MALLORY)
    box.add_user("oscar", OSCAR)
    service = Service(box, CONFIG)
    service.reset(CONFIG)
    yield service
    service.stop()


@pytest.fixture
def watched(svc):
    """The daemon's PID and restart count before the test, checked unchanged after it."""
    if svc.show("ActiveState")["ActiveState"] != "active":
        svc.reset(CONFIG)
    before = svc.show("MainPID", "NRestarts")
    cursor = svc.box.journal_cursor()
    yield svc
    after = svc.show("MainPID", "NRestarts", "ActiveState")
    if after != {**before, "ActiveState": "active"}:
        said = svc.box.journal(unit="ds01d.service", since_cursor=cursor)
        why = "\n".join(f"{e.get('MESSAGE', '')} {e.get('DS01_DETAILS', '')}"[:600] for e in said[-25:])
        raise AssertionError(f"ds01d died or was restarted ({before} -> {after}); its journal:\n{why}")
    said = svc.box.journal(unit="ds01d.service", since_cursor=cursor)
    texts = [e.get("MESSAGE", "") for e in said]
    assert not [t for t in texts if "Watchdog timeout" in t or "status request failed" in t
                or "handling" in t and "failed" in t], texts


def raw(box, request: bytes, uid: int = MALLORY, hang_up: bool = False) -> tuple[int, dict]:
    """Send `request` as `uid`; (HTTP status, JSON body) of the answer."""
    argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", box.python,
            f"{TOOLS}/raw_http.py", SOCKET, *(["--hang-up"] if hang_up else [])]
    out = subprocess.run(box.command(argv), input=request, capture_output=True, timeout=60, check=True).stdout
    if hang_up:
        return 0, {}
    head, _, body = out.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def post(path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            .encode() + body)


def status_answers(box, uid: int = OSCAR) -> bool:
    return raw(box, b"GET /v1/status HTTP/1.0\r\n\r\n", uid)[0] == 200


def test_clients_hanging_up_before_the_answer_do_not_end_ds01d(watched, box):
    for _ in range(30):
        raw(box, b"GET /v1/status HTTP/1.0\r\n\r\n", hang_up=True)
        raw(box, post("/v1/allocate", b'{"wait_s": 5}'), hang_up=True)
        raw(box, post("/v1/release", b'{"container": "nothing-here"}'), hang_up=True)
    assert status_answers(box)


@pytest.mark.parametrize("body", [b'{"wait_s": "soon"}', b'{"wait_s": NaN}', b'{"wait_s": 1e9}',
                                  b'{"wait_s": []}', b'{"count": true}', b'[1, 2]', b'{"wait_s": 1e999}'])
def test_bad_arguments_get_a_400_in_one_sentence(watched, box, body):
    code, answer = raw(box, post("/v1/allocate", body))
    assert code == 400
    assert answer["error"].startswith("bad request: ") and "\n" not in answer["error"]


@pytest.mark.parametrize("request_bytes,code", [
    (b"POST /v1/allocate HTTP/1.0\r\n\r\n{}", 411),
    (b"POST /v1/allocate HTTP/1.0\r\nContent-Length: -1\r\n\r\n{}", 400),
    (b"POST /v1/allocate HTTP/1.0\r\nContent-Length: 99999999\r\n\r\n{}", 413),
    (b"POST /v1/allocate HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 411),
])
def test_bodies_need_a_bounded_content_length(watched, box, request_bytes, code):
    assert raw(box, request_bytes)[0] == code


def test_thousands_of_malformed_requests_change_nothing(watched, box):
    argv = ["setpriv", f"--reuid={MALLORY}", f"--regid={MALLORY}", "--clear-groups", box.python,
            f"{TOOLS}/socket_fuzz.py", SOCKET, "5000", "20261125"]
    result = json.loads(box.run(argv, timeout=600).stdout)
    print("fuzz:", result)
    assert sum(result["outcomes"].values()) == 5000
    assert status_answers(box)


def test_one_user_cannot_exhaust_the_socket(watched, box):
    """Mallory holds hundreds of idle connections: she is turned away, Oscar is not."""
    script = textwrap.dedent(f"""\
        import socket, json, time
        held, refused = [], 0
        def connect():
            for _ in range(500):  # a full listen backlog says EAGAIN: come again, as an attacker would
                s = socket.socket(socket.AF_UNIX); s.settimeout(2)
                try:
                    s.connect({SOCKET!r}); return s
                except BlockingIOError:
                    s.close(); time.sleep(0.01)
            raise SystemExit("could not connect")
        for _ in range(300):
            held.append(connect())
        for s in held:
            try:
                if s.recv(12).startswith(b"HTTP/1.0 503"): refused += 1
            except socket.timeout:
                pass
        print(json.dumps({{"refused": refused}}), flush=True)
        input()  # hold the rest until the test is done
        """)
    mallory = subprocess.Popen(box.command(["setpriv", f"--reuid={MALLORY}", f"--regid={MALLORY}",
                                            "--clear-groups", box.python, "-c", script]),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        refused = json.loads(mallory.stdout.readline())["refused"]
        assert refused >= 300 - 16
        assert status_answers(box, OSCAR)
        fds = int(box.run(["sh", "-c", f"ls /proc/{watched.main_pid()}/fd | wc -l"]).stdout)
        assert fds < 200
    finally:
        mallory.communicate("\n", timeout=30)


def test_a_silent_connection_is_closed_after_the_read_timeout(watched, box):
    script = textwrap.dedent(f"""\
        import socket, time
        s = socket.socket(socket.AF_UNIX); s.settimeout(30); s.connect({SOCKET!r})
        t = time.monotonic(); s.recv(1); print(round(time.monotonic() - t, 1))
        """)
    waited = float(box.run_as(MALLORY, [box.python, "-c", script], timeout=60).stdout)
    assert 9 <= waited <= 15


def test_docker_restarts_while_containers_run_do_not_end_ds01d(watched, box, box_cleanup):
    box.docker("run", "-d", "--restart=always", "--name", box_cleanup("survivor"), "--label", "ds01.user=oscar",
               "busybox:local", "sleep", "600")
    cid = ids_of(box, ["survivor"])["survivor"]
    for _ in range(2):
        box.run(["systemctl", "restart", "docker.service"], timeout=120)
    box.wait_until(lambda: "Docker connected" in watched.show("StatusText")["StatusText"], 10.0,
                   what="ds01d reconnected")
    watched.wait_record(cid, 10.0, owner="oscar", status="running")


def test_a_hung_dockerd_does_not_stall_ds01d(watched, box):
    """dockerd frozen (SIGSTOP): calls time out, the watchdog (3 s here) is fed, the socket answers."""
    dockerd = box.run(["systemctl", "show", "-P", "MainPID", "docker.service"]).stdout.strip()
    cursor = box.journal_cursor()
    box.run(["kill", "-STOP", dockerd])
    try:
        box.run(["systemctl", "reload", "ds01d.service"])   # a reload reconciles: a Docker call that hangs
        box.wait_until(lambda: watched.decisions(DS01_ACTION="docker-disconnected") and
                       box.journal("DS01_ACTION=docker-disconnected", since_cursor=cursor), 20.0,
                       what="ds01d giving up on the frozen dockerd")
        assert status_answers(box)
        assert "Docker unreachable" in watched.show("StatusText")["StatusText"]
    finally:
        box.run(["kill", "-CONT", dockerd])
    box.wait_until(lambda: "Docker connected" in watched.show("StatusText")["StatusText"], 10.0,
                   what="ds01d back with dockerd")


REFUSALS = """\
import json, socket, sys
codes = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_UNIX); s.connect("/run/ds01/ds01d.sock")
    body = json.dumps({"wait_s": 0}).encode()
    s.sendall(b"POST /v1/allocate HTTP/1.0\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body) + body)
    codes.append(s.makefile("rb").readline().split()[1].decode())
    s.close()
print(" ".join(codes))
"""


def test_refusals_a_user_provokes_are_rate_limited_in_the_journal(watched, box):
    """200 refused allocations in a row: each is answered, the journal (everyone's) gets a few."""
    cursor = box.journal_cursor()
    out = box.run_as(MALLORY, ["python3", "-c", REFUSALS, "200"], timeout=120).stdout.split()
    assert len(out) == 200 and set(out) == {"409"}, out[:5]
    said = box.journal("DS01_USER=mallory", "DS01_ACTION=allocate-refused", since_cursor=cursor)
    assert 1 <= len(said) <= 5
    assert status_answers(box)
