"""`ds01d-notify-mail`: ds01d's notice as a mail, through the host's own sendmail.

For `policies.notify_command`, e.g.
`[/usr/bin/ds01d-notify-mail, --owner-domain, lab.example.org, --to, gpu-admins@lab.example.org]`.

Who gets it is the admin's choice, on the command line: the container's owner (`--owner`,
their local mailbox, which /etc/aliases or the MTA may forward, or `--owner-domain D`,
user@D), and any fixed addresses (`--to`, repeatable: the admins).  A container with no
owner goes to the `--to` addresses only; with none of those, nobody is mailed and that
is not an error.

The mail goes to `/usr/sbin/sendmail -oi -t` (every MTA's interface: msmtp-mta, postfix,
exim4, nullmailer), so relaying, authentication and queueing are the MTA's business.
Addresses are checked to be plain `local@domain` before they reach a header, so nothing
a user controls can add a recipient.
"""

from __future__ import annotations

import argparse
import email.utils
import os
import re
import socket
import subprocess
from email.message import EmailMessage
from typing import Sequence

from ds01d.cli.notice import Notice, complain

PROG = "ds01d-notify-mail"
ADDRESS = re.compile(r"[A-Za-z0-9._%+-]+(@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*)?")
LOCAL_PART = re.compile(r"[A-Za-z0-9._+-]+")


def address(text: str) -> str:
    """argparse type: a bare address, user@domain or a local mailbox."""
    if not ADDRESS.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not a plain mail address: {text!r}")
    return text


def domain(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*", text):
        raise argparse.ArgumentTypeError(f"not a domain name: {text!r}")
    return text


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Mail ds01d's notice (read from the DS01_* environment) "
                                                       "to the container's owner and/or fixed addresses.")
    owner = p.add_mutually_exclusive_group()
    owner.add_argument("--owner", action="store_true", help="mail the owner's local mailbox (user name only)")
    owner.add_argument("--owner-domain", type=domain, metavar="DOMAIN", help="mail the owner at USER@DOMAIN")
    p.add_argument("--to", type=address, action="append", default=[], metavar="ADDRESS",
                   help="also mail this address (repeatable), e.g. the admins")
    p.add_argument("--from", dest="sender", type=address, metavar="ADDRESS",
                   help="sender (default: ds01d@ this host's name)")
    p.add_argument("--sendmail", default="/usr/sbin/sendmail", metavar="PATH", help="default: %(default)s")
    p.add_argument("--timeout", type=float, default=20.0, metavar="SECONDS",
                   help="give up on sendmail after this long (default: %(default)s)")
    return p


def recipients(notice: Notice, to: Sequence[str], owner: bool, owner_domain: str | None) -> tuple[list[str], str]:
    """Who is mailed, and a note when the owner could not be (empty when nothing to say)."""
    found = list(to)
    if not (owner or owner_domain):
        return found, ""
    if not notice.user:
        return found, "the container has no owner; mailing --to only"
    if not LOCAL_PART.fullmatch(notice.user):
        return found, f"owner {notice.user!r} is not a mailbox name; mailing --to only"
    mine = f"{notice.user}@{owner_domain}" if owner_domain else notice.user
    return [mine, *(a for a in found if a != mine)], ""


def message(notice: Notice, sender: str, to: Sequence[str]) -> EmailMessage:
    """An RFC 5322 message: From, To, Subject, Date, Message-ID, a plain UTF-8 body."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = notice.subject()
    msg["Date"] = email.utils.formatdate(localtime=True)
    msg["Message-ID"] = email.utils.make_msgid("ds01d", domain=sender.rpartition("@")[2] or None)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to a robot
    msg.set_content(notice.body())
    return msg


def send(sendmail: str, msg: EmailMessage, sender: str, timeout: float) -> str | None:
    """Hand the message to sendmail; its error, if any, in one sentence."""
    try:
        done = subprocess.run([sendmail, "-oi", "-t", "-f", sender], input=msg.as_bytes(), capture_output=True,
                              timeout=timeout)
    except FileNotFoundError:
        return f"{sendmail} not found: install a mail transfer agent (msmtp-mta, postfix, ...)"
    except subprocess.TimeoutExpired:
        return f"{sendmail} did not finish within {timeout:g} s"
    except OSError as exc:
        return f"{sendmail}: {exc.strerror or exc}"
    if done.returncode != 0:
        said = (done.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1][:300]
        return f"{sendmail} exited {done.returncode}: {said}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    host = socket.gethostname()
    notice = Notice.from_env(os.environ, host)
    to, note = recipients(notice, args.to, args.owner, args.owner_domain)
    if note:
        print(f"{PROG}: {note}")
    if not to:
        print(f"{PROG}: nobody to mail")
        return 0
    sender = args.sender or f"ds01d@{socket.getfqdn()}"
    error = send(args.sendmail, message(notice, sender, to), sender, args.timeout)
    if error:
        return complain(PROG, error)
    print(f"{PROG}: mailed {', '.join(to)}")
    return 0
