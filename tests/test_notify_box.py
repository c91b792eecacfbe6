"""Warnings reach people, end to end: ds01d.service as shipped, in the box, decides about a
user's container, and the user reads it on a real pty they own (0620, group tty), the
admins' webhook receiver gets its JSON, and a local SMTP receiver gets the mail through the
real sendmail (msmtp's).  Hostile cases: notify commands that hang or fail, a webhook that
is down or slow, escapes in what users control, a terminal nobody reads."""

from __future__ import annotations

import email
import email.policy
import json
import os
import selectors
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.box.box import BOX_CHECKOUT
from tests.service import NOTIFY_UID, Service, ids_of, notify_output

pytestmark = pytest.mark.box
TOOLS = f"{BOX_CHECKOUT}/tests/tools"
USER, UID = "nora", 2601
WEBHOOK_PORT, SMTP_PORT = 8089, 2525  # on the box's own loopback
# msmtp (msmtp-mta's /usr/sbin/sendmail) as an admin would set it up in /etc/msmtprc; the box
# shares the host's /etc, so here it is ds01-notify's own ~/.msmtprc (Service.notify_home).
MSMTPRC = f"account default\nhost 127.0.0.1\nport {SMTP_PORT}\ntls off\nauth off\nsyslog off\n"

CONFIG = textwrap.dedent("""\
    daemon: {state_dir: "{state_dir}", sampling_interval: 1s}
    policies:
      sigterm_grace: 1s
      notify_timeout: 3s
      notify_command: NOTIFY
    defaults:
      max_containers: 1
    default_group: users
    groups:
      users: {}
    """)


def config(notify: list[str] | None = None) -> str:
    return CONFIG.replace("NOTIFY", json.dumps(notify) if notify else "null")


@pytest.fixture(scope="module")
def service(box):
    box.add_user(USER, UID)
    svc = Service(box, config())
    msmtprc = svc.notify_home / ".msmtprc"
    msmtprc.write_text(MSMTPRC)
    os.chown(msmtprc, NOTIFY_UID, NOTIFY_UID)
    msmtprc.chmod(0o600)
    svc.reset(config())
    yield svc
    svc.stop()


def configure(service: Service, notify: list[str] | None = None) -> Service:
    """The daemon running with this notify command."""
    service.write_config(config(notify))
    if service.show("ActiveState")["ActiveState"] != "active":
        service.reset(config(notify))
    else:
        cursor = service.box.journal_cursor()
        service.box.run(["systemctl", "reload", "ds01d.service"])
        service.box.wait_until(lambda: service.box.journal("DS01_ACTION=reload", unit="ds01d.service",
                                                           since_cursor=cursor), 5.0, what="config reloaded")
    return service


def start(box, cleanup, name: str, *args: str) -> str:
    box.docker("run", "-d", "--name", cleanup(name), "--label", f"ds01.user={USER}",
               "--cgroup-parent", f"ds01-users-{USER}.slice", *args,
               "busybox:local", "sleep", "600")
    return ids_of(box, [name])[name]


