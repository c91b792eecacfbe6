"""The admin's notify command: argv, no shell, DS01_* fields in the environment, errors reported."""

from ds01d.host.messages import run_notify_command, tell_user


def test_notify_command_gets_the_fields(tmp_path):
    out = tmp_path / "out"
    error = run_notify_command(["/bin/sh", "-c", f'echo "$DS01_ACTION $DS01_USER $DS01_REASON" > {out}'],
                               {"DS01_ACTION": "warn-idle", "DS01_USER": "alice", "DS01_REASON": "idle 25m"})
    assert error is None
    assert out.read_text() == "warn-idle alice idle 25m\n"


def test_notify_command_failures_are_reported_not_raised(tmp_path):
    assert "exited 3" in run_notify_command(["/bin/sh", "-c", "echo oops >&2; exit 3"], {})
    assert "No such file" in run_notify_command([str(tmp_path / "missing")], {})
    assert "timed out" in run_notify_command(["/bin/sleep", "5"], {}, timeout=0.2)


def test_nobody_logged_in_reaches_no_terminal():
    assert tell_user("no-such-user-ds01", "hello") == 0
