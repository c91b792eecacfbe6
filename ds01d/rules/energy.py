"""GPU energy shared out to the containers that held the GPUs: pure.

NVML gives one total-energy counter per physical GPU, not per MIG instance or process.
So each sampling interval's energy of a GPU is shared out: a MIG instance's holder gets
the instance's share of the GPU (3 of 7 slices: 3/7), and containers sharing a whole GPU
(or one MIG instance) split that share equally, as they held it for the same interval.
What nobody held is not charged to anyone.  A GPU without the counter (or whose counter
went backwards: a driver reload) charges no energy; its GPU time is "unmetered", so a
report can say the energy there is unknown rather than 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from ds01d.rules.gpu_units import Unit, gpu_instances


@dataclass(frozen=True)
class EnergyShare:
    """One container's part of an interval's energy."""

    joules: float = 0.0
    unmetered: float = 0.0       # GPU-equivalents it held on GPUs whose energy is unknown


def energy_deltas(previous: Mapping[str, int | None], now: Mapping[str, int | None]) -> dict[str, float | None]:
    """Joules per GPU between two readings of the millijoule counters (None: unknown, where
    either reading is missing or the counter went backwards)."""
    out: dict[str, float | None] = {}
    for gpu, value in now.items():
        before = previous.get(gpu)
        out[gpu] = None if value is None or before is None or value < before else (value - before) / 1000
    return out


def share_energy(holders: Mapping[str, Sequence[Unit]], joules: Mapping[str, float | None]
                 ) -> dict[str, EnergyShare]:
    """Each container's share of the interval's energy (`holders`: container -> the units it
    held; `joules`: GPU uuid -> the GPU's energy over the interval, None where unknown)."""
    shares = {cid: gpu_instances(units) for cid, units in holders.items()}
    sharing: dict[tuple[str, int | None], int] = {}
    for held in shares.values():
        for key in held:
            sharing[key] = sharing.get(key, 0) + 1
    out = {}
    for cid, held in shares.items():
        total = unmetered = 0.0
        for key, unit in held.items():
            delta = joules.get(unit.gpu_uuid)
            if delta is None:
                unmetered += unit.share
            else:
                total += delta * unit.share / sharing[key]
        out[cid] = EnergyShare(total, round(unmetered, 6))
    return out
