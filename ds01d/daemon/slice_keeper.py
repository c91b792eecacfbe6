"""Each owner's slice carries their current limits: set once per change, read back, journalled.

The main loop calls `ensure` for every container it records, so this module
remembers what it last applied per user and only talks to systemd when a user's
slice or limits changed (or after `reassert_all`, on reload).  What systemd
reports back is what the journal says, so an admin never reads a limit that is
not in force.
"""

from __future__ import annotations

import contextlib
import syslog
from typing import Any, Callable

from ds01d.config.quantities import format_size
from ds01d.host.decision_log import DecisionLog
from ds01d.host.slices import INFINITY, SliceError, SystemdSlices
from ds01d.rules.limits import EffectiveLimits, slice_properties


def describe_limits(limits: EffectiveLimits) -> str:
    """The slice limits as an admin reads them in `systemctl show`."""
    props = slice_properties(limits)

    def show(value: int | None, fmt: Callable[[int], str]) -> str:
        return "infinity" if value is None or value == INFINITY else fmt(value)
    return " ".join((
        f"CPUQuota={show(props['CPUQuotaPerSecUSec'], lambda v: f'{v / 10_000:g}%')}",
        f"MemoryMax={show(props['MemoryMax'], format_size)}",
        f"MemoryHigh={show(props['MemoryHigh'], format_size)}",
        f"TasksMax={show(props['TasksMax'], str)}",
    ))


class SliceKeeper:
    """The slices ds01d has limited, and one D-Bus connection to systemd (opened on demand)."""

    def __init__(self, slices_factory: Callable[[], SystemdSlices], log: DecisionLog,
                 on_error: Callable[[str, str | None], None]):
        self.slices_factory = slices_factory
        self.log = log
        self.on_error = on_error
        self.slices: SystemdSlices | None = None
        self.applied: dict[str, tuple[str, tuple[tuple[str, Any], ...]]] = {}

    def ensure(self, limits: EffectiveLimits) -> bool:
        """The owner's slice exists and carries `limits` (True); a failure is reported, retried
        next time, and False."""
        props = slice_properties(limits)
        key = (limits.slice, tuple(sorted(props.items())))
        if self.applied.get(limits.user) == key:
            return True
        try:
            if self.slices is None:
                self.slices = self.slices_factory()
            result = self.slices.apply(limits.slice, props, f"ds01 limits for {limits.user} "
                                                            f"(group {limits.group})")
        except (SliceError, OSError) as exc:
            self.close()  # a fresh connection next time: this one may be what failed
            self.on_error(f"slice {limits.slice}: {exc}", limits.user)
            return False
        self.applied[limits.user] = key
        if result.mismatches:
            self.log.record("slice-mismatch", "; ".join(result.mismatches), user=limits.user,
                            group=limits.group, slice_name=limits.slice, priority=syslog.LOG_ERR)
            return True
        ignored = f" ({', '.join(result.ignored)} not enforceable on cgroup v1)" if result.ignored else ""
        self.log.record("slice-limits", describe_limits(limits) + ignored, user=limits.user,
                        group=limits.group, slice_name=limits.slice,
                        details={k: v for k, v in result.actual.items()})
        return True

    def reassert_all(self) -> None:
        """Apply every slice again at its next `ensure`, even one an admin changed by hand."""
        self.applied.clear()

    def close(self) -> None:
        slices, self.slices = self.slices, None
        if slices is not None:
            with contextlib.suppress(OSError):
                slices.close()
