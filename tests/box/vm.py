"""A cgroup v2 host in a virtual machine, for the box tests that depend on the cgroup version.

This machine (and many a lab's older server) runs the hybrid cgroup v1 layout, while
Debian 12 and Ubuntu 22.04/24.04 boot into the unified v2 hierarchy.  Slice limits, the
`0::/` lines of /proc/<pid>/cgroup and Docker's systemd driver differ between the two,
so the tests marked `cgroup_v2` also run on a real v2 host: Debian's own kernel
(linux-image-amd64) booted by QEMU with `systemd.unified_cgroup_hierarchy=1` and systemd
as PID 1; inside it the ordinary box boots, as it would on any v2 machine.

The VM needs no disk image.  A tiny initramfs (static busybox and the virtio, 9p and
overlay modules of that kernel) mounts the host's root read-only over 9p, puts a tmpfs
overlay on it (the guest can write anywhere and changes nothing on the host) and hands
over to systemd with a target that runs one unit: pytest on the checkout, its output on
the serial console, which this module streams.  The exit status and the JUnit report come
back through a second, writable 9p share.  KVM does not boot a kernel on these machines
(nested virtualisation), so QEMU emulates (TCG): slow, hence a small set of tests.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .box import CGROUP_FS, REPO_ROOT, host_hierarchies, layout_version

QEMU = "qemu-system-x86_64"
MARKER = "cgroup_v2"
# Modules the initramfs loads; their dependencies come from modules.dep, in order.
INITRD_MODULES = ("kernel/drivers/virtio/virtio_pci.ko", "kernel/net/9p/9pnet_virtio.ko",
                  "kernel/fs/9p/9p.ko", "kernel/fs/overlayfs/overlay.ko")
NINEP = "trans=virtio,version=9p2000.L,msize=262144"
GUEST_DIR = "/ds01-vm"      # where the guest sees the exchange share
GUEST_MEMORY_MB = 3072
# dockerd keeps its data-root under the box's state dir; overlayfs (Docker's storage driver)
# cannot sit on the overlay root ("invalid cross-device link"), a tmpfs it can.
GUEST_TMPFS = ("/var/lib/ds01-box",)
DEFAULT_TIMEOUT = 40 * 60.0
# The firmware clears the screen and colours text; a log wants none of that.
TERMINAL_CODES = re.compile(r"\x1b(?:\[[0-9;?]*[A-Za-z]|c)|\r")


class VmError(RuntimeError):
    """The VM could not be built or booted; the message says what and why."""


@dataclass(frozen=True)
class Kernel:
    """A Debian kernel on this machine: its image and its modules."""

    version: str
    image: Path
    modules: Path


def find_kernel(boot: Path = Path("/boot"), modules: Path = Path("/lib/modules")) -> Kernel | None:
    """The newest kernel that has both an image in /boot and its modules installed."""
    found = []
    for image in boot.glob("vmlinuz-*"):
        version = image.name.removeprefix("vmlinuz-")
        if (modules / version / "modules.dep").is_file():
            found.append(Kernel(version, image, modules / version))
    return max(found, key=lambda k: _version_key(k.version), default=None)


def _version_key(version: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", version)]


def missing_requirements() -> str | None:
    """Why no VM can be booted here, or None."""
    if os.geteuid() != 0:
        return "the cgroup v2 VM needs root (to read the kernel image and share the root)"
    missing = [tool for tool in (QEMU, "cpio") if not shutil.which(tool)]
    if not Path("/bin/busybox").exists():
        missing.append("/bin/busybox (busybox-static)")
    if find_kernel() is None:
        missing.append("a kernel in /boot with its modules (linux-image-amd64)")
    if missing:
        return f"the cgroup v2 VM needs {', '.join(missing)} (run scripts/install-deps)"
    return None


def host_is_v2() -> bool:
    """On a unified host the ordinary box already is a v2 box: no VM needed."""
    return layout_version(host_hierarchies()) == 2


# ----------------------------------------------------------------------------
# the initramfs


def module_order(modules_dep: str, wanted: Iterable[str]) -> list[str]:
    """Module paths to insmod, every dependency before the module needing it.

    modules_dep is the text of modules.dep ("path: dep dep ..."); busybox's insmod does
    not resolve dependencies, so the initramfs loads them in this order.
    """
    deps = {}
    for line in modules_dep.splitlines():
        if ":" in line:
            module, rest = line.split(":", 1)
            deps[module.strip()] = rest.split()
    order: list[str] = []

    def add(module: str, seen: tuple[str, ...]) -> None:
        if module in order:
            return
        if module not in deps:
            raise VmError(f"module {module} is not in modules.dep")
        if module in seen:
            raise VmError(f"modules.dep has a cycle through {module}")
        for dep in deps[module]:
            add(dep, (*seen, module))
        order.append(module)

    for module in wanted:
        add(module, ())
    return order


def init_script(modules: Sequence[str]) -> str:
    """The initramfs's /init: build an overlay root from the host's, then exec systemd."""
    insmods = "\n".join(f"insmod /modules/{Path(m).name}" for m in modules)
    tmpfs = "\n".join(f"mkdir -p /newroot{p} && mount -t tmpfs -o mode=755 tmpfs /newroot{p}"
                      for p in GUEST_TMPFS)
    return f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
{insmods}
mount -t 9p -o {NINEP},ro,cache=loose hostroot /lower
mount -t tmpfs -o mode=755 tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot
mkdir -p /newroot{GUEST_DIR}
mount -t 9p -o {NINEP} exchange /newroot{GUEST_DIR}
{tmpfs}
cp /units/* /newroot/etc/systemd/system/
# The host may itself be a container: systemd would take the VM for one, ignore the
# kernel command line (unit, cgroup layout) and boot the host's default target.
rm -f /newroot/.dockerenv /newroot/run/.containerenv
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /lib/systemd/systemd --unit=ds01-vm.target
"""


