"""The notify command's transient unit: its name, its properties (argv, escaped environment,
timeout, sandbox) and what its end says.  The box tests run it on a real systemd."""

from __future__ import annotations

import re

import pytest

from ds01d.host.notify_unit import NOTIFY_USER, SANDBOX, outcome, run_notify_command, unit_name, unit_properties


def test_unit_names_are_valid_and_say_what_they_are_for():
    assert unit_name("warn-idle", "0123456789abcdef" * 4, "cafe") == "ds01-notify-warn-idle-0123456789ab-cafe.service"
    assert unit_name("", "", "cafe") == "ds01-notify-cafe.service"
    name = unit_name("../Stop Now\\x2d", "ÿ/\n")
    assert re.fullmatch(r"ds01-notify-stopnowx2d-[0-9a-f]{8}\.service", name)
    assert unit_name("stop", "c") != unit_name("stop", "c")  # concurrent notices never clash


def test_properties_carry_argv_escaped_fields_and_the_timeout():
    props = dict(unit_properties(["/usr/bin/ds01d-notify-webhook", "--url-file", "/etc/ds01/hook"],
                                 {"DS01_USER": "alice", "DS01_REASON": "GPU \x1b[2J\nidle"}, 2.5, "ds01d: stop"))
    assert props["ExecStart"] == ("a(sasb)", [("/usr/bin/ds01d-notify-webhook",
                                               ["/usr/bin/ds01d-notify-webhook", "--url-file", "/etc/ds01/hook"],
                                               False)])
    assert props["Environment"] == ("as", ["DS01_USER=alice", "DS01_REASON=GPU \\x1b[2J\\x0aidle"])
    assert props["RuntimeMaxUSec"] == ("t", 2_500_000)
    assert props["User"] == ("s", NOTIFY_USER)
    assert props["AddRef"] == ("b", True) and props["CollectMode"] == ("s", "inactive-or-failed")


def test_the_sandbox_keeps_the_network_and_setuid_mtas():
    sandbox = dict(SANDBOX)
    assert not {"PrivateNetwork", "IPAddressDeny", "RestrictAddressFamilies"} & set(sandbox)
    # DynamicUser=, NoNewPrivileges= and any seccomp filter (it implies NoNewPrivileges= for a
    # service that is not root) would stop postdrop, exim4 and nullmailer-queue.
    assert not {"DynamicUser", "NoNewPrivileges", "SystemCallFilter", "PrivateDevices", "LockPersonality"} & set(sandbox)
    assert sandbox["ProtectSystem"] == ("s", "full")  # /var/spool stays writable for the MTA
    bounding = sandbox["CapabilityBoundingSet"][1]
    assert not bounding & (1 << 21) and not bounding & (1 << 16)  # CAP_SYS_ADMIN, CAP_SYS_MODULE
    assert bounding & (1 << 7) and bounding & (1 << 6)           # CAP_SETUID, CAP_SETGID (exim4)


@pytest.mark.parametrize("result, code, status, said", [
    ("success", 1, 0, None),
    ("exit-code", 1, 3, "exited 3"),
    ("timeout", 2, 15, "ran longer than 30 s and was stopped"),
    ("signal", 2, 9, "was killed by signal 9"),
    ("core-dump", 3, 11, "was killed by signal 11"),
    ("exit-code", 1, 217, "could not run as user ds01-notify, which does not exist (see ds01d(8))"),
    ("exit-code", 1, 203, "could not be executed (missing, or not executable by ds01-notify)"),
    ("exit-code", 1, 226, "could not be started by systemd (exit status 226, see systemd.exec(5))"),
    ("resources", 0, 0, "failed (resources)"),
])
def test_outcomes_in_one_sentence(result, code, status, said):
    assert outcome(result, code, status, 30) == said


def test_no_bus_is_one_sentence():
    def refuse():
        raise FileNotFoundError(2, "No such file or directory")
    error = run_notify_command(["/usr/bin/true"], {}, 5, "stop", "c", connect=refuse)
    assert error == "notify command /usr/bin/true: cannot reach systemd's D-Bus: [Errno 2] No such file or directory"
