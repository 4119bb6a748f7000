"""Power envelope based control (PEBC) domain types and their feasibility checks.

These are the IEC 63110 / IEC 63402 (S2) notions gridflex plans with, in the core's units
(kW, kWh, seconds, UTC-aware datetimes; positive power = import from the grid):

* :class:`PowerRange` — an allowed interval of power; V2G is a negative lower bound.
* :class:`PowerConstraints` — the union of allowed ranges, optionally per phase.
* :class:`EnergyConstraint` — cumulative energy bounds reached by a deadline
  (e.g. ≥ 30 kWh by departure, ≤ the battery's headroom).
* :class:`PowerEnvelope` — lower/upper power per time step.
* :class:`EnergyTransferPlan` — planned power per step with 68 % and 95 % bands (IEC
  63110's energy transfer plan with its power profile ranges).

(The fleet-wide form, many sessions on one grid and the check of a plan against it, is
in :mod:`aggregator.pebc.sessions`.)

Every check returns a list of :class:`~aggregator.errors.Issue` — all problems, never only
the first, each with a stable ``code`` and the ids it concerns — and never raises for bad
data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from aggregator.errors import Issue

__all__ = [
    "EnergyConstraint",
    "EnergyTransferPlan",
    "PowerConstraints",
    "PowerEnvelope",
    "PowerRange",
    "check_energy_feasible",
    "check_plan",
    "is_utc",
]

_TOL = 1e-6


def is_utc(ts: datetime) -> bool:
    """True when ``ts`` is timezone-aware with a zero UTC offset."""
    return ts.tzinfo is not None and ts.utcoffset() == timedelta(0)


@dataclass(frozen=True, slots=True)
class PowerRange:
    """Allowed power ``lower_kw ≤ p ≤ upper_kw``."""

    lower_kw: float
    upper_kw: float

    def validate(self, field: str = "range") -> list[Issue]:
        issues: list[Issue] = []
        if not (math.isfinite(self.lower_kw) and math.isfinite(self.upper_kw)):
            issues.append(Issue(field=field, code="not_finite", message="bounds must be finite"))
        elif self.lower_kw > self.upper_kw:
            issues.append(
                Issue(
                    field=field,
                    code="lower_above_upper",
                    message=f"lower_kw {self.lower_kw} exceeds upper_kw {self.upper_kw}",
                )
            )
        return issues

    def contains(self, power_kw: float, tol: float = _TOL) -> bool:
        return self.lower_kw - tol <= power_kw <= self.upper_kw + tol


@dataclass(frozen=True, slots=True)
class PowerConstraints:
    """The power an EVSE may take: a union of ranges, optionally one set per phase.

    ``ranges`` hold total (all-phase) power. ``per_phase`` (when given) holds, for each
    phase, the ranges of that phase; the total then also has to lie in ``ranges``.
    """

    ranges: tuple[PowerRange, ...]
    per_phase: tuple[tuple[PowerRange, ...], ...] | None = None

    @property
    def lower_kw(self) -> float:
        return min(r.lower_kw for r in self.ranges)

    @property
    def upper_kw(self) -> float:
        return max(r.upper_kw for r in self.ranges)

    @property
    def bidirectional(self) -> bool:
        return self.lower_kw < 0

    def validate(self) -> list[Issue]:
        issues: list[Issue] = []
        if not self.ranges:
            issues.append(
                Issue(field="ranges", code="empty", message="at least one power range is required")
            )
        for i, r in enumerate(self.ranges):
            issues.extend(r.validate(f"ranges[{i}]"))
        if self.per_phase is not None:
            if len(self.per_phase) not in (1, 2, 3):
                issues.append(
                    Issue(field="per_phase", code="phases", message="must have 1, 2 or 3 phases")
                )
            for ph, ranges in enumerate(self.per_phase):
                if not ranges:
                    issues.append(
                        Issue(
                            field=f"per_phase[{ph}]",
                            code="empty",
                            message="at least one range is required",
                        )
                    )
                for i, r in enumerate(ranges):
                    issues.extend(r.validate(f"per_phase[{ph}][{i}]"))
            if not issues and self.ranges:
                top = sum(max(r.upper_kw for r in rs) for rs in self.per_phase)
                if top < self.lower_kw - _TOL:
                    issues.append(
                        Issue(
                            field="per_phase",
                            code="unreachable",
                            message="phase ranges cannot reach the total's lower bound",
                        )
                    )
        return issues

    def allows(self, power_kw: float) -> bool:
        return any(r.contains(power_kw) for r in self.ranges)


@dataclass(frozen=True, slots=True)
class EnergyConstraint:
    """Cumulative energy of a session, counted from ``start``, within bounds by ``end``."""

    start: datetime
    end: datetime
    min_kwh: float
    max_kwh: float

    def validate(self) -> list[Issue]:
        issues: list[Issue] = []
        for name, ts in (("start", self.start), ("end", self.end)):
            if not is_utc(ts):
                issues.append(
                    Issue(field=name, code="not_utc", message="must be a UTC-aware datetime")
                )
        if is_utc(self.start) and is_utc(self.end) and self.end <= self.start:
            issues.append(Issue(field="end", code="order", message="must be after start"))
        if not (math.isfinite(self.min_kwh) and math.isfinite(self.max_kwh)):
            issues.append(
                Issue(field="min_kwh", code="not_finite", message="bounds must be finite")
            )
        elif self.min_kwh > self.max_kwh:
            issues.append(
                Issue(
                    field="min_kwh",
                    code="min_above_max",
                    message=f"{self.min_kwh} exceeds max_kwh {self.max_kwh}",
                )
            )
        return issues


def _arr(values: Sequence[float] | NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(values, dtype=np.float64)


@dataclass(frozen=True)
class PowerEnvelope:
    """Lower and upper power per step of ``step_s`` seconds from ``start``."""

    start: datetime
    step_s: float
    lower_kw: NDArray[np.float64]
    upper_kw: NDArray[np.float64]

    @classmethod
    def of(
        cls,
        start: datetime,
        step_s: float,
        lower_kw: Sequence[float] | NDArray[np.float64],
        upper_kw: Sequence[float] | NDArray[np.float64],
    ) -> PowerEnvelope:
        return cls(start, step_s, _arr(lower_kw), _arr(upper_kw))

    @property
    def steps(self) -> int:
        return int(self.lower_kw.shape[0])

    def step_end(self, index: int) -> datetime:
        return self.start + timedelta(seconds=self.step_s * (index + 1))

    def validate(self) -> list[Issue]:
        issues: list[Issue] = []
        if not is_utc(self.start):
            issues.append(
                Issue(field="start", code="not_utc", message="must be a UTC-aware datetime")
            )
        if not (math.isfinite(self.step_s) and self.step_s > 0):
            issues.append(
                Issue(field="step_s", code="not_positive", message="must be finite and > 0")
            )
        if self.lower_kw.shape != self.upper_kw.shape or self.lower_kw.ndim != 1:
            issues.append(
                Issue(
                    field="upper_kw",
                    code="shape",
                    message="lower_kw and upper_kw must be 1-D of equal length",
                )
            )
            return issues
        bad = ~(np.isfinite(self.lower_kw) & np.isfinite(self.upper_kw))
        for i in np.flatnonzero(bad):
            issues.append(
                Issue(
                    field="envelope",
                    code="not_finite",
                    ids=(f"step {i}",),
                    message="bounds must be finite",
                )
            )
        crossed = np.flatnonzero(self.lower_kw > self.upper_kw + _TOL)
        for i in crossed:
            issues.append(
                Issue(
                    field="envelope",
                    code="lower_above_upper",
                    ids=(f"step {i}",),
                    message=f"lower {self.lower_kw[i]:.3f} kW > upper {self.upper_kw[i]:.3f} kW",
                )
            )
        return issues

    def energy_range_kwh(self, until: datetime) -> tuple[float, float]:
        """Least and most energy the envelope allows from ``start`` to ``until``."""
        dt_h = self.step_s / 3600.0
        frac = np.clip(
            ((until - self.start).total_seconds() / self.step_s) - np.arange(self.steps), 0, 1
        )
        return (
            float(np.sum(self.lower_kw * frac) * dt_h),
            float(np.sum(self.upper_kw * frac) * dt_h),
        )


def check_energy_feasible(envelope: PowerEnvelope, energy: EnergyConstraint) -> list[Issue]:
    """Every reason why ``energy`` cannot be met inside ``envelope``."""
    issues = envelope.validate() + energy.validate()
    if issues:
        return issues
    if energy.start < envelope.start:
        issues.append(
            Issue(
                field="energy.start", code="outside_envelope", message="starts before the envelope"
            )
        )
    if energy.end > envelope.step_end(envelope.steps - 1):
        issues.append(
            Issue(field="energy.end", code="outside_envelope", message="ends after the envelope")
        )
    # energy is counted from ``energy.start``, not from the envelope's start
    lo_end, hi_end = envelope.energy_range_kwh(energy.end)
    lo_start, hi_start = envelope.energy_range_kwh(energy.start)
    lo, hi = lo_end - lo_start, hi_end - hi_start
    if hi < energy.min_kwh - _TOL:
        issues.append(
            Issue(
                field="energy.min_kwh",
                code="energy_unreachable",
                message=(
                    f"needs {energy.min_kwh:.3f} kWh but the envelope allows at most {hi:.3f} kWh"
                ),
            )
        )
    if lo > energy.max_kwh + _TOL:
        issues.append(
            Issue(
                field="energy.max_kwh",
                code="energy_forced",
                message=f"allows {energy.max_kwh:.3f} kWh but the envelope forces {lo:.3f} kWh",
            )
        )
    return issues


@dataclass(frozen=True)
class EnergyTransferPlan:
    """Planned power per step with 68 % and 95 % bands (IEC 63110 ETP with PPR)."""

    start: datetime
    step_s: float
    power_kw: NDArray[np.float64]
    band68_kw: tuple[NDArray[np.float64], NDArray[np.float64]]
    band95_kw: tuple[NDArray[np.float64], NDArray[np.float64]]

    @property
    def steps(self) -> int:
        return int(self.power_kw.shape[0])

    def energy_kwh(self) -> float:
        return float(np.sum(self.power_kw) * self.step_s / 3600.0)


def check_plan(plan: EnergyTransferPlan, envelope: PowerEnvelope) -> list[Issue]:
    """Every way ``plan`` leaves ``envelope`` or has disordered bands."""
    issues: list[Issue] = []
    if plan.steps != envelope.steps:
        return [
            Issue(
                field="power_kw",
                code="shape",
                message=f"{plan.steps} steps, envelope has {envelope.steps}",
            )
        ]
    if plan.start != envelope.start or plan.step_s != envelope.step_s:
        issues.append(
            Issue(
                field="start", code="grid_mismatch", message="plan and envelope time grids differ"
            )
        )
    p = plan.power_kw
    inside = (p >= envelope.lower_kw - _TOL) & (p <= envelope.upper_kw + _TOL)  # NaN: outside
    for i in np.flatnonzero(~inside):
        issues.append(
            Issue(
                field="power_kw",
                code="power_outside_envelope",
                ids=(f"step {i}",),
                message="outside the envelope",
            )
        )
    lo95, hi95 = plan.band95_kw
    lo68, hi68 = plan.band68_kw
    bands = {"band95_kw[0]": lo95, "band68_kw[0]": lo68, "band68_kw[1]": hi68, "band95_kw[1]": hi95}
    wrong = [name for name, arr in bands.items() if np.shape(arr) != p.shape]
    if wrong:
        return issues + [
            Issue(field=n, code="shape", message=f"shape {np.shape(bands[n])}, expected {p.shape}")
            for n in wrong
        ]
    order = (lo95 <= lo68 + _TOL) & (lo68 <= p + _TOL) & (p <= hi68 + _TOL) & (hi68 <= hi95 + _TOL)
    for i in np.flatnonzero(~order):
        issues.append(
            Issue(
                field="bands",
                code="band_order",
                ids=(f"step {i}",),
                message="need lo95 ≤ lo68 ≤ power ≤ hi68 ≤ hi95",
            )
        )
    return issues