def guest_units() -> dict[str, str]:
    """The guest's boot target: one unit that runs the tests, then powers the VM off."""
    return {
        "ds01-vm.target": "[Unit]\nDescription=ds01d cgroup v2 test run\n"
                          "Requires=ds01-vm-tests.service\nAfter=ds01-vm-tests.service\n",
        "ds01-vm-tests.service":
            "[Unit]\nDescription=ds01d box tests on cgroup v2\nDefaultDependencies=no\n"
            "SuccessAction=poweroff-force\nFailureAction=poweroff-force\n"
            f"[Service]\nType=oneshot\nExecStart=/bin/sh {GUEST_DIR}/run\n"
            "StandardOutput=tty\nStandardError=inherit\nTTYPath=/dev/console\n",
    }


def guest_runner(checkout: Path, pytest_args: Sequence[str]) -> str:
    """What the guest's unit runs: pytest on the shared checkout, status into the share."""
    args = shlex.join(["-p", "no:cacheprovider", "--color=no", "-m", MARKER,
                       f"--junitxml={GUEST_DIR}/junit.xml", *pytest_args])
    return f"""#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 TERM=dumb
export PYTHONDONTWRITEBYTECODE=1
echo "ds01-vm: $(uname -r), $(stat -fc %T /sys/fs/cgroup) on /sys/fs/cgroup, PID 1 is $(cat /proc/1/comm)"
cd {shlex.quote(str(checkout))}
.venv/bin/python -m pytest {args}
echo $? > {GUEST_DIR}/rc
"""


