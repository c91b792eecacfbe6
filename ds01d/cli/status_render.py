"""The `ds01-gpu-status` screen, drawn from the status JSON: pure, so golden tests pin it.

It answers the three questions users ask of a shared GPU server: which GPU is
free, what of mine runs and when will ds01d stop it, and who holds the rest.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Mapping

_COLORS = {"green": "32", "yellow": "33", "red": "31", "dim": "2", "bold": "1", "cyan": "36"}


class Paint:
    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, text: str, color: str) -> str:
        return f"\033[{_COLORS[color]}m{text}\033[0m" if self.enabled else text


def duration(seconds: float | None) -> str:
    """`2h 15m`, `45m`, `30s`: the two largest units, as people say it."""
    if seconds is None:
        return "?"
    s = int(max(0, seconds))
    days, rem = divmod(s, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    shown = [f"{v}{u}" for v, u in parts if v][:2]
    return " ".join(shown) or "0s"


def clock(iso: str | None) -> str:
    if iso is None:
        return "?"
    when = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return when.strftime("%H:%M")


def gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**30:.1f}"


def activity(unit: Mapping[str, Any], paint: Paint) -> str:
    if unit["activity_percent"] is None:
        return paint(f"activity unknown ({unit['unknown_reason']})", "dim")
    return f"{unit['activity_percent']:3.0f}%"


def next_step(c: Mapping[str, Any], paint: Paint) -> str:
    nxt = c.get("next")
    if not nxt:
        return ""
    if nxt["action"] == "stop":
        text = f"stops in {duration(nxt['in_s'])} ({nxt['rule']})"
        return paint(text, "red" if (nxt["in_s"] or 0) < 900 else "yellow")
    if nxt["at"] is None:
        return paint(f"held for {c['owner']} until removed", "yellow")
    return paint(f"held for {c['owner']} until {clock(nxt['at'])}", "yellow")


def _unknown(c: Mapping[str, Any]) -> str:
    """Unknown is never idle: say why, and that the idle clock waits."""
    paused = f"; idle clock paused at {duration(c['idle_for_s'])}" if c.get("idle_for_s") is not None else ""
    return f"activity unknown ({c['why']}{paused})" if c.get("why") else "activity unknown"


def container_line(c: Mapping[str, Any], paint: Paint) -> str:
    who = c["owner"] or paint("unowned", "red")
    name = c["name"] or "(hidden)"
    if c["status"] == "running":
        state = {"busy": paint(f"busy {c['activity_percent'] or 0:.0f}%", "green"),
                 "idle": paint(f"idle for {duration(c['idle_for_s'])}", "yellow"),
                 "unknown": paint(_unknown(c), "dim")}.get(c["verdict"] or "", "not sampled yet")
        head = f"{name} ({who}, {c['kind']}, up {duration(c['age_s'])})"
    else:
        state = paint(f"stopped {clock(c['stopped_at'])}", "dim")
        head = f"{name} ({who}, {c['kind']})"
    step = next_step(c, paint)
    return f"    {head}  {state}" + (f"  {step}" if step else "")


def unit_lines(unit: Mapping[str, Any], mig: bool, paint: Paint) -> list[str]:
    label = f"  {unit['index']:<5} {unit['profile']:<9}" if mig else "  "
    mem = f"{gib(unit['memory_used_bytes'])}/{gib(unit['memory_total_bytes'])} GiB"
    if unit["state"] == "free":
        tail = paint("free", "green")
    elif unit["state"] == "held":
        held = unit["held_for"]
        until = "until removed" if held["until"] is None else f"until {clock(held['until'])}"
        tail = paint(f"held for {held['user']} {until}", "yellow")
    else:
        tail = ""
    lines = [f"{label}{activity(unit, paint)}  {mem}" + (f"  {tail}" if tail else "")] if mig else \
        [f"{label}{activity(unit, paint)}  {mem}" + (f"  {tail}" if tail else "")]
    lines += [container_line(c, paint) for c in unit["containers"]]
    return lines


def render(doc: Mapping[str, Any], color: bool = False) -> str:
    paint = Paint(color)
    daemon = doc["daemon"]
    when = doc["generated_at"].replace("T", " ").replace("Z", " UTC")
    driver = f"driver {daemon['driver']}" if daemon["driver"] else "no NVIDIA driver"
    out = [paint(f"ds01 GPU status  {when}", "bold") + f"  ({driver}, sampled every {daemon['sampling_interval_s']}s)"]
    if not daemon["docker_connected"]:
        out.append(paint("Docker unreachable: what follows may be out of date", "red"))
    if daemon["cpu_only"]:
        out.append(paint(f"No GPUs: {daemon['cpu_only']}", "dim"))
    elif doc["gpus"] and daemon.get("activity_metric"):
        out.append(paint(f"Activity: {daemon['activity_metric']}", "dim"))
    for gpu in doc["gpus"]:
        out.append("")
        if gpu["mig"]:
            out.append(paint(f"GPU {gpu['index']}  {gpu['name']}  (MIG)", "bold"))
            for unit in gpu["units"]:
                out.extend(unit_lines(unit, True, paint))
        else:
            unit = gpu["units"][0]
            first, *rest = unit_lines(unit, False, paint)
            out.append(paint(f"GPU {gpu['index']}  {gpu['name']}", "bold") + f"  {first.strip()}")
            out.extend(rest)
    out.append("")
    if doc.get("queue"):
        waiting = ", ".join(f"{w['user']} ({'a whole GPU' if w['full'] else w['count']}, priority {w['priority']}, "
                            f"{duration(w['waiting_s'])})" for w in doc["queue"])
        out.append(paint(f"Waiting for a GPU: {waiting}", "yellow"))
    out.extend(me_lines(doc, paint))
    return "\n".join(out) + "\n"


def me_lines(doc: Mapping[str, Any], paint: Paint) -> list[str]:
    me = doc["me"]
    user = doc["caller"]["user"]
    quota = "no quota" if me["gpu_quota"] is None else f"{me['gpu_quota']:g}"
    used = f"{me['gpu_used']:.2f}".rstrip("0").rstrip(".")
    count = len(me["containers"])
    line = f"{user}: {used} of {quota} GPU-equivalents in use or held, {count} GPU container{'s' * (count != 1)}"
    over = me["gpu_quota"] is not None and me["gpu_used"] > me["gpu_quota"] + 1e-6
    out = [paint(line + ("  OVER QUOTA" if over else ""), "red" if over else "cyan")]
    for entry in doc["recent"][:5]:
        out.append(paint(f"  {clock(entry['at'])} {entry['action']} {entry.get('container_name') or ''}: "
                         f"{entry['reason']}", "dim"))
    return out