class Terminals:
    """pty_user.py run as the user: their ptys, made 0620 group tty as login or sshd make them."""

    def __init__(self, box, ttys: int = 1, stalled: int = 0, expect: int = 1):
        argv = ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", "/usr/bin/python3",
                f"{TOOLS}/pty_user.py", f"--ttys={ttys}", f"--stalled={stalled}", f"--expect={expect}",
                "--timeout=30"]
        self.proc = subprocess.Popen(box.command(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready = self.line(10.0)
        self.ttys, self.stalled = ready["ttys"], ready["stalled"]
        for tty in self.ttys:
            box.run(["chgrp", "tty", tty])
            box.run(["chmod", "0620", tty])

    def line(self, timeout: float) -> dict[str, Any]:
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                self.proc.kill()
                raise TimeoutError(f"pty_user.py said nothing in {timeout:g} s: {self.proc.stderr.read()}")
        return json.loads(self.proc.stdout.readline())

    def read(self) -> dict[str, str]:
        """What each read terminal showed, once it has what was expected (or pty_user's timeout)."""
        out, err = self.proc.communicate(timeout=40)
        assert self.proc.returncode == 0, err
        return json.loads(out.splitlines()[-1])["read"]


def test_a_stop_reaches_the_owners_terminal(service, box, box_cleanup):
    configure(service)
    seen = Terminals(box)
    first = start(box, box_cleanup, "nora-first")
    service.wait_record(first, 5.0, status="running")
    second = start(box, box_cleanup, "nora-second")
    service.wait_decision(DS01_CONTAINER=second, DS01_ACTION="stop")
    (text,) = seen.read().values()
    assert "\a*** ds01d: stopping nora-second: nora has 2 running containers and may run 1 at once" in text


def test_escapes_in_what_a_user_controls_arrive_escaped(service, box, box_cleanup):
    configure(service)
    seen = Terminals(box)
    cid = start(box, box_cleanup, "nora-escapes", "--gpus", "device=\x1b]0;owned\x07")
    service.wait_decision(DS01_CONTAINER=cid, DS01_ACTION="warn-gpu-start")
    (text,) = seen.read().values()
    assert "nora-escapes: asks for GPU \\x1b]0;owned\\x07" in text
    assert "\x1b" not in text and text.count("\x07") == 1  # ds01d's own bell, nothing of the user's


def test_a_terminal_nobody_reads_does_not_hold_up_the_others(service, box, box_cleanup):
    """One of nora's ptys is full (its reader stopped); the other still gets every message.
    (That the write to the full one returns at once is tests/test_terminals.py's.)"""
    configure(service)
    seen = Terminals(box, ttys=2, stalled=1, expect=3)
    for name in ("nora-stalled-1", "nora-stalled-2"):  # a warning each; the second is also stopped
        start(box, box_cleanup, name, "--gpus", "device=7")
    (text,) = seen.read().values()
    assert "nora-stalled-1: asks for GPU 7" in text and "nora-stalled-2: asks for GPU 7" in text
    assert "stopping nora-stalled-2: nora has 2 running containers" in text
    assert service.show("ActiveState")["ActiveState"] == "active"


# --- the notify command, outside ds01d's sandbox ------------------------------------------


class Sinks:
    """Local receivers in the box, each a transient unit of its own (stopped after the test)."""

    def __init__(self, box):
        self.box, self.units = box, []

    def start(self, unit: str, script: str, *args: str) -> Path:
        out = self.box.state_dir / "sinks" / unit
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        self.box.run(["systemd-run", f"--unit={unit}", "--collect", "/usr/bin/python3", f"{TOOLS}/{script}",
                      f"--out={out}", *args])
        self.units.append(unit)
        self.box.wait_until(lambda: (out / "ready").exists(), 10.0, what=f"{unit} listening")
        return out

    def stop(self) -> None:
        for unit in self.units:
            self.box.run(["systemctl", "stop", unit], check=False)


@pytest.fixture
def sinks(box) -> Iterator[Sinks]:
    started = Sinks(box)
    yield started
    started.stop()


def received(box, out: Path, n: int = 1) -> list[dict[str, Any]]:
    """The first `n` things a receiver kept, once it has them."""
    files = box.wait_until(lambda: (found := sorted(out.glob("*.json"))) and len(found) >= n and found, 15.0,
                           what=f"{n} received in {out.name}")
    return [json.loads(f.read_text()) for f in files[:n]]


def errors_since(service: Service, cursor: str, n: int = 1, timeout: float = 15.0) -> list[dict[str, Any]]:
    """ds01d's `error` entries about the user since `cursor`, once there are `n`."""
    def found() -> list[dict[str, Any]] | None:
        entries = service.box.journal("DS01_ACTION=error", f"DS01_USER={USER}", unit="ds01d.service",
                                      since_cursor=cursor)
        return entries if len(entries) >= n else None
    return service.box.wait_until(found, timeout, what=f"{n} error entries")


def notify_unit_of(entry: dict[str, Any]) -> str:
    return entry["DS01_REASON"].rsplit("journalctl -u ", 1)[1]


def unit_said(box, unit: str) -> str:
    return "\n".join(notify_output(box, unit))


def test_the_webhook_gets_the_notice_escaped(service, box, box_cleanup, sinks):
    out = sinks.start("webhook-sink", "webhook_sink.py", f"--port={WEBHOOK_PORT}")
    url_file = box.run_dir / "webhook-url"
    url_file.write_text(f"http://127.0.0.1:{WEBHOOK_PORT}/hooks/T000/s3cr3t\n")
    os.chown(url_file, 0, NOTIFY_UID)
    url_file.chmod(0o640)
    configure(service, [box.tool("ds01d-notify-webhook"), "--url-file", str(url_file)])
    cid = start(box, box_cleanup, "nora-hook", "--gpus", "device=\x1b]0;owned\x07<!channel>")
    [post] = received(box, out)
    assert (post["path"], post["content_type"]) == ("/hooks/T000/s3cr3t", "application/json")
    text = json.loads(post["body"])["text"]
    assert text == (f"ds01d on ds01-box-{box.name}: nora-hook: asks for GPU \\x1b]0;owned\\x07&lt;!channel&gt;, "
                    f"which this host does not have (user {USER})")
    assert cid


def test_the_mail_reaches_owner_and_admins_through_sendmail(service, box, box_cleanup, sinks):
    out = sinks.start("smtp-sink", "smtp_sink.py", f"--port={SMTP_PORT}")
    configure(service, [box.tool("ds01d-notify-mail"), "--owner-domain", "lab.example", "--to",
                        "gpu-admins@lab.example", "--from", "ds01d@gpu1.lab.example"])
    first = start(box, box_cleanup, "nora-mail-1")
    service.wait_record(first, 5.0, status="running")
    second = start(box, box_cleanup, "nora-mail-2")
    [mail] = received(box, out)
    assert mail["mail_from"] == "<ds01d@gpu1.lab.example>"
    assert mail["rcpt_to"] == ["<nora@lab.example>", "<gpu-admins@lab.example>"]
    msg = email.message_from_string(mail["data"], policy=email.policy.default)
    assert msg["To"] == "nora@lab.example, gpu-admins@lab.example" and msg["Auto-Submitted"] == "auto-generated"
    assert msg["Subject"].startswith(f"ds01d on ds01-box-{box.name}: stopping nora-mail-2: nora has 2 running")
    assert f"Container: nora-mail-2 ({second[:12]})" in msg.get_content()


def test_a_hanging_notify_command_is_stopped_at_its_timeout(service, box, box_cleanup):
    configure(service, ["/bin/sleep", "600"])
    cursor = box.journal_cursor()
    seen = Terminals(box)
    start(box, box_cleanup, "nora-hang", "--gpus", "device=7")
    assert "nora-hang: asks for GPU 7" in next(iter(seen.read().values()))  # terminals come first
    unit = box.wait_until(lambda: box.run(["systemctl", "list-units", "--plain", "--no-legend", "ds01-notify-*"]
                                          ).stdout.split()[:1], 10.0, what="the notify unit running")[0]
    shown = box.systemctl_show(unit, "User", "ProtectSystem", "ProtectHome", "RuntimeMaxUSec", "Environment",
                               "MainPID", "PrivateNetwork")
    assert (shown["User"], shown["ProtectSystem"], shown["ProtectHome"], shown["RuntimeMaxUSec"],
            shown["PrivateNetwork"]) == ("ds01-notify", "full", "yes", "3s", "no")
    assert f"DS01_USER={USER}" in shown["Environment"] and "DS01_ACTION=warn-gpu-start" in shown["Environment"]
    status = box.run(["cat", f"/proc/{shown['MainPID']}/status"]).stdout
    assert f"Uid:\t{NOTIFY_UID}\t" in status and "NoNewPrivs:\t0" in status  # setuid MTAs still work
    [error] = errors_since(service, cursor)
    assert error["DS01_REASON"] == f"notify command /bin/sleep ran longer than 3 s and was stopped; " \
                                   f"see journalctl -u {unit}"
    box.wait_until(lambda: box.systemctl_show(unit, "LoadState")["LoadState"] == "not-found", 10.0,
                   what="the finished notify unit forgotten")
    assert service.show("ActiveState")["ActiveState"] == "active"


def test_a_failing_notify_command_is_journalled_and_ds01d_goes_on(service, box, box_cleanup):
    configure(service, ["/bin/sh", "-c", 'echo "oops: $DS01_CONTAINER_NAME" >&2; exit 3'])
    cursor = box.journal_cursor()
    for name in ("nora-fail-1", "nora-fail-2"):  # a warning each; the second is also stopped (max_containers)
        start(box, box_cleanup, name, "--gpus", "device=7")
    errors = errors_since(service, cursor, 3)
    assert [e["DS01_REASON"].split(" see journalctl -u ds01-notify-")[0] for e in errors] == \
        ["notify command /bin/sh exited 3;"] * 3
    said = box.wait_until(lambda: (x := sorted(unit_said(box, notify_unit_of(e)) for e in errors)) and all(x) and x,
                          5.0, what="what the notify commands said")
    assert said == ["oops: nora-fail-1", "oops: nora-fail-2", "oops: nora-fail-2"]


@pytest.mark.parametrize("how, expected", [
    ("down", "ds01d-notify-webhook: http://127.0.0.1:8089: Connection refused"),
    ("slow", "ds01d-notify-webhook: http://127.0.0.1:8089 gave no answer within 1 s"),
    ("error", "ds01d-notify-webhook: http://127.0.0.1:8089 answered HTTP 503 Service Unavailable"),
])
def test_a_webhook_that_is_down_or_slow_is_one_sentence(service, box, box_cleanup, sinks, how, expected):
    if how != "down":
        sinks.start("webhook-sink", "webhook_sink.py", f"--port={WEBHOOK_PORT}",
                    *(["--delay=60"] if how == "slow" else ["--status=503"]))
    configure(service, [box.tool("ds01d-notify-webhook"), "--timeout=1",
                        f"http://127.0.0.1:{WEBHOOK_PORT}/hooks/T000/s3cr3t"])
    cursor = box.journal_cursor()
    start(box, box_cleanup, f"nora-{how}", "--gpus", "device=7")
    [error] = errors_since(service, cursor)
    assert "ds01d-notify-webhook exited 1; see journalctl -u ds01-notify-" in error["DS01_REASON"]
    said = box.wait_until(lambda: unit_said(box, notify_unit_of(error)), 5.0, what="the notifier's sentence")
    assert said == expected  # one sentence: no traceback, no secret path
