"""`ds01d limits USER` output: text for admins, JSON for scripts, Docker CLI arguments.

The text follows the seeds' `get_resource_limits.py` screen, with the source of
every value added; values print in the config's own notation so they can be
pasted back into it.
"""

from __future__ import annotations

import shlex
from typing import Any

from ds01d.config import ACCESS_KEYS, KINDS, LIFECYCLE_KEYS, SCALAR_KEYS
from ds01d.rules.limits import EffectiveLimits
from ds01d.config.quantities import format_cpus, format_duration, format_size

_SIZES = {"memory_max", "memory_high", "container_memory", "container_shm_size"}
_CPUS = {"cpus", "container_cpus"}


def display(name: str, value: Any) -> str:
    """A setting's value as an admin would write it in the config."""
    key = name.split(".")[0]
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "never" if key in LIFECYCLE_KEYS else "unlimited"
    if key in LIFECYCLE_KEYS:
        return format_duration(value)
    if key in _SIZES:
        return format_size(value)
    if key in _CPUS:
        return format_cpus(value)
    if key == "gpu_quota":
        return f"{value:g} GPU"
    if isinstance(value, tuple):
        return "[" + ", ".join(value) + "]"
    return str(value)


def render_text(limits: EffectiveLimits, local_user: bool) -> str:
    m = limits.membership
    lines = [
        f"User:      {limits.user}" + ("" if local_user else "  (not a local user)"),
        f"Group:     {m.group}  ({m.source})",
        f"Slice:     {limits.slice}",
    ]
    if m.conflicts:
        lines.append(f"Warning:   also claimed by group {', '.join(m.conflicts)}")
    if limits.override is not None:
        until = f" until {limits.override.expires}" if limits.override.expires else ""
        lines.append(f"Override:  {limits.override.reason}{until}")
    elif limits.expired_override is not None:
        lines.append(f"Override:  expired on {limits.expired_override.expires} (not applied)")
    rows = [(key, display(key, limits[key]), limits.settings[key].source) for key in SCALAR_KEYS]
    for key in LIFECYCLE_KEYS:
        for kind in KINDS:
            name = f"{key}.{kind}"
            rows.append((f"{key} [{kind}]", display(name, limits[name]), limits.settings[name].source))
    rows += [(key, display(key, limits[key]), limits.settings[key].source) for key in ACCESS_KEYS]
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    lines.append("")
    lines.extend(f"{k:<{width}}  {v:<{vwidth}}  {s}" for k, v, s in rows)
    return "\n".join(lines)


def _entry(limits: EffectiveLimits, name: str) -> dict[str, Any]:
    resolved = limits.settings[name]
    return {"value": resolved.value, "display": display(name, resolved.value), "source": resolved.source}


def to_json(limits: EffectiveLimits, local_user: bool) -> dict[str, Any]:
    """Stable JSON: sizes in bytes, durations in seconds, CPUs as numbers, null = unlimited/never."""
    override = limits.override
    settings: dict[str, Any] = {key: _entry(limits, key) for key in SCALAR_KEYS}
    for key in LIFECYCLE_KEYS:
        settings[key] = {kind: _entry(limits, f"{key}.{kind}") for kind in KINDS}
    settings.update({key: _entry(limits, key) for key in ACCESS_KEYS})
    return {
        "user": limits.user,
        "local_user": local_user,
        "group": limits.group,
        "group_source": limits.membership.source,
        "group_conflicts": list(limits.membership.conflicts),
        "slice": limits.slice,
        "override": None if override is None else {
            "reason": override.reason,
            "expires": override.expires.isoformat() if override.expires else None,
        },
        "settings": settings,
    }


def docker_args(limits: EffectiveLimits) -> list[str]:
    """`docker run` arguments that put a container in the user's slice under their caps."""
    args = [f"--cgroup-parent={limits.slice}", f"--label=ds01.user={limits.user}"]
    if limits["container_cpus"] is not None:
        args.append(f"--cpus={format_cpus(limits['container_cpus'])}")
    if limits["container_memory"] is not None:
        args.append(f"--memory={format_size(limits['container_memory']).lower()}")
    if limits["container_shm_size"] is not None:
        args.append(f"--shm-size={format_size(limits['container_shm_size']).lower()}")
    return args


def render_docker_args(limits: EffectiveLimits) -> str:
    return shlex.join(docker_args(limits))
