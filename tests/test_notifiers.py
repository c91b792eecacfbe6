"""The two notifiers: the text of a notice, who is mailed, the RFC 5322 message, the webhook's
JSON, and their failures in one sentence.  The webhook posts to a real local HTTP server;
the mail goes to a stand-in sendmail here (the box test uses msmtp's and an SMTP receiver)."""

from __future__ import annotations

import email
import email.policy
import http.server
import json
import socket
import threading
from collections.abc import Iterator

import pytest

from ds01d.cli import notify_mail, notify_webhook
from ds01d.cli.notice import Notice

ENV = {"DS01_USER": "nora", "DS01_CONTAINER": "0123456789abcdef0123", "DS01_CONTAINER_NAME": "train",
       "DS01_ACTION": "warn-idle", "DS01_DEADLINE": "2026-12-01T10:00:00+00:00",
       "DS01_REASON": "train will be stopped at 2026-12-01 10:00 UTC (in 15m): GPU idle since 09:30"}


def notice(**changes: str) -> Notice:
    return Notice.from_env({**ENV, **changes}, "gpu1")


def test_a_notice_says_what_where_and_when():
    n = notice()
    assert n.headline() == "ds01d on gpu1: train will be stopped at 2026-12-01 10:00 UTC (in 15m): GPU idle since 09:30"
    assert n.body() == (
        f"{n.headline()}\n\n"
        "User:      nora\n"
        "Container: train (0123456789ab)\n"
        "Action:    warn-idle\n"
        "Deadline:  2026-12-01T10:00:00+00:00\n\n"
        "`ds01-gpu-status --mine` on gpu1 shows your containers and their deadlines.\n")
    assert len(notice(DS01_REASON="x" * 500).subject()) == 140


def test_a_notice_escapes_what_users_control():
    n = notice(DS01_REASON="asks for GPU \x1b]0;owned\x07\nBcc: all@lab", DS01_USER="\u202eevil")
    assert "\x1b" not in n.body() and "\n" not in n.headline()
    assert "\\x1b]0;owned\\x07\\x0aBcc: all@lab" in n.headline() and "\\u202eevil" in n.body()


@pytest.mark.parametrize("to, owner, domain, env_user, expected, note", [
    (["admins@lab.org"], False, None, "nora", ["admins@lab.org"], ""),
    ([], True, None, "nora", ["nora"], ""),
    (["admins@lab.org"], False, "lab.org", "nora", ["nora@lab.org", "admins@lab.org"], ""),
    (["nora@lab.org"], False, "lab.org", "nora", ["nora@lab.org"], ""),
    (["admins@lab.org"], True, None, "", ["admins@lab.org"], "the container has no owner; mailing --to only"),
    ([], False, "lab.org", "jean@lab", [], "owner 'jean@lab' is not a mailbox name; mailing --to only"),
])
def test_who_is_mailed(to, owner, domain, env_user, expected, note):
    assert notify_mail.recipients(notice(DS01_USER=env_user), to, owner, domain) == (expected, note)


def test_addresses_on_the_command_line_are_plain(capsys):
    with pytest.raises(SystemExit):
        notify_mail.parser().parse_args(["--to", "a@b.org, evil@x.org"])
    assert "not a plain mail address: 'a@b.org, evil@x.org'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        notify_mail.parser().parse_args(["--owner", "--owner-domain", "lab.org"])


def test_the_mail_is_rfc_5322():
    raw = notify_mail.message(notice(), "ds01d@gpu1.lab.org", ["nora@lab.org", "admins@lab.org"]).as_bytes()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert (msg["From"], msg["To"]) == ("ds01d@gpu1.lab.org", "nora@lab.org, admins@lab.org")
    assert msg["Subject"] == notice().subject() and msg["Date"] and msg["Message-ID"].endswith("@gpu1.lab.org>")
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg.get_content() == notice().body()


def set_env(monkeypatch, **extra: str) -> None:
    """The DS01_* environment ds01d gives its notify command (real: sendmail inherits it)."""
    for key, value in {**ENV, **extra}.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def sendmail(tmp_path):
    """A stand-in sendmail that keeps its argv and input, and fails when asked to."""
    script = tmp_path / "sendmail"
    script.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/argv\ncat > {tmp_path}/mail\n'
                      'if [ -n "$FAIL" ]; then echo "sendmail: cannot connect to relay" >&2; exit 75; fi\n')
    script.chmod(0o755)
    return script


