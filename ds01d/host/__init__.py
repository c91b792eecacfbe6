"""Adapters to the outside world, one module per system: Docker (`docker_engine`),
systemd's slices over D-Bus (`slices`), NVML (`nvml`), the SQLite state database
(`state_db`), the journal and audit trail (`decision_log`), users' terminals
(`terminals`), the admin's notify command as a transient unit (`notify_unit`), Unix
groups (`unix_groups`), sd_notify (`sd_notify`).

Each is a thin shell: it turns the outside's answers (and errors) into the plain data
of `ds01d.rules` and decides nothing itself.

May import: `ds01d.rules`, `ds01d.config`, other `ds01d.host` modules.  Never the
daemon, the gateway or the CLI.
"""
