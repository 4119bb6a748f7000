"""Inputs and outputs of the slow loop: what a plan is asked and what it answers.

:class:`PlanRequest` describes one planning problem in arrays: the sessions still to
serve (their site, the steps they are plugged in, power bounds and energy still needed),
the per-step caps from the :class:`~aggregator.limits.LimitBook`, the reserve the market
commitments need (per step and direction: ``reserve_up_kw``/``reserve_down_kw`` from the
awarded volumes per block, or the symmetric ``reserve_kw``), optionally the energy-reservoir
time ``reservoir_s`` that reserve must be sustainable for, and a price series.
:class:`Plan` is the answer: a base power per session and step (average kW over the part
of the step the car is plugged in), each site's reserve up/down, and how the plan was
obtained (solver, status, times, fallback).

:func:`transfer_plan` reads one session's energy transfer plan (ETP) with its 68 % and
95 % bands out of a plan.

Invariant of a request: ``0 ≤ first_step < last_step ≤ steps``, ``min_power_kw ≤ 0 ≤
max_power_kw``, ``0 < plugged_frac ≤ 1``. :meth:`PlanRequest.validate` reports every
violation.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aggregator.errors import Issue
from aggregator.limits import Caps
from aggregator.pebc import EnergyTransferPlan

__all__ = [
    "A68",
    "A95",
    "Plan",
    "PlanRequest",
    "PlanWeights",
    "SiteLinearConstraints",
    "select_sessions",
    "session_windows",
    "transfer_plan",
]


def session_windows(
    start_s: float,
    step_s: float,
    steps: int,
    arrival_s: NDArray[np.float64],
    departure_s: NDArray[np.float64],
) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.float64], NDArray[np.float64]]:
    """The steps each session is plugged in, ``[first, last)``, and the plugged part of its
    first and last step, on a grid of ``steps`` steps from ``start_s`` (POSIX seconds).

    Arrivals before the horizon count from its start, departures after it end at its end.
    A session inside a single step gets its plugged part of that step as both fractions.
    """
    end_s = start_s + steps * step_s
    arr = np.clip(arrival_s, start_s, end_s)
    dep = np.clip(departure_s, start_s, end_s)
    first = np.clip(np.floor((arr - start_s) / step_s), 0, steps - 1).astype(np.intp)
    last = np.minimum(
        np.maximum(np.ceil((dep - start_s) / step_s).astype(np.intp), first + 1), steps
    )
    first_frac = np.clip((start_s + (first + 1) * step_s - arr) / step_s, 1e-6, 1.0)
    last_frac = np.clip((dep - (start_s + (last - 1) * step_s)) / step_s, 1e-6, 1.0)
    single = last == first + 1
    both = np.clip((dep - arr) / step_s, 1e-6, 1.0)
    return first, last, np.where(single, both, first_frac), np.where(single, both, last_frac)


@dataclass(frozen=True)
class SiteLinearConstraints:
    """Extra linear constraints on site powers: ``matrix @ site_kw ≤ upper``.

    ``site_kw`` is the plan's site power flattened site-major (index ``site × steps +
    step``, kW, positive = import). The grid package uses this to put linearised line and
    transformer loading and bus voltage limits into the plan; the core knows nothing of
    grids. With a reserve, each row holds for the worst activation inside the reserve
    band (positive coefficients meet the up reserve, negative ones the down reserve).
    ``labels`` name each row (element and step) for reporting.
    """

    matrix: Any  # scipy.sparse matrix, rows × (sites × steps)
    upper: NDArray[np.float64]
    labels: tuple[str, ...] = ()

    def validate(self, n_sites: int, steps: int) -> list[Issue]:
        issues: list[Issue] = []
        rows, cols = self.matrix.shape
        if cols != n_sites * steps:
            issues.append(Issue("site_constraints", f"{cols} columns, expected {n_sites * steps}"))
        if self.upper.shape != (rows,):
            issues.append(Issue("site_constraints", f"upper has shape {self.upper.shape}"))
        elif not np.all(np.isfinite(self.upper)):
            issues.append(Issue("site_constraints", "upper bounds must be finite"))
        if self.labels and len(self.labels) != rows:
            issues.append(Issue("site_constraints", "one label per row is required"))
        return issues


@dataclass(frozen=True, slots=True)
class PlanWeights:
    """Objective weights, in EUR per unit so the terms can be compared.

    ``shortfall_eur_per_kwh`` makes energy-by-departure effectively hard whenever it can be
    met (it dwarfs every other term) and a penalised shortfall when it cannot. The
    ``fairness_eur`` term spreads an unavoidable shortfall evenly (it prices the worst
    relative shortfall of any session). ``earliness_eur_per_kwh_step`` is a small tie-break
    that prefers charging earlier, so that a car leaving early is not starved by a plan that
    is optimal only if nothing new arrives. ``quadratic_eur_per_kw2`` (0 = pure LP) adds a
    valley-filling quadratic term and needs a QP solver (Clarabel).

    Defaults keep a 10 000 × 96 re-plan within seconds: measured with HiGHS on this
    machine, the peak term adds ~2 s, the ramp term ~0.6 s and the fairness term ~10 s at
    that size (they couple every session through one fleet-wide variable), so they are
    off by default and meant for smaller fleets or sites.
    """

    shortfall_eur_per_kwh: float = 1000.0
    fairness_eur: float = 0.0
    peak_eur_per_kw: float = 0.0
    ramp_eur_per_kw: float = 0.0
    degradation_eur_per_kwh: float = 0.05
    reserve_shortfall_eur_per_kw: float = 50.0
    earliness_eur_per_kwh_step: float = 1e-4
    quadratic_eur_per_kw2: float = 0.0


@dataclass(frozen=True)
class PlanRequest:
    """One planning problem, vectorised over ``n`` sessions and ``steps`` time steps."""

    start: datetime
    step_s: float
    steps: int
    session_site: NDArray[np.intp]
    first_step: NDArray[np.intp]
    last_step: NDArray[np.intp]
    first_frac: NDArray[np.float64]
    last_frac: NDArray[np.float64]
    max_power_kw: NDArray[np.float64]
    min_power_kw: NDArray[np.float64]
    energy_needed_kwh: NDArray[np.float64]
    discharge_budget_kwh: NDArray[np.float64]
    site_feeder: NDArray[np.intp]
    caps: Caps
    reserve_kw: NDArray[np.float64]
    price_eur_per_mwh: NDArray[np.float64] | None = None
    weights: PlanWeights = field(default_factory=PlanWeights)
    site_constraints: SiteLinearConstraints | None = None
    # awarded reserve per step and direction (kW, T each); None = the symmetric reserve_kw
    reserve_up_kw: NDArray[np.float64] | None = None
    reserve_down_kw: NDArray[np.float64] | None = None
    # energy-reservoir rule (s, e.g. 900 or 1800): the reserve held must be sustainable
    # that long (aggregator.planning.reservoir); None = power headroom only
    reservoir_s: float | None = None

    def reserve_targets_kw(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The up and down reserve to hold in each step (kW, ≥ 0): ``reserve_up_kw`` /
        ``reserve_down_kw`` where given, else the symmetric ``reserve_kw``."""
        up = self.reserve_kw if self.reserve_up_kw is None else self.reserve_up_kw
        down = self.reserve_kw if self.reserve_down_kw is None else self.reserve_down_kw
        return np.maximum(up, 0.0), np.maximum(down, 0.0)

    @property
    def has_reserve(self) -> bool:
        up, down = self.reserve_targets_kw()
        return bool(np.any(up > 0) or np.any(down > 0))

    @property
    def n_sessions(self) -> int:
        return int(self.session_site.shape[0])

    @property
    def n_sites(self) -> int:
        return int(self.site_feeder.shape[0])

    @property
    def n_feeders(self) -> int:
        return int(self.caps.feeder_kw.shape[0])

    @property
    def step_h(self) -> float:
        return self.step_s / 3600.0

    def plugged_fraction(self) -> NDArray[np.float64]:
        """The plugged part of every step per session, ``(sessions, steps)``; 0 = away."""
        t = np.arange(self.steps)
        first, last = self.first_step, self.last_step
        frac = ((t >= first[:, None]) & (t < last[:, None])).astype(np.float64)
        rows = np.arange(self.n_sessions)
        frac[rows, first] = self.first_frac
        frac[rows, last - 1] = np.minimum(frac[rows, last - 1], self.last_frac)
        return frac

    def step_time(self, index: int) -> datetime:
        return self.start + timedelta(seconds=self.step_s * index)

    def validate(self) -> list[Issue]:
        issues: list[Issue] = []
        n, t = self.n_sessions, self.steps
        if t <= 0 or self.step_s <= 0:
            issues.append(Issue("steps", "steps and step_s must be > 0"))
            return issues
        arrays = {
            "first_step": self.first_step,
            "last_step": self.last_step,
            "first_frac": self.first_frac,
            "last_frac": self.last_frac,
            "max_power_kw": self.max_power_kw,
            "min_power_kw": self.min_power_kw,
            "energy_needed_kwh": self.energy_needed_kwh,
            "discharge_budget_kwh": self.discharge_budget_kwh,
        }
        for name, arr in arrays.items():
            if arr.shape != (n,):
                issues.append(Issue(name, f"shape {arr.shape}, expected ({n},)"))
        if issues:
            return issues
        if self.caps.site_kw.shape != (self.n_sites, t):
            issues.append(Issue("caps.site_kw", f"shape {self.caps.site_kw.shape}"))
        if self.caps.fleet_kw.shape != (t,):
            issues.append(Issue("caps.fleet_kw", f"shape {self.caps.fleet_kw.shape}"))
        if self.reserve_kw.shape != (t,):
            issues.append(Issue("reserve_kw", f"shape {self.reserve_kw.shape}, expected ({t},)"))
        for name, given in (
            ("reserve_up_kw", self.reserve_up_kw),
            ("reserve_down_kw", self.reserve_down_kw),
        ):
            if given is not None and given.shape != (t,):
                issues.append(Issue(name, f"shape {given.shape}, expected ({t},)"))
        if self.reservoir_s is not None and not (0 < self.reservoir_s < math.inf):
            issues.append(Issue("reservoir_s", "must be a positive number of seconds"))
        if self.price_eur_per_mwh is not None and self.price_eur_per_mwh.shape != (t,):
            issues.append(Issue("price_eur_per_mwh", "one price per step is required"))
        bad_window = np.flatnonzero(
            (self.first_step < 0) | (self.last_step > t) | (self.first_step >= self.last_step)
        )
        issues.extend(
            Issue("first_step", "empty or out-of-horizon window", (str(i),)) for i in bad_window
        )
        bad_bounds = np.flatnonzero((self.min_power_kw > 0) | (self.max_power_kw < 0))
        issues.extend(Issue("max_power_kw", "need min ≤ 0 ≤ max", (str(i),)) for i in bad_bounds)
        bad_site = np.flatnonzero((self.session_site < 0) | (self.session_site >= self.n_sites))
        issues.extend(Issue("session_site", "unknown site index", (str(i),)) for i in bad_site)
        for name in ("first_frac", "last_frac"):
            arr = arrays[name]
            for i in np.flatnonzero((arr <= 0) | (arr > 1)):
                issues.append(Issue(name, "must be in (0, 1]", (str(i),)))
        for i in np.flatnonzero(
            ~np.isfinite(self.energy_needed_kwh) | (self.energy_needed_kwh < 0)
        ):
            issues.append(Issue("energy_needed_kwh", "must be finite and ≥ 0", (str(i),)))
        return issues


