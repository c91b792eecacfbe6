"""`ds01-gpu-status`: the GPUs, MIG instances and containers of this server, for every user.

Reads ds01d's status socket, so it needs no docker group.  Colour only on a
terminal (never with --no-color or NO_COLOR), `| head` ends quietly, and when the
daemon is down it says so in one sentence and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Sequence

import yaml

from ds01d.config import DEFAULT_PATH, DaemonSettings
from ds01d.cli.status_client import DaemonDown, call
from ds01d.cli.status_render import render

EXIT_DAEMON_DOWN = 2


def socket_path(config_path: str) -> str:
    """The socket named in the config, or the default when this user cannot read the config.

    A file the daemon would refuse (`ds01d reload` right after a bad edit) still names the
    socket the running daemon listens on, so `daemon.socket_path` is read from it as it stands."""
    from ds01d.config import ConfigError, load_config
    try:
        return load_config(config_path).daemon.socket_path
    except ConfigError:
        pass
    try:
        with open(config_path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
        named = raw["daemon"]["socket_path"]
    except (OSError, ValueError, yaml.YAMLError, TypeError, KeyError):
        named = None
    return named if isinstance(named, str) and named.startswith("/") else DaemonSettings().socket_path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ds01-gpu-status",
                                description="GPUs, MIG instances and their containers on this server: who holds "
                                            "what, how busy it is, and when ds01d will stop or release it.")
    p.add_argument("--json", action="store_true", help="the status document (schema: docs/status-json.md)")
    p.add_argument("--mine", action="store_true", help="only devices you use or hold")
    p.add_argument("--watch", nargs="?", type=float, const=2.0, metavar="SECONDS",
                   help="redraw every SECONDS (default 2) until Ctrl-C")
    p.add_argument("--no-color", action="store_true", help="no colours (also: NO_COLOR=1)")
    p.add_argument("--config", default=DEFAULT_PATH, help=argparse.SUPPRESS)
    return p


def fetch(path: str, mine: bool) -> dict:
    code, doc = call(path, "GET", "/v1/status?mine=1" if mine else "/v1/status")
    if code != 200:
        raise DaemonDown(doc.get("error", f"ds01d answered HTTP {code}"))
    return doc


def show(doc: dict, as_json: bool, color: bool) -> str:
    return json.dumps(doc, indent=2) + "\n" if as_json else render(doc, color)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    color = sys.stdout.isatty() and not args.no_color and not os.environ.get("NO_COLOR")
    path = socket_path(args.config)
    try:
        while True:
            text = show(fetch(path, args.mine), args.json, color)
            if args.watch is None:
                sys.stdout.write(text)
                return 0
            sys.stdout.write(("\033[H\033[2J" if sys.stdout.isatty() else "") + text)
            sys.stdout.flush()
            time.sleep(max(args.watch, 0.5))
    except DaemonDown as exc:
        print(f"ds01-gpu-status: {exc}; ask an admin to check `systemctl status ds01d`.", file=sys.stderr)
        return EXIT_DAEMON_DOWN
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
