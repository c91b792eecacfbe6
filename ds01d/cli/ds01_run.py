"""`ds01 run ...`: `docker run` with a GPU allocated by ds01d, in the user's slice.

A thin wrapper: it asks ds01d for devices (waiting if none is free), then runs
`docker run` with `--gpus device=...`, the user's `--cgroup-parent` slice and the
`ds01.user` label, and passes every other argument through unchanged.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import Sequence

from ds01d.cli.main import request_allocation
from ds01d.config import DEFAULT_PATH

USAGE = "usage: ds01 run [--gpus N] [--wait DURATION] [docker run arguments...] IMAGE [COMMAND...]"


#: `docker run` options (20.10) that take no value; every other option takes one (as
#: `--opt value`, `--opt=value`, or `-xVALUE` for a short one).
BOOL_LONG = frozenset({"--detach", "--interactive", "--tty", "--rm", "--privileged", "--init", "--read-only",
                       "--publish-all", "--no-healthcheck", "--oom-kill-disable", "--sig-proxy",
                       "--disable-content-trust", "--quiet", "--help"})
BOOL_SHORT = frozenset("ditPq")


def _takes_value(arg: str) -> bool:
    """Whether option `arg` consumes the next argument as its value."""
    if arg.startswith("--"):
        return "=" not in arg and arg not in BOOL_LONG
    letters = arg[1:]
    for n, letter in enumerate(letters):
        if letter not in BOOL_SHORT:
            return n == len(letters) - 1   # `-e X` takes the next; `-eX=1` carries its value
    return False


def split_gpus(argv: list[str]) -> tuple[str | None, list[str]]:
    """The value of the first --gpus (as `--gpus X` or `--gpus=X`) among docker run's options,
    and the rest.  Only options count: from the image on, every argument is the container's
    own command line (`ds01 run img python train.py --gpus 4` is train.py's --gpus)."""
    rest, gpus, i = [], None, 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--" or not arg.startswith("-") or arg == "-":
            rest.extend(argv[i:])       # the image, and after it the command
            break
        if gpus is None and arg == "--gpus" and i + 1 < len(argv):
            gpus, i = argv[i + 1], i + 2
            continue
        if gpus is None and arg.startswith("--gpus="):
            gpus, i = arg.split("=", 1)[1], i + 1
            continue
        width = 2 if _takes_value(arg) else 1
        rest.extend(argv[i:i + width])
        i += width
    return gpus, rest


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "run":
        print(USAGE, file=sys.stderr)
        return 2
    wait, rest = None, args[1:]
    if len(rest) >= 2 and rest[0] == "--wait":
        wait, rest = rest[1], rest[2:]
    gpus, rest = split_gpus(rest)
    if gpus is None or not gpus.strip('"').isdigit() or int(gpus.strip('"')) < 1:
        print(f"ds01 run: give --gpus N (how many devices; ds01d picks which), not {gpus!r}. For a container "
              "without GPUs use docker run.", file=sys.stderr)
        return 2
    request = argparse.Namespace(count=int(gpus.strip('"')), full=False, wait=wait, config=DEFAULT_PATH, user=None)
    doc = request_allocation(request, "ds01 run")
    if isinstance(doc, int):
        return doc
    names = ", ".join(u["index"] for u in doc["units"])
    print(f"ds01 run: GPU {names} for {doc['user']}, in {doc['slice']}", file=sys.stderr)
    docker = shutil.which("docker") or "docker"
    os.execvp(docker, [docker, "run", *doc["docker_args"], *rest])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