def test_mail_is_handed_to_sendmail_t(sendmail, monkeypatch, capsys):
    set_env(monkeypatch)
    code = notify_mail.main(["--owner-domain", "lab.org", "--to", "admins@lab.org", "--from", "ds01d@gpu1.lab.org",
                             "--sendmail", str(sendmail)])
    assert code == 0 and "mailed nora@lab.org, admins@lab.org" in capsys.readouterr().out
    assert (sendmail.parent / "argv").read_text() == "-oi -t -f ds01d@gpu1.lab.org\n"
    assert b"To: nora@lab.org, admins@lab.org" in (sendmail.parent / "mail").read_bytes()


def test_mail_failures_are_one_sentence(sendmail, tmp_path, monkeypatch, capsys):
    set_env(monkeypatch, FAIL="1")
    assert notify_mail.main(["--owner", "--sendmail", str(sendmail)]) == 1
    assert capsys.readouterr().err == f"ds01d-notify-mail: {sendmail} exited 75: sendmail: cannot connect to relay\n"
    assert notify_mail.main(["--owner", "--sendmail", str(tmp_path / "none")]) == 1
    assert capsys.readouterr().err == (f"ds01d-notify-mail: {tmp_path / 'none'} not found: install a mail transfer "
                                       "agent (msmtp-mta, postfix, ...)\n")


def test_nobody_to_mail_is_not_an_error(monkeypatch, capsys):
    set_env(monkeypatch, DS01_USER="")
    assert notify_mail.main(["--owner", "--sendmail", "/nonexistent"]) == 0
    assert capsys.readouterr().out.splitlines() == ["ds01d-notify-mail: the container has no owner; mailing --to only",
                                                    "ds01d-notify-mail: nobody to mail"]


def test_the_webhook_json_cannot_ping_a_channel():
    body = json.loads(notify_webhook.payload(notice(DS01_REASON="GPU <!channel> & \x1b[2J")))
    assert body == {"text": "ds01d on gpu1: GPU &lt;!channel&gt; &amp; \\x1b[2J (user nora)"}


class Receiver(http.server.BaseHTTPRequestHandler):
    status = 200
    delay = threading.Event()
    received: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append((self.path, self.headers["Content-Type"], body))
        if self.server.slow:  # type: ignore[attr-defined]
            Receiver.delay.wait(5)
        try:
            self.send_response(self.server.status)  # type: ignore[attr-defined]
            self.end_headers()
            self.wfile.write(b"ok")
        except OSError:
            pass  # the slow case: the client gave up

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.status, server.slow = 200, False  # type: ignore[attr-defined]
    Receiver.received.clear()
    Receiver.delay.clear()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    Receiver.delay.set()
    server.shutdown()
    server.server_close()


def url(server: http.server.ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/hooks/s3cr3t"


def test_the_webhook_posts_json(receiver, tmp_path, monkeypatch, capsys):
    set_env(monkeypatch)
    secret = tmp_path / "url"
    secret.write_text(url(receiver) + "\n")
    assert notify_webhook.main(["--url-file", str(secret)]) == 0
    [(path, kind, body)] = Receiver.received
    assert (path, kind) == ("/hooks/s3cr3t", "application/json")
    assert json.loads(body)["text"].startswith("ds01d on ")
    assert "s3cr3t" not in capsys.readouterr().out


def test_webhook_failures_are_one_sentence_without_the_secret(receiver, tmp_path, monkeypatch, capsys):
    set_env(monkeypatch)
    where = f"http://127.0.0.1:{receiver.server_address[1]}"
    receiver.status = 500
    assert notify_webhook.main([url(receiver)]) == 1
    receiver.status, receiver.slow = 200, True
    assert notify_webhook.main([url(receiver), "--timeout", "0.3"]) == 1
    receiver.slow = False
    with socket.socket() as unused:  # down: a port nobody listens on
        unused.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{unused.getsockname()[1]}"
        assert notify_webhook.main([f"{down}/hooks/s3cr3t", "--timeout", "2"]) == 1
    assert notify_webhook.main(["file:///etc/passwd"]) == 1
    assert notify_webhook.main(["--url-file", str(tmp_path / "none")]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"ds01d-notify-webhook: {where} answered HTTP 500 Internal Server Error",
        f"ds01d-notify-webhook: {where} gave no answer within 0.3 s",
        f"ds01d-notify-webhook: {down}: Connection refused",
        "ds01d-notify-webhook: the webhook URL must be http:// or https:// with a host",
        f"ds01d-notify-webhook: cannot read {tmp_path / 'none'}: No such file or directory",
    ]