@dataclass(frozen=True)
class Plan:
    """A base schedule: ``power_kw[j, t]`` is session ``j``'s power while plugged in step ``t``.

    ``energy_kwh[j]`` is what the plan delivers to session ``j``; ``shortfall_kwh[j]`` what
    it misses. ``reserve_up_kw``/``reserve_down_kw`` (sites × steps) are the headroom each
    site keeps for the committed reserve. ``fallback`` is ``None`` for an optimal plan and
    names the reason otherwise (the plan is then the proportional allocation).
    """

    start: datetime
    step_s: float
    power_kw: NDArray[np.float64]
    energy_kwh: NDArray[np.float64]
    shortfall_kwh: NDArray[np.float64]
    reserve_up_kw: NDArray[np.float64]
    reserve_down_kw: NDArray[np.float64]
    objective: float
    status: str
    solver: str
    build_s: float
    solve_s: float
    rebuilt: bool
    fallback: str | None = None

    @property
    def steps(self) -> int:
        return int(self.power_kw.shape[1]) if self.power_kw.ndim == 2 else 0

    def step_at(self, t: datetime) -> int | None:
        """Index of the step containing ``t``, or ``None`` outside the horizon."""
        i = int((t - self.start).total_seconds() // self.step_s)
        return i if 0 <= i < self.steps else None


# Activation quantiles of a symmetric FCR reserve: |activation| stays below A68 with 68 %
# and below A95 with 95 % probability. Continental Europe's frequency has a standard
# deviation of roughly 20–25 mHz; with a 10 mHz deadband and full activation at 200 mHz
# that gives about 0.08 and 0.21 of full activation. Pass your own for other products.
A68 = 0.08
A95 = 0.21


def transfer_plan(
    plan: Plan, req: PlanRequest, session: int, *, a68: float = A68, a95: float = A95
) -> EnergyTransferPlan:
    """Session ``session``'s energy transfer plan with 68 % / 95 % bands (IEC 63110 ETP).

    The bands come from the session's share of its site's reserve: with activation
    ``a`` (a fraction of full activation) the session deviates by ``a × share``, where
    its share of the site reserve is in proportion to its own headroom in that step.
    """
    p = plan.power_kw[session]
    t = np.arange(req.steps)
    plugged = (t >= req.first_step[session]) & (t < req.last_step[session])
    site = int(req.session_site[session])
    mates = np.flatnonzero(req.session_site == site)
    in_step = (t[None, :] >= req.first_step[mates, None]) & (
        t[None, :] < req.last_step[mates, None]
    )
    head_up = np.where(in_step, req.max_power_kw[mates, None] - plan.power_kw[mates], 0.0)
    head_dn = np.where(in_step, plan.power_kw[mates] - req.min_power_kw[mates, None], 0.0)
    mine = int(np.flatnonzero(mates == session)[0])
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        up_share = np.nan_to_num(head_up[mine] / head_up.sum(axis=0))
        dn_share = np.nan_to_num(head_dn[mine] / head_dn.sum(axis=0))
    up = np.where(plugged, up_share * plan.reserve_up_kw[site], 0.0)
    dn = np.where(plugged, dn_share * plan.reserve_down_kw[site], 0.0)
    return EnergyTransferPlan(
        start=plan.start,
        step_s=plan.step_s,
        power_kw=p.copy(),
        band68_kw=(p - a68 * dn, p + a68 * up),
        band95_kw=(p - a95 * dn, p + a95 * up),
    )


def select_sessions(
    plan: Plan, req: PlanRequest, keep: NDArray[np.bool_]
) -> tuple[Plan, PlanRequest]:
    """The plan and request restricted to the sessions ``keep`` marks (sites, steps, caps
    and the site-level reserve unchanged; grid rows dropped: they refer to every session's
    site power). For views of a part of the fleet, e.g. one feeder's flexibility."""
    sub_req = dataclasses.replace(
        req,
        session_site=req.session_site[keep],
        first_step=req.first_step[keep],
        last_step=req.last_step[keep],
        first_frac=req.first_frac[keep],
        last_frac=req.last_frac[keep],
        max_power_kw=req.max_power_kw[keep],
        min_power_kw=req.min_power_kw[keep],
        energy_needed_kwh=req.energy_needed_kwh[keep],
        discharge_budget_kwh=req.discharge_budget_kwh[keep],
        site_constraints=None,
    )
    sub_plan = dataclasses.replace(
        plan,
        power_kw=plan.power_kw[keep],
        energy_kwh=plan.energy_kwh[keep],
        shortfall_kwh=plan.shortfall_kwh[keep],
    )
    return sub_plan, sub_req
