"""How one service replica behaves: :class:`ServiceConfig` (seconds, kW) and price series.

Invariants checked by :meth:`ServiceConfig.validate` (every problem returned, none raised):
a plan step > 0 and a horizon of at least one step; the failsafe duration within the
2–24 h IEC 63380-1 allows; the heartbeat more often than a setpoint lease lasts, so a
CSMS hears from the service before its lease runs out. Market numbers (FCR deadband, full
activation, nominal frequency) are not here: they belong to :mod:`markets.activation`,
which the composition root injects as the service's ``activation``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from aggregator.errors import Issue
from aggregator.planning.request import PlanWeights

__all__ = ["HISTORY", "PriceSeries", "ServiceConfig"]

HISTORY = 100_000  # plan and dispatch timings kept for statistics (a deque each)


@dataclass(frozen=True)
class ServiceConfig:
    """Behaviour of one service replica (seconds, kW)."""

    plan_step_s: float = 900.0
    horizon_s: float = 86_400.0
    min_replan_interval_s: float = 300.0
    setpoint_validity_s: float = 120.0
    heartbeat_interval_s: float = 30.0  # a batch per CSMS at least this often
    failsafe_kw: float = 4.2
    failsafe_duration_s: float = 7_200.0
    reserve_kw: float = 0.0
    solver: str = "HIGHS"
    # the planner runs in a worker process and the fast loop keeps the last plan meanwhile,
    # so a slow solve costs nothing but freshness: long enough for a fresh 10 000 x 96 plan
    # with a 1 000 kW reserve (~45 s on a 2-core Xeon) to finish instead of falling back
    plan_time_limit_s: float = 120.0
    session_timeout_s: float = 7_200.0
    # linearisation reserve (pp) below the feeder's limits, which already hold its margin
    # against forecast error (grid.model.GridMargin); the AC repair catches the rest
    grid_margin_pct: float = 0.5
    grid_max_iterations: int = 3
    grid_horizon_s: float = 14_400.0  # plan steps linearised and AC-checked in each plan
    weights: PlanWeights = field(default_factory=PlanWeights)

    def validate(self) -> list[Issue]:
        issues: list[Issue] = []
        if not self.plan_step_s > 0:
            issues.append(Issue("plan_step_s", "must be > 0"))
        if not self.horizon_s >= self.plan_step_s:
            issues.append(Issue("horizon_s", "must be at least one plan step"))
        if not 7_200.0 <= self.failsafe_duration_s <= 86_400.0:
            issues.append(Issue("failsafe_duration_s", "must be between 2 h and 24 h"))
        if not self.failsafe_kw >= 0:
            issues.append(Issue("failsafe_kw", "must be ≥ 0"))
        if not self.setpoint_validity_s > 0:
            issues.append(Issue("setpoint_validity_s", "must be > 0"))
        if not 0 < self.heartbeat_interval_s < self.setpoint_validity_s:
            issues.append(
                Issue("heartbeat_interval_s", "must be > 0 and below setpoint_validity_s")
            )
        if not self.reserve_kw >= 0:
            issues.append(Issue("reserve_kw", "must be ≥ 0"))
        return issues


@dataclass(frozen=True)
class PriceSeries:
    """Step-hold price series: ``eur_per_mwh[i]`` holds from ``start_s[i]`` (POSIX s)."""

    start_s: NDArray[np.float64]
    eur_per_mwh: NDArray[np.float64]

    def at(self, times_s: NDArray[np.float64]) -> NDArray[np.float64]:
        i = np.clip(np.searchsorted(self.start_s, times_s, side="right") - 1, 0, None)
        return self.eur_per_mwh[i]
