"""The `ds01d` command: the daemon and its admin subcommands.

Every failure an admin can cause (a bad path, a bad config, a bad flag) ends in
one sentence or `file:line:` lines and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
from typing import Callable, Sequence

from ds01d import __version__
from ds01d.config import DEFAULT_PATH, ConfigError, load_config
from ds01d.config.checks import host_problems
from ds01d.rules.limits import EffectiveLimits, resolve, slice_properties
from ds01d.rules.safe_text import printable
from ds01d.rules.usage_window import Point
from ds01d.cli.limits_report import render_docker_args, render_text, to_json
from ds01d.host.engine_socket import ENGINE_SOCKET
from ds01d.host.unix_groups import is_local_user, unix_group_members

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2
#: A reload reconciles every container with Docker; systemd's own limit (TimeoutStartSec) is 120 s.
RELOAD_TIMEOUT = 110.0


def today_utc() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()


def cmd_check_config(args: argparse.Namespace) -> int:
    """Exit 0 when the file is usable on this host today; print every problem otherwise."""
    try:
        config = load_config(args.path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_PROBLEM
    unix = unix_group_members(g.unix_group for g in config.groups.values() if g.unix_group)
    problems = host_problems(config, today_utc(), unix)
    for problem in problems:
        print(problem, file=sys.stderr)
    if any(not p.warning for p in problems):
        return EXIT_PROBLEM
    print(f"{args.path}: OK ({len(config.groups)} groups, {len(config.overrides)} user overrides)")
    return EXIT_OK


def cmd_limits(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_PROBLEM
    unix = unix_group_members(g.unix_group for g in config.groups.values() if g.unix_group)
    limits = resolve(config, args.user, today_utc(), unix)
    local = is_local_user(args.user)
    if args.apply:
        return apply_slice(limits)
    if args.json:
        print(json.dumps(to_json(limits, local), indent=2))
    elif args.docker_args:
        print(render_docker_args(limits))
    else:
        print(render_text(limits, local))
    return EXIT_OK


def apply_slice(limits: EffectiveLimits) -> int:
    """Put the user's limits on their slice now, through systemd, and say what systemd reports."""
    from ds01d.host.slices import SliceError, SystemdSlices  # needs D-Bus; other commands do not

    try:
        slices = SystemdSlices()
    except OSError as exc:
        print(f"ds01d: cannot reach systemd on the system bus ({exc.strerror or exc}); "
              "is this a systemd host, and are you root?", file=sys.stderr)
        return EXIT_PROBLEM
    try:
        result = slices.apply(limits.slice, slice_properties(limits),
                              f"ds01 limits for {limits.user} (group {limits.group})")
    except SliceError as exc:
        print(f"ds01d: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    finally:
        slices.close()
    verb = "created" if result.created else "updated"
    settings = " ".join(f"{k}={v}" for k, v in result.actual.items())
    print(f"{result.name}: {verb}: {settings}")
    for name in result.ignored:
        print(f"{result.name}: {name} is not enforced on cgroup {slices.mode.value} hosts")
    for mismatch in result.mismatches:
        print(f"{result.name}: limit not applied: {mismatch}", file=sys.stderr)
    return EXIT_PROBLEM if result.mismatches else EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from ds01d.daemon.loop import run_daemon  # the daemon's imports are not needed by the admin commands

    return run_daemon(args.config)


def cmd_gateway_run(args: argparse.Namespace) -> int:
    """What ds01-gateway.service starts: the door on the Docker socket (systemd's, or --listen)."""
    from ds01d.gateway.ds01_policy import Ds01Policy
    from ds01d.gateway.listener import ListenerError, listening_socket
    from ds01d.gateway.server import run_gateway
    try:
        sock = listening_socket(args.listen)
    except ListenerError as exc:
        print(f"ds01d gateway: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    return run_gateway(Ds01Policy(args.config, args.engine), sock, args.engine)


def cmd_metrics_http(args: argparse.Namespace) -> int:
    """What ds01-metrics.service starts: the metrics file over HTTP on systemd's socket."""
    from ds01d.cli.metrics_http import serve
    return serve(args.config)


def cmd_gateway_switch(args: argparse.Namespace) -> int:
    """`ds01d gateway enable|disable`: one sentence either way."""
    from pathlib import Path

    from ds01d.gateway import switch
    host = switch.Host(Path(args.unit_dir), args.runtime)
    try:
        print((switch.enable if args.gateway_command == "enable" else switch.disable)(host, args.force))
    except switch.SwitchError as exc:
        print(f"ds01d gateway {args.gateway_command}: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    return EXIT_OK


def cmd_usage(args: argparse.Namespace) -> int:
    """GPU time and energy per user or group on a window of days: from the state database where
    this user may read it (root), else from the daemon (which shows others as the config says).
    The options are checked before anything is read, so a typo costs one sentence, not a query."""
    query = _usage_query(args)
    if isinstance(query, int):
        return query
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_PROBLEM
    path = f"{config.daemon.state_dir}/state.db"
    doc = _usage_from_file(path, query) if os.access(path, os.R_OK) else \
        _ask(args, "usage", "POST", "/v1/usage", query.body())
    if isinstance(doc, int):
        return doc
    if args.json:
        print(json.dumps(doc, indent=2))
    elif args.csv:
        _print_usage_csv(doc)
    else:
        _print_usage_text(doc)
    return EXIT_OK


class _UsageQuery:
    """`ds01d usage`'s options, checked: each end of the window as given (a date or seconds
    back, which the daemon resolves on its own clock) and as days here."""

    def __init__(self, since: Point, until: Point | None, by: str, days: tuple[dt.date, dt.date]):
        self.since, self.until, self.by = since, until, by
        self.since_day, self.until_day = days

    def body(self) -> dict:
        """The /v1/usage body: only what differs from the daemon's defaults, so that a plain
        `ds01d usage --since 7d` still works with a daemon older than --until and --by."""
        body = _point_field("since", self.since)
        if self.until is not None:
            body.update(_point_field("until", self.until))
        if self.by != "user":
            body["by"] = self.by
        return body


def _point_field(name: str, point: Point) -> dict:
    return {name: point.isoformat()} if isinstance(point, dt.date) else {f"{name}_s": point}


def _usage_query(args: argparse.Namespace) -> _UsageQuery | int:
    """The checked options, or EXIT_USAGE after one sentence naming the option at fault."""
    import time

    from ds01d.rules.usage_window import USAGE_KEYS, printable_short, window
    if args.by not in USAGE_KEYS:
        return _usage_error(f"--by must be user or group, not {printable_short(args.by)}")
    try:
        since = _usage_point("--since", args.since)
        until = None if args.until is None else _usage_point("--until", args.until)
        days = window(since, until, time.time(), ("--since", "--until"))
    except ValueError as exc:
        return _usage_error(str(exc))
    return _UsageQuery(since, until, args.by, days)


def _usage_point(option: str, text: str) -> Point:
    """One end of the window; ValueError naming the option."""
    from ds01d.rules.usage_window import parse_point
    try:
        return parse_point(text)
    except ValueError as exc:
        raise ValueError(f"{option}: {exc}") from None


def _usage_error(sentence: str) -> int:
    print(f"ds01d usage: {sentence}", file=sys.stderr)
    return EXIT_USAGE


def _usage_from_file(path: str, query: _UsageQuery) -> dict | int:
    """The report from the database itself: the same document the daemon answers with."""
    from ds01d.host.state_db import GpuStore, StateError, Store
    try:
        store = Store(path, readonly=True)
    except (StateError, OSError) as exc:
        print(f"ds01d usage: cannot read {path}: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    since, until = query.since_day.isoformat(), query.until_day.isoformat()
    try:
        rows = GpuStore(store).usage_summary(since, until, query.by)
    finally:
        store.close()
    return {"since": since, "until": until, "by": query.by, f"{query.by}s": rows}


def _usage_rows(doc: dict) -> tuple[str, list[dict]]:
    """The key (user or group) and the rows of a usage document (a daemon from before --by
    answers with users only)."""
    by = doc.get("by", "user")
    return by, doc.get(f"{by}s", [])


def _print_usage_text(doc: dict) -> None:
    """The table, energy in kWh: `*` where part of a row's GPU time has no energy reading (a
    footnote says how much), `unknown` where none has, so a missing meter never reads as 0."""
    by, rows = _usage_rows(doc)
    last = _last_day(doc)
    print(f"GPU time from {doc['since']} to {last} (UTC days, both counted), in GPU-hours "
          "(a MIG instance counts as its share of a GPU)")
    print(f"{by:<20} {'containers':>10} {'busy':>9} {'idle':>9} {'unknown':>9} {'idle %':>7} {'energy':>13}")
    notes = []
    for r in rows:
        total = r["busy_gpu_seconds"] + r["idle_gpu_seconds"] + r["unknown_gpu_seconds"]
        idle_pct = f"{100 * r['idle_gpu_seconds'] / total:.0f}%" if total else "-"
        energy, note = _energy_text(printable(r[by]), r.get("energy_joules"), r.get("unmetered_gpu_seconds", 0))
        notes += [note] if note else []
        print(f"{printable(r[by]):<20} {r['containers']:>10} {r['busy_gpu_seconds'] / 3600:>9.2f} "
              f"{r['idle_gpu_seconds'] / 3600:>9.2f} {r['unknown_gpu_seconds'] / 3600:>9.2f} {idle_pct:>7} "
              f"{energy:>13}")
    if not rows:
        print("(no GPU use recorded)")
    for note in notes:
        print(note)
    if any(r.get("energy_joules") is None for r in rows):
        print("unknown: none of that GPU time had an energy reading (energy unknown, not 0)")


def _energy_text(key: str, joules: float | None, unmetered_s: float) -> tuple[str, str | None]:
    """A row's energy cell and its footnote, if any."""
    if joules is None:
        return "unknown", None
    cell = f"{joules / 3.6e6:.2f} kWh"
    if not unmetered_s:
        return cell, None
    return cell + "*", (f"* {key}: plus {_hours(unmetered_s)} GPU-hours without an energy reading "
                        "(GPUs without an energy counter, or before ds01d read it; energy unknown)")


def _hours(seconds: float) -> str:
    """GPU-hours to two places, without calling a few seconds 0.00."""
    return f"{seconds / 3600:.2f}" if seconds >= 36 else "under 0.01"


def _last_day(doc: dict) -> str:
    """The last day counted (the document's `until` is the first day not counted)."""
    until = doc.get("until")
    return (dt.date.fromisoformat(until) - dt.timedelta(days=1)).isoformat() if until else "today"


USAGE_CSV_COLUMNS = ("containers", "busy_gpu_hours", "idle_gpu_hours", "unknown_gpu_hours", "energy_kwh",
                     "unmetered_gpu_hours", "since", "until")


def _print_usage_csv(doc: dict) -> None:
    """CSV for a spreadsheet, one row per user or group; `energy_kwh` is empty where no GPU
    time had an energy reading, `until` the first day not counted."""
    import csv
    by, rows = _usage_rows(doc)
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow((by, *USAGE_CSV_COLUMNS))
    for r in rows:
        joules = r.get("energy_joules")
        out.writerow((printable(r[by]), r["containers"], _csv_hours(r["busy_gpu_seconds"]),
                      _csv_hours(r["idle_gpu_seconds"]), _csv_hours(r["unknown_gpu_seconds"]),
                      "" if joules is None else f"{joules / 3.6e6:.4f}",
                      _csv_hours(r.get("unmetered_gpu_seconds", 0)), doc["since"], doc.get("until", "")))


def _csv_hours(seconds: float) -> str:
    return f"{seconds / 3600:.4f}"


def _socket(config_path: str) -> str:
    from ds01d.cli.gpu_status import socket_path
    return socket_path(config_path)


def _ask(args: argparse.Namespace, command: str, method: str, path: str, body: dict | None = None,
         timeout: float = 15.0) -> dict | int:
    """The daemon's answer, or the exit code after saying in one sentence why there is none."""
    from ds01d.cli.status_client import DaemonDown, call
    try:
        code, doc = call(_socket(args.config), method, path, body, timeout=timeout)
    except DaemonDown as exc:
        print(f"ds01d: {exc}; check `systemctl status ds01d`.", file=sys.stderr)
        return 2
    if code != 200:
        said = command if command.startswith("ds01") else f"ds01d {command}"   # "ds01 run" says who it is
        print(f"{said}: {doc.get('error', f'HTTP {code}')}", file=sys.stderr)
        return EXIT_PROBLEM
    return doc


def cmd_status(args: argparse.Namespace) -> int:
    """Everything ds01d knows, for admins: devices, every container (unowned and flagged too), the audit trail."""
    from ds01d.cli.status_render import render
    doc = _ask(args, "status", "GET", "/v1/admin/status")
    if isinstance(doc, int):
        return doc
    if args.json:
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    print(render(doc, sys.stdout.isatty()), end="")
    print(f"\nContainers ({len(doc['containers'])}):")
    for c in doc["containers"]:
        flags = f"  [{'; '.join(c['flags'])}]" if c["flags"] else ""
        print(f"  {c['id']}  {c['name'][:28]:<28} {c['owner'] or '-':<14} {c['kind']:<12} {c['status']:<8} "
              f"{c['owner_signal'] or 'unowned'}{flags}")
    print("\nLast actions:")
    for e in doc["audit"][:20]:
        print(f"  {e['at']}  {e['action']:<16} {e['user'] or '-':<12} {e['container_name'] or '':<20} {e['reason']}")
    return EXIT_OK


def cmd_release(args: argparse.Namespace) -> int:
    doc = _ask(args, "release", "POST", "/v1/release", {"container": args.container})
    if isinstance(doc, int):
        return doc
    print(f"{doc['released']}: GPU hold released (by {doc['by']})")
    return EXIT_OK


def cmd_extend(args: argparse.Namespace) -> int:
    from ds01d.config.quantities import parse_duration
    try:
        seconds = parse_duration(args.duration)
    except ValueError as exc:
        print(f"ds01d extend: {exc}", file=sys.stderr)
        return EXIT_USAGE
    doc = _ask(args, "extend", "POST", "/v1/extend", {"container": args.container, "seconds": seconds})
    if isinstance(doc, int):
        return doc
    print(f"{doc['container']}: {doc['rule']} stop now at {doc['stop_at']} (by {doc['by']})")
    return EXIT_OK


def cmd_reload(args: argparse.Namespace) -> int:
    """What `systemctl reload ds01d` runs: the daemon applies the file now, and a refusal
    fails this command, so the admin sees it where they typed (and in `systemctl status`)."""
    doc = _ask(args, "reload", "POST", "/v1/reload", {}, timeout=RELOAD_TIMEOUT)
    if isinstance(doc, int):
        return doc
    later = f"; {' and '.join(doc['restart_needed'])} change only on restart" if doc["restart_needed"] else ""
    print(f"ds01d: applied {doc['applied']}{later}")
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from ds01d.cli.doctor import main as doctor
    return doctor(args.config)


def request_allocation(args: argparse.Namespace, command: str) -> dict | int:
    """Ask the daemon for devices (waiting as long as --wait says, with a line saying so)."""
    from ds01d.config.quantities import parse_duration
    try:
        wait = parse_duration(args.wait) if args.wait is not None else None
    except ValueError as exc:
        print(f"{command}: --wait: {exc}", file=sys.stderr)
        return EXIT_USAGE
    body = {"count": args.count, "full": args.full, "wait_s": wait, "user": getattr(args, "user", None)}
    if wait != 0:
        print(f"{command}: asking ds01d for a GPU (waiting up to {args.wait or 'the configured time'} if none "
              "is free)...", file=sys.stderr)
    return _ask(args, command, "POST", "/v1/allocate", body, timeout=(wait or 600) + 30)


def cmd_allocate(args: argparse.Namespace) -> int:
    doc = request_allocation(args, "ds01d allocate")
    if isinstance(doc, int):
        return doc
    if args.json:
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    names = ", ".join(u["index"] + (f" ({u['profile']})" if u["profile"] else "") for u in doc["units"])
    print(f"{doc['user']}: GPU {names}, kept for you until {doc['expires_at']} for a container to start on it:")
    print("  docker run " + " ".join(doc["docker_args"]) + " IMAGE ...")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ds01d", description="ds01d: fair sharing of a multi-user GPU server's Docker containers.")
    parser.add_argument("--version", action="version", version=f"ds01d {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", help="run the daemon (what ds01d.service starts)")
    p.add_argument("--config", default=DEFAULT_PATH, metavar="PATH",
                   help=f"config file (default {DEFAULT_PATH})")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("gateway", help="the Docker gateway: run it (ds01-gateway.service), enable or disable it")
    gateway = p.add_subparsers(dest="gateway_command", metavar="ACTION", required=True)
    g = gateway.add_parser("run", help="serve the Docker socket passed by systemd (ds01-gateway.socket)")
    g.add_argument("--listen", metavar="PATH", help="bind this socket path when systemd passed none (tests)")
    g.add_argument("--engine", default=ENGINE_SOCKET, metavar="PATH",
                   help=f"dockerd's own socket (default {ENGINE_SOCKET})")
    g.add_argument("--config", default=DEFAULT_PATH, metavar="PATH",
                   help=f"config file, read again when it changes (default {DEFAULT_PATH})")
    g.set_defaults(func=cmd_gateway_run)
    for action, text in (("enable", "move dockerd to a root-only socket and start the gateway on /run/docker.sock"),
                         ("disable", "stop the gateway and give /run/docker.sock back to dockerd")):
        g = gateway.add_parser(action, help=f"{text} (restarts Docker once; idempotent)")
        g.add_argument("--force", action="store_true",
                       help="restart Docker even if that stops running containers (live-restore off)")
        g.add_argument("--unit-dir", default="/etc/systemd/system", help=argparse.SUPPRESS)
        g.add_argument("--runtime", action="store_true", help=argparse.SUPPRESS)
        g.set_defaults(func=cmd_gateway_switch)

    p = sub.add_parser("metrics-http", help="serve the metrics file over HTTP on systemd's socket "
                                            "(what ds01-metrics.service starts)")
    p.add_argument("--config", default=DEFAULT_PATH, metavar="PATH", help=f"config file (default {DEFAULT_PATH})")
    p.set_defaults(func=cmd_metrics_http)

    p = sub.add_parser("check-config", help="validate a config file (exit 1 with file:line problems)")
    p.add_argument("path", nargs="?", default=DEFAULT_PATH, metavar="PATH",
                   help=f"config file (default {DEFAULT_PATH})")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("limits", help="a user's effective limits and where each comes from")
    p.add_argument("user", metavar="USER")
    p.add_argument("--config", default=DEFAULT_PATH, metavar="PATH",
                   help=f"config file (default {DEFAULT_PATH})")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="machine-readable output")
    out.add_argument("--docker-args", action="store_true",
                     help="print `docker run` arguments for the user's slice and caps")
    out.add_argument("--apply", action="store_true",
                     help="create or update the user's slice with these limits now (root)")
    p.set_defaults(func=cmd_limits)

    p = sub.add_parser("usage", help="GPU time and energy per user or group, busy and idle (for cost tracking)")
    p.add_argument("--since", default="30d", metavar="DURATION|DATE",
                   help="first day: a duration back from now or a UTC date like 2026-10-01 (default 30d)")
    p.add_argument("--until", metavar="DURATION|DATE",
                   help="end: a duration back from now, or a UTC date, not itself counted (default now)")
    p.add_argument("--by", default="user", metavar="user|group", help="one row per user (default) or per group")
    p.add_argument("--config", default=DEFAULT_PATH, metavar="PATH",
                   help=f"config file (default {DEFAULT_PATH})")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="machine-readable output")
    out.add_argument("--csv", action="store_true", help="CSV on stdout, with a header row")
    p.set_defaults(func=cmd_usage)

    p = sub.add_parser("doctor", help="check what this host needs for ds01d, with the fix for each failure")
    p.add_argument("--config", default=DEFAULT_PATH, metavar="PATH", help=f"config file (default {DEFAULT_PATH})")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("allocate", help="get free GPU devices for a new container (your own; admins: --user)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--count", type=int, default=1, metavar="N", help="how many devices (default 1)")
    size.add_argument("--full", action="store_true", help="one whole GPU (if your group may have one)")
    p.add_argument("--wait", metavar="DURATION", help="how long to wait when none is free (default: the "
                                                     "config's allocation_wait; 0s: do not wait)")
    p.add_argument("--user", help="allocate for this user (admins only)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--config", default=DEFAULT_PATH, metavar="PATH", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_allocate)

    p = sub.add_parser("reload", help="apply the config file now; exit 1 with the reason if it is refused "
                                      "(what `systemctl reload ds01d` runs)")
    p.add_argument("--config", default=DEFAULT_PATH, metavar="PATH", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_reload)

    p = sub.add_parser("status", help="everything ds01d tracks, with the audit trail (admins)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--config", default=DEFAULT_PATH, metavar="PATH", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("release", help="end a stopped container's GPU hold now (admins, or its owner)")
    p.add_argument("container", metavar="CONTAINER", help="name or id")
    p.add_argument("--config", default=DEFAULT_PATH, metavar="PATH", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_release)

    p = sub.add_parser("extend", help="push a container's next idle or runtime stop (admins; owners up to "
                                      "max_extension)")
    p.add_argument("container", metavar="CONTAINER", help="name or id")
    p.add_argument("duration", metavar="DURATION", help="e.g. 2h")
    p.add_argument("--config", default=DEFAULT_PATH, metavar="PATH", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_extend)
    return parser


def run_cli(func: Callable[[], int]) -> int:
    """Run a command with the conventions of a well-behaved CLI: `| head` and ^C end quietly."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        return func()
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
