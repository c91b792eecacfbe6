"""CPU time and memory of a user's slice, read from its cgroup files.

A slice `a-b-c.slice` lives at `a.slice/a-b.slice/a-b-c.slice` in the cgroup tree (systemd
nests slices at each `-`; a `-` inside a name part is escaped as `\\x2d`, and stays so in
the directory name).  cgroup v2 has one tree (`cpu.stat` usage_usec, `memory.current`);
v1 has one per controller (`cpuacct.usage` in nanoseconds, `memory.usage_in_bytes`).
A file that is not there (no slice yet, controller not enabled) is None: not measured.
"""

from __future__ import annotations

import os

from ds01d.host.slices import CgroupMode, detect_cgroup_mode


def slice_dir(slice_name: str) -> str:
    """The slice's path below a cgroup tree's root."""
    stem = slice_name.removesuffix(".slice")
    parts = stem.split("-")
    return "/".join("-".join(parts[:i + 1]) + ".slice" for i in range(len(parts)))


def slice_usage(slice_name: str, root: str = "/sys/fs/cgroup",
                mode: CgroupMode | None = None) -> tuple[float | None, int | None]:
    """(CPU seconds used, memory bytes in use) of the slice; None for what cannot be read."""
    mode = mode or detect_cgroup_mode(root)
    path = slice_dir(slice_name)
    if mode is CgroupMode.V2:
        usec = _field(os.path.join(root, path, "cpu.stat"), "usage_usec")
        return (None if usec is None else usec / 1e6), _number(os.path.join(root, path, "memory.current"))
    nanos = _number(os.path.join(root, "cpuacct", path, "cpuacct.usage"))
    return (None if nanos is None else nanos / 1e9), _number(os.path.join(root, "memory", path, "memory.usage_in_bytes"))


def _number(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _field(path: str, name: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == name:
                    return int(value)
    except (OSError, ValueError):
        return None
    return None
