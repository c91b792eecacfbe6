"""Keep-alive files are resolved inside the container's root, never on the host (issue 12).

A temporary directory plays the container's root; a sibling directory plays the host,
with a fresh file that an escape would find.  Every case runs through both resolvers:
the kernel's openat2 and the hand walk, which must agree.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from ds01d.host.container_files import (MAX_LINKS, KernelResolverUnavailable, kernel_open_in_root,
                                        open_in_root, regular_file_mtime, walk_in_root)

OLD = 1_000_000_000.0
FILE = "/workspace/.keep-alive"


@pytest.fixture(params=[open_in_root, walk_in_root], ids=["kernel", "walk"])
def mtime(request):
    return lambda root, path=FILE: regular_file_mtime(str(root), path, request.param)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "workspace").mkdir(parents=True)
    return tmp_path / "root"


@pytest.fixture
def host_file(tmp_path: Path) -> Path:
    """Fresh on the host: what an escape would report."""
    (tmp_path / "host").mkdir()
    secret = tmp_path / "host" / "secret"
    secret.write_text("host only")
    return secret


def old_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    os.utime(path, (OLD, OLD))
    return path


# --- hostile ------------------------------------------------------------------------

def test_an_absolute_symlink_to_a_host_path_resolves_inside(mtime, root, host_file):
    (root / "workspace" / ".keep-alive").symlink_to(host_file)
    assert mtime(root) is None                               # absent inside the container
    old_file(root / str(host_file).lstrip("/"))
    assert mtime(root) == OLD                                # the container's own file of that name


def test_dot_dot_never_climbs_out_of_the_root(mtime, root, host_file):
    (root / "workspace" / ".keep-alive").symlink_to("../../../../../../../host/secret")
    assert mtime(root) is None
    old_file(root / "host" / "secret")
    assert mtime(root) == OLD
    assert mtime(root, "/../host/secret") == OLD


def test_a_workspace_symlinked_to_slash_is_the_containers_slash(mtime, root, host_file):
    (root / "workspace").rmdir()
    (root / "workspace").symlink_to("/")
    assert mtime(root) is None
    old_file(root / ".keep-alive")
    assert mtime(root) == OLD


def test_a_workspace_symlinked_to_a_host_directory_is_not_the_host_directory(mtime, root, host_file):
    (host_file.parent / ".keep-alive").write_text("")
    (root / "workspace").rmdir()
    (root / "workspace").symlink_to(host_file.parent)
    assert mtime(root) is None


def test_a_symlink_loop_is_no_keep_alive(mtime, root):
    (root / "a").symlink_to("/b")
    (root / "b").symlink_to("/a")
    (root / "workspace" / ".keep-alive").symlink_to("/a")
    assert mtime(root) is None


def chain(root: Path, links: int) -> None:
    """.keep-alive -> /l1 -> /l2 -> ... -> /l<links-1> -> /target: `links` symlinks to follow."""
    old_file(root / "target")
    names = [FILE] + [f"/l{i}" for i in range(1, links)]
    for here, there in zip(names, names[1:] + ["/target"]):
        (root / here.lstrip("/")).symlink_to(there)


def test_the_kernels_limit_of_40_symlinks_holds_both_ways(mtime, root):
    chain(root, MAX_LINKS)
    assert mtime(root) == OLD


def test_41_symlinks_are_too_many(mtime, root):
    chain(root, MAX_LINKS + 1)
    assert mtime(root) is None


def test_a_fifo_is_not_a_keep_alive_and_is_never_opened_for_reading(mtime, root):
    os.mkfifo(root / "workspace" / ".keep-alive")
    answer: list = []
    worker = threading.Thread(target=lambda: answer.append(mtime(root)), daemon=True)
    worker.start()
    worker.join(5)
    assert answer == [None], "blocked on the FIFO"


def test_a_directory_is_not_a_keep_alive(mtime, root):
    (root / "workspace" / ".keep-alive").mkdir()
    assert mtime(root) is None


def test_a_file_where_a_directory_should_be(mtime, root):
    (root / "workspace").rmdir()
    old_file(root / "workspace")
    assert mtime(root) is None


def test_a_symlink_to_the_hosts_dev_null_is_the_containers(mtime, root):
    (root / "workspace" / ".keep-alive").symlink_to("/dev/null")
    assert mtime(root) is None


# --- ordinary ------------------------------------------------------------------------

def test_a_missing_file_or_root_is_no_keep_alive(mtime, root, tmp_path):
    assert mtime(root) is None
    assert mtime(root, "/nowhere/.keep-alive") is None
    assert mtime(tmp_path / "no-such-root") is None


def test_a_plain_file_and_a_relative_symlink_inside(mtime, root):
    old_file(root / "workspace" / "real")
    assert mtime(root, "/workspace/real") == OLD
    (root / "workspace" / ".keep-alive").symlink_to("real")
    assert mtime(root) == OLD
    (root / "w2").symlink_to("workspace")
    assert mtime(root, "/w2/./real") == OLD and mtime(root, "w2/../workspace/real") == OLD


def test_this_kernel_resolves_in_root_itself(root):
    """The walk is the fallback; where openat2 exists it is the one in use."""
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        try:
            found = kernel_open_in_root(fd, "/workspace")
        except KernelResolverUnavailable:
            pytest.skip("no openat2 here")
        os.close(found)
    finally:
        os.close(fd)
