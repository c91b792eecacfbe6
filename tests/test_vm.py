"""The cgroup v2 VM's pure parts: module order, kernel choice, what the guest runs.

The VM itself is booted by scripts/test (python -m tests.box.vm); these checks keep its
building blocks honest without QEMU.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from tests.box.vm import VmError, find_kernel, guest_runner, init_script, module_order

DEP = """\
kernel/fs/9p/9p.ko: kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko kernel/net/9p/9pnet.ko
kernel/net/9p/9pnet.ko:
kernel/fs/netfs/netfs.ko:
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
"""


def test_module_order_puts_every_dependency_first_and_each_module_once():
    order = module_order(DEP, ["kernel/net/9p/9pnet_virtio.ko", "kernel/fs/9p/9p.ko"])
    assert len(order) == len(set(order)) == 6
    for line in DEP.splitlines():
        module, deps = line.split(":")
        for dep in deps.split():
            assert order.index(dep) < order.index(module), (dep, module)


def test_module_order_names_a_missing_module_and_a_cycle():
    with pytest.raises(VmError, match="kernel/fs/overlayfs/overlay.ko is not in modules.dep"):
        module_order(DEP, ["kernel/fs/overlayfs/overlay.ko"])
    with pytest.raises(VmError, match="cycle"):
        module_order("a.ko: b.ko\nb.ko: a.ko\n", ["a.ko"])


def test_find_kernel_takes_the_newest_with_its_modules(tmp_path: Path):
    boot, modules = tmp_path / "boot", tmp_path / "modules"
    boot.mkdir()
    for version in ("6.1.0-9-amd64", "6.1.0-56-amd64", "6.12.0-1-amd64"):
        (boot / f"vmlinuz-{version}").write_text("")
    for version in ("6.1.0-9-amd64", "6.1.0-56-amd64"):  # 6.12's modules are not installed
        (modules / version).mkdir(parents=True)
        (modules / version / "modules.dep").write_text("")
    kernel = find_kernel(boot, modules)
    assert kernel is not None and kernel.version == "6.1.0-56-amd64"
    assert find_kernel(tmp_path / "none", modules) is None


def test_guest_runs_the_marked_tests_of_this_checkout_even_with_odd_paths():
    runner = guest_runner(Path("/home/a b/ds01d's"), ["-k", "slice and not x"])
    assert f"cd {shlex.quote('/home/a b/ds01d' + chr(39) + 's')}" in runner
    assert "-m cgroup_v2" in runner and "-k 'slice and not x'" in runner
    assert runner.rstrip().endswith("> /ds01-vm/rc")


def test_init_loads_modules_in_the_given_order_and_boots_systemd_off_the_container_path():
    init = init_script(["kernel/a/x.ko", "kernel/b/y.ko"])
    assert init.index("insmod /modules/x.ko") < init.index("insmod /modules/y.ko")
    assert init.index("rm -f /newroot/.dockerenv") < init.index("exec switch_root")
    assert init.rstrip().endswith("/lib/systemd/systemd --unit=ds01-vm.target")
