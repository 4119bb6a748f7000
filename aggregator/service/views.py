"""Read-only views of one replica's state, for health, metrics and adapters.

Pure functions of the fleet, the topology and the current frame: nothing here changes
state or blocks; every figure is kW, per site / feeder id and ``"fleet"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from aggregator.fleet import FleetState
from aggregator.service.frame import Frame
from aggregator.topology import Topology

__all__ = [
    "DispatchOutcome",
    "feeder_demand_kw",
    "feeder_headroom_kw",
    "measured_power_kw",
    "per_target_kw",
    "required_power_kw",
]


@dataclass(frozen=True)
class DispatchOutcome:
    """What one fast-loop run did: setpoints per slot and the deviation asked for."""

    setpoints_kw: NDArray[np.float64]
    baseline_kw: NDArray[np.float64]
    deviation_kw: float
    batches: int
    elapsed_s: float


def per_target_kw(
    fleet: FleetState, topo: Topology, per_slot_kw: NDArray[np.float64]
) -> dict[str, float]:
    """``per_slot_kw`` (one value per slot, 0 where it should not count) summed per site,
    feeder (by id) and ``"fleet"``: the one door for the views below."""
    n = fleet.n_slots
    site = np.bincount(fleet.site[:n], weights=per_slot_kw, minlength=topo.n_sites)
    feeder = np.bincount(topo.site_feeder, weights=site, minlength=topo.n_feeders)
    kw = {s.site_id: float(site[i]) for i, s in enumerate(topo.sites)}
    kw.update({fd.feeder_id: float(feeder[i]) for i, fd in enumerate(topo.feeders)})
    kw["fleet"] = float(site.sum())
    return kw


def measured_power_kw(fleet: FleetState, topo: Topology) -> dict[str, float]:
    """Measured power of the live sessions per site, feeder (by id) and ``"fleet"``."""
    n = fleet.n_slots
    return per_target_kw(fleet, topo, np.where(fleet.active[:n], fleet.power_kw[:n], 0.0))


def required_power_kw(fleet: FleetState, topo: Topology) -> dict[str, float]:
    """What the live sessions that still need energy (more than 10 Wh) would draw
    unhindered — Σ their maximum power — per site, feeder (by id) and ``"fleet"``."""
    n = fleet.n_slots
    needs = fleet.active[:n] & (fleet.energy_requested_kwh[:n] - fleet.energy_kwh[:n] > 0.01)
    return per_target_kw(fleet, topo, np.where(needs, np.maximum(fleet.max_power_kw[:n], 0.0), 0.0))


def feeder_headroom_kw(frame: Frame | None, topo: Topology) -> dict[str, float]:
    """Per feeder, its cap now minus the limit-safe base the fast loop dispatches around."""
    if frame is None:
        return {}
    base = np.bincount(
        frame.dispatch.slot_feeder, weights=frame.baseline_kw, minlength=topo.n_feeders
    )
    return {
        f.feeder_id: float(frame.dispatch.feeder_cap_kw[i] - base[i])
        for i, f in enumerate(topo.feeders)
    }


def feeder_demand_kw(fleet: FleetState, topo: Topology) -> dict[str, float]:
    """Per feeder, what its live sessions could draw: Σ their maximum power, at most the
    feeder's rating (what a fleet splitter shares the fleet cap by)."""
    n = fleet.n_slots
    most = per_target_kw(fleet, topo, np.where(fleet.active[:n], fleet.max_power_kw[:n], 0.0))
    return {fd.feeder_id: min(most[fd.feeder_id], fd.limit_kw) for fd in topo.feeders}
