"""`ds01-gpu-status`: what every user sees of the GPUs, read from ds01d's status socket.

This first version only finds the daemon's socket and says plainly when ds01d is
not running; the screen itself arrives with the status socket (issue 5).
"""

from __future__ import annotations

import argparse
import socket
import sys
from typing import Sequence

from ds01d.config import DEFAULT_PATH, ConfigError, DaemonSettings, load_config

EXIT_DAEMON_DOWN = 2


def socket_path(config_path: str) -> str:
    """The socket named in the config, or the default when the config cannot be read by this user."""
    try:
        return load_config(config_path).daemon.socket_path
    except ConfigError:
        return DaemonSettings().socket_path


def daemon_answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ds01-gpu-status",
                                     description="GPUs, MIG instances and their containers on this server.")
    parser.add_argument("--config", default=DEFAULT_PATH, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    path = socket_path(args.config)
    if not daemon_answers(path):
        print(f"ds01-gpu-status: ds01d is not running (nothing answers on {path}); "
              "ask an admin to check `systemctl status ds01d`.", file=sys.stderr)
        return EXIT_DAEMON_DOWN
    print("ds01-gpu-status: ds01d is running; its status screen is not available in this version.",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
