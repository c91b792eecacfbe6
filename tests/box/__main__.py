"""python -m tests.box up|down|exec|status NAME: a test box by hand, to poke at what tests see.

    up NAME [--unit FILE]...   boot a box and leave it running in the background
    down NAME                  kill it and remove every trace of it
    exec NAME [-- CMD...]      run CMD (default: bash) inside, with your terminal
    status NAME                is it running, and how is it doing
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import NoReturn

from .box import Box, BoxError, find_leftovers, missing_requirements


class CliError(Exception):
    """A one-sentence error for the user; exit code 1, no traceback."""


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit 1 with one sentence like every other error."""

    def error(self, message: str) -> NoReturn:
        print(f"ds01-box: {message} (see python -m tests.box --help).", file=sys.stderr)
        sys.exit(1)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if os.geteuid() != 0:
            raise CliError("python -m tests.box must be run as root: it creates namespaces, "
                           "mounts and cgroups")
        return args.func(args)
    except (CliError, BoxError, OSError, TimeoutError) as exc:
        print(f"ds01-box: {one_sentence(exc, getattr(args, 'name', 'box'))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def parser() -> Parser:
    p = Parser(prog="python -m tests.box", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    up = sub.add_parser("up", help="boot a box and leave it running")
    up.add_argument("name")
    up.add_argument("--unit", action="append", default=[], type=Path,
                    help="a unit file to install and start with the box (repeatable)")
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="kill a box and remove its traces")
    down.add_argument("name")
    down.set_defaults(func=cmd_down)
    ex = sub.add_parser("exec", help="run a command inside a box")
    ex.add_argument("name")
    ex.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARGS...] (default: bash)")
    ex.set_defaults(func=cmd_exec)
    st = sub.add_parser("status", help="show whether a box runs and how it is doing")
    st.add_argument("name")
    st.set_defaults(func=cmd_status)
    return p


def one_sentence(exc: BaseException, name: str) -> str:
    """First line of the error; the rest (journal, console) goes to a file for later."""
    text = str(exc).strip() or type(exc).__name__
    first, _, rest = text.partition("\n")
    first = first.rstrip(".")
    if rest:
        log = Path(f"/tmp/ds01-box-{name}-error.log")
        log.write_text(text + "\n")
        return f"{first} (details in {log})."
    return f"{first}."


def cmd_up(args: argparse.Namespace) -> int:
    reason = missing_requirements()
    if reason:
        raise CliError(reason)
    if is_running(args.name):
        raise CliError(f"box {args.name!r} is already running; `down {args.name}` stops it")
    units = {}
    for path in args.unit:
        units[path.name] = path.read_text()
    start = time.monotonic()
    box = Box.boot(args.name, units)
    box.detach()
    took = time.monotonic() - start
    print(f"box {args.name!r} is up after {took:.1f} s (systemd is PID {box.pid} on the host).\n"
          f"  enter it:  python -m tests.box exec {args.name} -- bash\n"
          f"        or:  nsenter -t {box.pid} -a bash\n"
          f"  stop it:   python -m tests.box down {args.name}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    was_running = is_running(args.name)
    Box.destroy(args.name)
    left = find_leftovers(args.name, {})
    if left:
        raise CliError(f"box {args.name!r} left traces behind: {'; '.join(left)}")
    print(f"box {args.name!r} is down." if was_running
          else f"box {args.name!r} was not running; nothing of it is left.")
    return 0


def cmd_exec(args: argparse.Namespace) -> NoReturn:
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    box = Box.attach(args.name)
    cwd = os.getcwd()
    argv = box.command(cmd or ["bash"], cwd=cwd if os.path.isdir(cwd) else "/")
    os.execv(argv[0], argv)


def cmd_status(args: argparse.Namespace) -> int:
    if not is_running(args.name):
        stale = find_leftovers(args.name, {})
        hint = f"; traces of an earlier one are left, `down {args.name}` removes them" if stale else ""
        raise CliError(f"box {args.name!r} is not running{hint}")
    box = Box.attach(args.name)
    state = box.run(["systemctl", "is-system-running"], check=False).stdout.strip()
    docker = box.docker("version", "--format", "{{.Server.Version}}", check=False)
    failed = box.run(["systemctl", "--failed", "--plain", "--no-legend"], check=False).stdout
    print(f"box {args.name!r}: running, systemd PID {box.pid} on the host\n"
          f"  system state: {state}\n"
          f"  docker: {docker.stdout.strip() if docker.returncode == 0 else 'not answering'}\n"
          f"  failed units: {', '.join(l.split()[0] for l in failed.splitlines() if l) or 'none'}\n"
          f"  runtime dir: {box.run_dir}")
    return 0


def is_running(name: str) -> bool:
    try:
        Box.attach(name)
    except BoxError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