def build_initrd(kernel: Kernel, dest: Path) -> Path:
    """Write the initramfs (gzip'ed newc cpio) into dest and return its path."""
    root = dest / "initrd"
    for d in ("bin", "modules", "units", "proc", "sys", "dev", "lower", "rw", "newroot"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    order = module_order((kernel.modules / "modules.dep").read_text(), INITRD_MODULES)
    for module in order:
        shutil.copy(kernel.modules / module, root / "modules" / Path(module).name)
    for name, text in guest_units().items():
        (root / "units" / name).write_text(text)
    init = root / "init"
    init.write_text(init_script(order))
    init.chmod(0o755)
    image = dest / "initrd.gz"
    files = subprocess.run(["find", "."], cwd=root, capture_output=True, check=True).stdout
    with open(image, "wb") as out:
        cpio = subprocess.Popen(["cpio", "--quiet", "-o", "-H", "newc"], cwd=root,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        gzip = subprocess.Popen(["gzip", "-1"], stdin=cpio.stdout, stdout=out)
        assert cpio.stdout is not None and cpio.stdin is not None
        cpio.stdout.close()
        cpio.stdin.write(files)
        cpio.stdin.close()
        if cpio.wait() != 0 or gzip.wait() != 0:
            raise VmError("could not pack the initramfs with cpio and gzip")
    return image


# ----------------------------------------------------------------------------
# the run


def qemu_command(kernel: Kernel, initrd: Path, exchange: Path, cpus: int) -> list[str]:
    """QEMU with the host's root and the exchange directory shared in, console on stdio."""
    append = ("console=ttyS0 quiet rdinit=/init panic=-1 systemd.unified_cgroup_hierarchy=1 "
              "systemd.unit=ds01-vm.target systemd.show_status=false")
    return [QEMU, "-accel", "tcg", "-m", str(GUEST_MEMORY_MB), "-smp", str(cpus),
            "-nographic", "-no-reboot", "-kernel", str(kernel.image), "-initrd", str(initrd),
            "-append", append,
            "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,"
                       "multidevs=remap",
            "-virtfs", f"local,path={exchange},mount_tag=exchange,security_model=none"]


def run_tests(pytest_args: Sequence[str], timeout: float = DEFAULT_TIMEOUT,
              junit: Path | None = None, echo: TextIO = sys.stdout) -> int:
    """Boot the VM, stream its console, return pytest's exit status inside it."""
    reason = missing_requirements()
    if reason:
        raise VmError(reason)
    kernel = find_kernel()
    assert kernel is not None
    with tempfile.TemporaryDirectory(prefix="ds01-vm-") as tmp:
        work = Path(tmp)
        exchange = work / "exchange"
        exchange.mkdir()
        (exchange / "run").write_text(guest_runner(REPO_ROOT, pytest_args))
        initrd = build_initrd(kernel, work)
        argv = qemu_command(kernel, initrd, exchange, cpus=min(4, os.cpu_count() or 1))
        started = time.monotonic()
        _stream(argv, timeout, echo)
        echo.write(f"ds01-vm: VM ran {time.monotonic() - started:.0f} s\n")
        if junit is not None and (exchange / "junit.xml").exists():
            shutil.copy(exchange / "junit.xml", junit)
        return _guest_status(exchange / "rc")


def _stream(argv: list[str], timeout: float, echo: TextIO) -> None:
    """Run QEMU, copying its console line by line; kill it at the deadline."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    killer = _Deadline(proc, timeout)
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = TERMINAL_CODES.sub("", raw.decode(errors="replace")).rstrip("\n")
            echo.write(f"vm| {line}\n")
            echo.flush()
    finally:
        killer.cancel()
        proc.kill()
        proc.wait()
    if killer.fired:
        raise VmError(f"the VM did not power off within {timeout:g} s and was killed")


class _Deadline:
    """Kills a process when time is up, from a timer thread (reading its pipe blocks)."""

    def __init__(self, proc: subprocess.Popen[bytes], timeout: float):
        self.fired = False
        self._proc = proc
        self._timer = threading.Timer(timeout, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        self._proc.kill()

    def cancel(self) -> None:
        self._timer.cancel()


def _guest_status(rc_file: Path) -> int:
    try:
        return int(rc_file.read_text().strip())
    except (OSError, ValueError):
        raise VmError("the VM powered off without pytest's exit status "
                      "(did the guest boot? see its console above)") from None


# ----------------------------------------------------------------------------
# command line


def main(argv: list[str] | None = None) -> int:
    """python -m tests.box.vm [--force] [--junit FILE] [-- PYTEST_ARGS]"""
    parser = argparse.ArgumentParser(
        prog="python -m tests.box.vm",
        description=f"Run the box tests marked {MARKER} on a cgroup v2 host in a VM.")
    parser.add_argument("--force", action="store_true",
                        help="boot the VM even when this host is already on cgroup v2")
    parser.add_argument("--junit", type=Path, help="copy the guest's JUnit report here")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help="seconds before the VM is killed (default %(default)g)")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest in the guest")
    args = parser.parse_args(argv)
    if host_is_v2() and not args.force:
        print(f"ds01-vm: {CGROUP_FS} is cgroup v2 here, so the main suite already ran the "
              f"{MARKER} tests in the ordinary box; no VM needed.")
        return 0
    try:
        return run_tests(args.pytest_args, args.timeout, args.junit)
    except VmError as exc:
        print(f"ds01-vm: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
