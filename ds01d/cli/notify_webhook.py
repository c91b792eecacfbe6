"""`ds01d-notify-webhook`: ds01d's notice posted to a Slack or Mattermost incoming webhook.

For `policies.notify_command`, e.g. `[/usr/bin/ds01d-notify-webhook, --url-file,
/etc/ds01/webhook-url]`.  Both services take the same JSON, `{"text": "..."}`.

The URL of an incoming webhook is its password: anyone who has it can post.  A URL on the
command line is visible to every local user (ps, `systemctl show` of the notify unit),
so `--url-file` (mode 0640 root:ds01-notify) is the way to give it; and no message of
this command ever shows more of it than scheme, host and port.

Slack reads `<...>` as links and mentions (`<!channel>` pings everyone) and wants `&`,
`<`, `>` escaped as entities, which Mattermost renders as the same characters; so they
are escaped, and what users control cannot ping a channel.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Sequence

from ds01d.cli.notice import Notice, complain

PROG = "ds01d-notify-webhook"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Post ds01d's notice (read from the DS01_* environment) "
                                                       "to a Slack or Mattermost incoming webhook.")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("url", nargs="?", help="the webhook's URL (better: --url-file, which others cannot read)")
    where.add_argument("--url-file", metavar="FILE", help="a file holding the webhook's URL")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                   help="give up after this long without an answer (default: %(default)s)")
    return p


def chat_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def payload(notice: Notice) -> bytes:
    """The incoming-webhook JSON: the notice's headline, and who it is about."""
    text = notice.headline() + (f" (user {notice.user})" if notice.user else "")
    return json.dumps({"text": chat_escape(text)}).encode()


def shown(url: str) -> str:
    """The part of the URL that may appear in a message: scheme, host, port; never the secret path."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")


def read_url(args: argparse.Namespace) -> str:
    """The URL, from argv or its file; ValueError in one sentence when there is none usable."""
    if args.url_file:
        try:
            with open(args.url_file, encoding="utf-8") as f:
                url = f.read().strip()
        except OSError as exc:
            raise ValueError(f"cannot read {args.url_file}: {exc.strerror or exc}") from None
    else:
        url = args.url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the webhook URL must be http:// or https:// with a host")
    return url


def post(url: str, body: bytes, timeout: float) -> str | None:
    """POST the JSON; the failure, if any, in one sentence that does not reveal the URL's path."""
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": PROG})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            answer.read(4096)
    except urllib.error.HTTPError as exc:
        return f"{shown(url)} answered HTTP {exc.code} {exc.reason}"
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            return f"{shown(url)} gave no answer within {timeout:g} s"
        return f"{shown(url)}: {reason.strerror if isinstance(reason, OSError) and reason.strerror else reason}"
    except (TimeoutError, socket.timeout):
        return f"{shown(url)} gave no answer within {timeout:g} s"
    except OSError as exc:
        return f"{shown(url)}: {exc.strerror or exc}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        url = read_url(args)
    except ValueError as exc:
        return complain(PROG, str(exc))
    error = post(url, payload(Notice.from_env(os.environ, socket.gethostname())), args.timeout)
    if error:
        return complain(PROG, error)
    print(f"{PROG}: posted to {shown(url)}")
    return 0
