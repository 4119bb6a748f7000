"""How one service replica behaves: :class:`ServiceConfig` (seconds, kW) and price series.

Invariants checked by :meth:`ServiceConfig.validate` (every problem returned, none raised):
a plan step > 0 and a horizon of at least one step; the failsafe duration within the
2–24 h IEC 63380-1 allows; the heartbeat more often than a setpoint lease lasts, so a
CSMS hears from the service before its lease runs out. Market numbers (FCR deadband, full
activation, nominal frequency) are not here: they belong to :mod:`markets.activation`,
which the composition root injects as the service's ``activation``.

The reserve to hold is a :class:`ReserveSchedule` (awarded kW up and down per block, e.g.
the six 4 h blocks of FCR/aFRR); the scalar ``reserve_kw`` is the constant schedule used
when none is given. Outside every block the schedule holds ``base_kw``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from aggregator.errors import Issue
from aggregator.planning.request import PlanWeights

__all__ = ["HISTORY", "PriceSeries", "ReserveSchedule", "ServiceConfig"]

HISTORY = 100_000  # plan and dispatch timings kept for statistics (a deque each)


@dataclass(frozen=True)
class ReserveSchedule:
    """Awarded reserve per block: ``up_kw[i]``/``down_kw[i]`` (kW, ≥ 0) hold in
    ``[start_s[i], end_s[i])`` (POSIX s, blocks sorted, not overlapping); ``base_kw``
    (symmetric) holds outside every block. Up = the fleet may be asked to consume more.
    ``fcr_kw[i]`` (optional) is the symmetric FCR part of the block, the rest answers
    setpoint requests (aFRR); without it every signal may use the whole band."""

    start_s: NDArray[np.float64]
    end_s: NDArray[np.float64]
    up_kw: NDArray[np.float64]
    down_kw: NDArray[np.float64]
    base_kw: float = 0.0
    fcr_kw: NDArray[np.float64] | None = None

    @classmethod
    def constant(cls, reserve_kw: float) -> ReserveSchedule:
        empty = np.zeros(0)
        return cls(empty, empty, empty, empty, base_kw=float(reserve_kw))

    def validate(self) -> list[Issue]:
        issues: list[Issue] = []
        n = self.start_s.shape
        if not (self.end_s.shape == self.up_kw.shape == self.down_kw.shape == n):
            return [Issue("reserve_schedule", "one start, end, up and down per block")]
        fcr = self.fcr_kw
        if fcr is not None and (
            fcr.shape != n or np.any(fcr < 0) or np.any(fcr > np.minimum(self.up_kw, self.down_kw))
        ):
            issues.append(Issue("reserve_schedule", "FCR part must be in [0, min(up, down)]"))
        if np.any(self.end_s <= self.start_s) or np.any(self.start_s[1:] < self.end_s[:-1]):
            issues.append(Issue("reserve_schedule", "blocks must be sorted, non-empty, disjoint"))
        if not (np.all(self.up_kw >= 0) and np.all(self.down_kw >= 0) and self.base_kw >= 0):
            issues.append(Issue("reserve_schedule", "reserve must be ≥ 0"))
        return issues

    def scaled(self, fraction: float) -> ReserveSchedule:
        """This schedule times ``fraction`` (a replica's part of a fleet's award)."""
        f = float(fraction)
        fcr = None if self.fcr_kw is None else self.fcr_kw * f
        return ReserveSchedule(
            self.start_s, self.end_s, self.up_kw * f, self.down_kw * f, self.base_kw * f, fcr
        )

    def at(self, t_s: float) -> tuple[float, float]:
        """The (up, down) reserve held at ``t_s``."""
        i = int(np.searchsorted(self.start_s, t_s, side="right")) - 1
        if i >= 0 and t_s < self.end_s[i]:
            return float(self.up_kw[i]), float(self.down_kw[i])
        return self.base_kw, self.base_kw

    def band(self, t_s: float, *, fcr: bool) -> tuple[float, float]:
        """The (up, down) band a signal may use at ``t_s``: the block's FCR part for a
        frequency sample (``fcr=True``), the rest for a setpoint request; the whole band
        when the schedule does not split it."""
        up, down = self.at(t_s)
        i = int(np.searchsorted(self.start_s, t_s, side="right")) - 1
        if self.fcr_kw is None or i < 0 or t_s >= self.end_s[i]:
            return up, down
        part = float(self.fcr_kw[i])
        return (part, part) if fcr else (up - part, down - part)

    def for_steps(
        self, start_s: float, step_s: float, steps: int
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Per plan step, the largest (up, down) reserve of any block the step overlaps."""
        lo = start_s + step_s * np.arange(steps)
        hi = lo + step_s
        up, down, covered = np.zeros(steps), np.zeros(steps), np.zeros(steps)
        for b in range(self.start_s.size):  # a handful of blocks per day
            overlap = np.minimum(hi, self.end_s[b]) - np.maximum(lo, self.start_s[b])
            hit = overlap > 0
            up = np.where(hit, np.maximum(up, self.up_kw[b]), up)
            down = np.where(hit, np.maximum(down, self.down_kw[b]), down)
            covered += np.maximum(overlap, 0.0)
        outside = covered < step_s - 1e-9  # a step (partly) outside every block
        up = np.where(outside, np.maximum(up, self.base_kw), up)
        down = np.where(outside, np.maximum(down, self.base_kw), down)
        return up, down


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
    reserve_schedule: ReserveSchedule | None = None  # None = constant ``reserve_kw``
    # energy-reservoir rule in the plan (900 or 1800 s; None = power headroom only): ~20x
    # the LP's solve time, for pools up to a few thousand EVSEs (README, Markets)
    reservoir_s: float | None = None

    @property
    def reserve(self) -> ReserveSchedule:
        """The reserve to hold: the schedule, or the scalar as a constant schedule."""
        if self.reserve_schedule is not None:
            return self.reserve_schedule
        return ReserveSchedule.constant(self.reserve_kw)

    def reserve_share(self, fraction: float) -> ServiceConfig:
        """This config holding ``fraction`` of its reserve: a replica's part of the fleet's
        award (:func:`aggregator.service.fleetsplit.reserve_fraction`)."""
        if fraction == 1.0:
            return self
        schedule = None if self.reserve_schedule is None else self.reserve_schedule.scaled(fraction)
        return replace(self, reserve_kw=self.reserve_kw * fraction, reserve_schedule=schedule)

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
        if self.reserve_schedule is not None:
            issues.extend(self.reserve_schedule.validate())
        if self.reservoir_s is not None and not 0 < self.reservoir_s < math.inf:
            issues.append(Issue("reservoir_s", "must be a positive number of seconds or None"))
        return issues


@dataclass(frozen=True)
class PriceSeries:
    """Step-hold price series: ``eur_per_mwh[i]`` holds from ``start_s[i]`` (POSIX s)."""

    start_s: NDArray[np.float64]
    eur_per_mwh: NDArray[np.float64]

    def at(self, times_s: NDArray[np.float64]) -> NDArray[np.float64]:
        i = np.clip(np.searchsorted(self.start_s, times_s, side="right") - 1, 0, None)
        return self.eur_per_mwh[i]
