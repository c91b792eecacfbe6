"""ds01d running as a real systemd service inside the test box.

The unit under test is the shipped systemd/ds01d.service, unchanged but for a
drop-in that points it at this checkout (as the box sees it), a test config and a state
directory in the box's own area, and a short watchdog so that the watchdog test
does not wait 20 s.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
UNIT = "ds01d.service"
WATCHDOG_SEC = 3
NOTIFY_USER, NOTIFY_UID = "ds01-notify", 2999  # made by the package (debian/ds01d.sysusers)


class Service:
    """ds01d.service in `box`, with its config file and state database reachable from the host."""

    def __init__(self, box: Any, config_text: str, fake_nvml: bool = False):
        self.box = box
        self.dir = Path(box.state_dir) / "ds01d"
        self.state_dir = self.dir / "state"
        self.config_path = self.dir / "ds01.yaml"
        self.nvml_scenario = self.dir / "nvml.json" if fake_nvml else None
        self.metrics_dir = self.dir / "metrics"        # this service's own textfile directory
        self.metrics_dir.mkdir(parents=True, exist_ok=True)
        self.notify_home = add_notify_user(box)
        self.write_config(config_text)
        self.install()

    def write_config(self, text: str) -> None:
        """Write the config; `{state_dir}` in it is replaced by this service's state directory.
        An inline `daemon: {...}` without `metrics_file` gets this service's own (not the host's
        node exporter directory, which every box would share)."""
        if "metrics_file" not in text:
            text = text.replace("daemon: {", f'daemon: {{metrics_file: "{self.metrics_dir}/ds01d.prom", ', 1)
        self.config_path.write_text(text.replace("{state_dir}", str(self.state_dir)))

    def install(self) -> None:
        unit = (REPO / "systemd" / UNIT).read_text()
        dropin = "\n".join([
            "[Service]",
            "ExecStart=",
            f"ExecStart={self.box.tool('ds01d')} run --config {self.config_path}",
            "ExecReload=",
            f"ExecReload={self.box.tool('ds01d')} reload --config {self.config_path}",
            f"WatchdogSec={WATCHDOG_SEC}s",
            "StateDirectory=",
            f"ReadWritePaths={self.dir}",
            "RestartSec=200ms",
            f"Environment=DS01D_FAKE_NVML={self.nvml_scenario}" if self.nvml_scenario else "",
            "",
        ])
        self.box.install_unit(f"{UNIT}.d/box.conf", dropin)
        self.box.install_unit(UNIT, unit)

    def start(self) -> None:
        """Start, and wait for the first reconcile: ds01d is READY before it reaches Docker."""
        self.box.run(["systemctl", "start", UNIT], timeout=60)
        self.box.wait_until(lambda: "Docker connected" in self.show("StatusText")["StatusText"], 30.0,
                            what="ds01d connected to Docker")

    def stop(self) -> None:
        self.box.run(["systemctl", "stop", UNIT], check=False, timeout=60)

    def reset(self, config_text: str) -> None:
        """A fresh daemon: stopped, state wiped, new config, started and reconciled."""
        self.stop()
        self.install()
        self.box.run(["systemctl", "reset-failed", UNIT], check=False)
        shutil.rmtree(self.state_dir, ignore_errors=True)  # database, notify logs: nothing from before
        self.write_config(config_text)
        self.start()

    def show(self, *props: str) -> dict[str, str]:
        return self.box.systemctl_show(UNIT, *props)

    def main_pid(self) -> int:
        return int(self.show("MainPID")["MainPID"])

    def db(self) -> sqlite3.Connection:
        db = sqlite3.connect(f"file:{self.state_dir / 'state.db'}?mode=ro", uri=True, timeout=5)
        db.row_factory = sqlite3.Row
        return db

    def record(self, container_id: str) -> dict[str, Any] | None:
        with self.db() as db:
            row = db.execute("SELECT * FROM containers WHERE id=?", (container_id,)).fetchone()
        return dict(row) if row else None

    def wait_record(self, container_id: str, timeout: float = 1.0, **expect: Any) -> dict[str, Any]:
        """The container's record once it matches `expect`, polled until `timeout`."""
        def matches() -> dict[str, Any] | None:
            rec = self.record(container_id)
            return rec if rec and all(rec.get(k) == v for k, v in expect.items()) else None
        return self.box.wait_until(matches, timeout, what=f"record of {container_id[:12]} with {expect}")

    def gpu_state(self, container_id: str) -> dict[str, Any] | None:
        with self.db() as db:
            row = db.execute("SELECT * FROM gpu_state WHERE container=?", (container_id,)).fetchone()
        return dict(row) if row else None

    def decisions(self, **fields: str) -> list[dict[str, Any]]:
        """ds01d's journal entries matching DS01_* `fields` (e.g. DS01_USER='alice')."""
        return self.box.journal(*(f"{k}={v}" for k, v in fields.items()), unit=UNIT)

    def wait_decision(self, timeout: float = 5.0, **fields: str) -> dict[str, Any]:
        return self.box.wait_until(lambda: (self.decisions(**fields) or [None])[-1], timeout,
                                   what=f"journal entry {fields}")


def add_notify_user(box: Any) -> Path:
    """The user notify commands run as, which the package's sysusers.d file creates; its home
    (for what a test cannot put in the host's /etc, such as an MTA's config) is in the box's
    run directory, and is returned."""
    home = box.run_dir / "ds01-notify-home"
    home.mkdir(exist_ok=True)
    os.chown(home, NOTIFY_UID, NOTIFY_UID)
    box.add_user(NOTIFY_USER, NOTIFY_UID, home=str(home))
    return home


def notify_output(box: Any, unit: str = "ds01-notify-*") -> list[str]:
    """What notify commands printed (their units' stdout and stderr, in the journal), oldest first."""
    return [e["MESSAGE"] for e in box.journal(unit=unit)
            if e.get("_TRANSPORT") == "stdout" and isinstance(e.get("MESSAGE"), str)]


def ids_of(box: Any, names: list[str]) -> dict[str, str]:
    out = box.docker("inspect", "-f", "{{.Name}} {{.Id}}", *names).stdout.split("\n")
    return {n.lstrip("/"): i for n, i in (line.split() for line in out if line.strip())}


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)


def now() -> float:
    return time.monotonic()
