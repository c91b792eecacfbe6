"""`scripts/demo`: ds01d's world for real, in a box left running for you to poke at.

Boots the box, runs the shipped ds01d.service there with the shipped default
config (only its state directory moved into the box's own area), starts
containers the ways users do, and prints what an admin would look at.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from tests.box import Box, BoxError
from tests.nvml_scenarios import mig_gpu, whole_gpu, write
from tests.service import Service, ids_of

REPO = Path(__file__).resolve().parent.parent
NAME = "demo"

CONTAINERS: list[tuple[str, list[str], str]] = [
    ("training._.alice", ["--cgroup-parent", "ds01-students-alice.slice", "--gpus", "device=1:0"],
     "AIME-style name, in her slice, a MIG instance, busy"),
    ("bob-notebook", ["--label", "ds01.user=bob", "--gpus", "device=1:1"],
     "plain docker run with a ds01.user label, a MIG instance, idle"),
    ("thesis-dev", ["--label", "devcontainer.local_folder=/home/carol/thesis"],
     "a VS Code dev container, no GPU"),
    ("web-1", ["--label", "com.docker.compose.project=web",
               "--label", "com.docker.compose.project.working_dir=/home/dave/web"], "a compose service"),
    ("mystery", [], "no owner signal at all"),
]


def simulated_gpus(service: Service, pids: dict[str, int]) -> None:
    """GPU 0 a whole H100, GPU 1 an H100 in three MIG instances; alice computes, bob does not."""
    assert service.nvml_scenario is not None
    write(service.nvml_scenario, [
        whole_gpu(0),
        mig_gpu(1, [{"slices": 3, "sm_activity": 87, "processes": [
                        {"pid": pids.get("training._.alice", 0), "used_memory_mib": 21000}]},
                    {"slices": 2, "sm_activity": 0, "processes": [
                        {"pid": pids.get("bob-notebook", 0), "used_memory_mib": 900}]},
                    {"slices": 2}])])


def shipped_config(service: Service) -> str:
    text = (REPO / "config" / "ds01.yaml").read_text()
    return re.sub(r"(?m)^(  state_dir:) /var/lib/ds01", r"\1 {state_dir}", text)


def section(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m" if sys.stdout.isatty() else f"\n== {title}")


def show(box: Box, argv: list[str]) -> None:
    print(f"$ {' '.join(argv)}")
    print(box.run(argv, check=False).stdout.rstrip())


def main() -> int:
    try:
        box = Box.boot(NAME)
    except BoxError as exc:
        print(f"scripts/demo: the box did not come up: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    box.detach()
    service = Service(box, "", fake_nvml=True)
    simulated_gpus(service, {})
    service.reset(shipped_config(service))
    section("containers, started the ways users start them")
    for name, args, how in CONTAINERS:
        box.docker("run", "-d", "--name", name, *args, "busybox:local", "sleep", "infinity")
        print(f"  {name:18} {how}")
    ids = ids_of(box, [name for name, _, _ in CONTAINERS])
    for cid in ids.values():
        service.wait_record(cid, 5.0)
    pids = {name: int(box.docker("inspect", "-f", "{{.State.Pid}}", name).stdout) for name, _, _ in CONTAINERS}
    simulated_gpus(service, pids)
    section("GPUs (simulated: no NVIDIA driver here), after the next sampling pass")
    for name in ("training._.alice", "bob-notebook"):
        state = box.wait_until(lambda: (s := service.gpu_state(ids[name])) and s["verdict"] in ("busy", "idle")
                               and s, 30.0, what=f"GPU verdict for {name}")
        print(f"  {name:18} {state['verdict']:<5} {state['activity']:5.1f}% SM activity ({state['why']})")
    section("ds01-gpu-status (what every user sees; no docker group needed)")
    box.wait_until(lambda: "busy" in box.run([box.tool("ds01-gpu-status")]).stdout, 15.0,
                   what="the status screen")
    print(box.run([box.tool("ds01-gpu-status")]).stdout.rstrip())
    section("systemctl status ds01d")
    show(box, ["systemctl", "status", "--no-pager", "--lines=0", "ds01d.service"])
    section("user slices and their limits")
    show(box, ["systemctl", "list-units", "--no-pager", "--plain", "--no-legend", "ds01-*.slice"])
    show(box, ["systemctl", "show", "ds01-students-alice.slice",
               "-p", "CPUQuotaPerSecUSec,MemoryLimit,MemoryMax,MemoryHigh,TasksMax"])
    section("what ds01d decided (journalctl -u ds01d, DS01_* fields)")
    for entry in service.decisions():
        if "DS01_ACTION" in entry:
            who = entry.get("DS01_USER", "-")
            print(f"  {entry['DS01_ACTION']:<18} {who:<8} {entry.get('DS01_CONTAINER_NAME', ''):<18} "
                  f"{entry['DS01_REASON'][:110]}")
    section("try it yourself")
    print(f"  scripts/box exec {NAME} -- {box.tool('ds01-gpu-status')} --watch")
    print(f"  scripts/box exec {NAME} -- {box.tool('ds01d')} status")
    print(f"  scripts/box exec {NAME} -- journalctl -u ds01d DS01_USER=alice -o verbose")
    print(f"  {service.nvml_scenario}   # the simulated GPUs: edit it, ds01d sees the change")
    print(f"  scripts/box exec {NAME} -- docker run -d --label ds01.user=erin busybox:local sleep 600")
    print(f"  scripts/box exec {NAME} -- systemctl status ds01-students-erin.slice")
    print(f"  scripts/box exec {NAME}            # a shell in the box")
    print(f"  scripts/box down {NAME}            # stop it and remove every trace")
    return 0


if __name__ == "__main__":
    sys.exit(main())
