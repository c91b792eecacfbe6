"""Warnings reach people, end to end: ds01d.service as shipped, in the box, decides about a
user's container, and the user reads it on a real pty they own (0620, group tty), the
admins' webhook receiver gets its JSON, and a local SMTP receiver gets the mail through the
real sendmail (msmtp's).  Hostile cases: notify commands that hang or fail, a webhook that
is down or slow, escapes in what users control, a terminal nobody reads."""

from __future__ import annotations

import json
import selectors
import subprocess
import textwrap
from typing import Any

import pytest

from tests.box.box import BOX_CHECKOUT
from tests.service import Service, ids_of

pytestmark = pytest.mark.box
TOOLS = f"{BOX_CHECKOUT}/tests/tools"
USER, UID = "nora", 2001
NOTIFY_UID = 2999  # the package's system user ds01-notify (debian/ds01d.sysusers), made here by hand

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
    box.add_user("ds01-notify", NOTIFY_UID)
    svc = Service(box, config())
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
    configure(service)
    seen = Terminals(box, ttys=2, stalled=1)
    cid = start(box, box_cleanup, "nora-stalled", "--gpus", "device=7")
    service.wait_decision(DS01_CONTAINER=cid, DS01_ACTION="warn-gpu-start")
    read = seen.read()
    assert list(read) == [t for t in seen.ttys if t not in seen.stalled]
    assert "nora-stalled: asks for GPU 7" in next(iter(read.values()))
    assert service.show("ActiveState")["ActiveState"] == "active"
