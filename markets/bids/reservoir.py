"""Can a plan sustain its reserve for the energy-reservoir time? A check after the plan.

The slow loop's LP holds *power* headroom for the awarded reserve in every step
(:mod:`aggregator.planning.lp`); the energy-reservoir rule (15 or 30 min of full
activation) also needs *energy*: consuming more for the reservoir time must be given
back before departure by charging less later (the energy the plan still delivers after
the step), and consuming less must be caught up later (the room between the sessions'
maximum power and the plan after the step). :func:`reservoir_check` reads, per step, the
reserve each direction can sustain that long with the plan's own schedule, and the steps
where it is below the plan's reserve — for the aggregator to see before the block starts
(the bid was sized with the same rule, :mod:`markets.forecast.flex`).

Invariants: the sustained reserve is ≥ 0 and never above the plan's power headroom
(:func:`markets.flexibility.fleet_flexibility_kw`); a step with no reserve is never short.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from aggregator.planning.request import Plan, PlanRequest
from markets.flexibility import fleet_flexibility_kw

__all__ = ["ReservoirCheck", "reservoir_check"]


@dataclass(frozen=True)
class ReservoirCheck:
    """Per step: reserve sustainable for ``reservoir_s`` (kW) and where it falls short."""

    reservoir_s: float
    up_kw: NDArray[np.float64]
    down_kw: NDArray[np.float64]
    short_up_steps: NDArray[np.intp]
    short_down_steps: NDArray[np.intp]

    @property
    def ok(self) -> bool:
        return not (self.short_up_steps.size or self.short_down_steps.size)


def reservoir_check(
    plan: Plan, req: PlanRequest, reservoir_s: float, *, tol_kw: float = 1e-6
) -> ReservoirCheck:
    """The reserve ``plan`` can sustain for ``reservoir_s`` per step (module doc)."""
    if not reservoir_s > 0:
        raise ValueError("reservoir_s must be > 0")
    frac = req.plugged_fraction()
    h = req.step_h
    energy = plan.power_kw * frac * h  # (sessions, steps) kWh
    after = np.cumsum(energy[:, ::-1], axis=1)[:, ::-1] - energy  # planned after step t
    room = np.cumsum((req.max_power_kw[:, None] * frac * h)[:, ::-1], axis=1)[:, ::-1]
    room = room - req.max_power_kw[:, None] * frac * h  # max energy after step t
    whole = frac >= 1.0 - 1e-9
    res_h = reservoir_s / 3600.0
    up_e = np.where(whole, after / res_h, 0.0).sum(axis=0)
    down_e = np.where(whole, np.maximum(room - after, 0.0) / res_h, 0.0).sum(axis=0)
    up_p, down_p = fleet_flexibility_kw(plan, req)
    up = np.maximum(np.minimum(up_e, up_p), 0.0)
    down = np.maximum(np.minimum(down_e, down_p), 0.0)
    held_up = plan.reserve_up_kw.sum(axis=0)
    held_down = plan.reserve_down_kw.sum(axis=0)
    return ReservoirCheck(
        reservoir_s,
        up,
        down,
        np.flatnonzero(up < held_up - tol_kw).astype(np.intp),
        np.flatnonzero(down < held_down - tol_kw).astype(np.intp),
    )
