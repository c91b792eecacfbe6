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


def split_gpus(argv: list[str]) -> tuple[str | None, list[str]]:
    """The value of the first --gpus (as `--gpus X` or `--gpus=X`) before the image, and the rest."""
    rest, gpus, i = [], None, 0
    while i < len(argv):
        arg = argv[i]
        if gpus is None and arg == "--gpus" and i + 1 < len(argv):
            gpus, i = argv[i + 1], i + 2
            continue
        if gpus is None and arg.startswith("--gpus="):
            gpus, i = arg.split("=", 1)[1], i + 1
            continue
        rest.append(arg)
        i += 1
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
