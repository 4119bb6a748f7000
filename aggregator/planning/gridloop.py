"""What the core needs from a grid model, and the slow loop's grid guarantee.

The core plans with linear grid constraints and checks its plans by AC power flow, but it
imports no grid library: a :class:`GridModel` (implemented in the ``grid`` package, on
pandapower and power-grid-model) is injected. Site powers cross this interface as arrays
``(sites, steps)`` in kW, positive = import, in the order of the topology's sites.

:func:`successive_plan` is the slow loop's grid step (issues "grid awareness" and 16):

1. **linearise, plan, check** by AC power flow; on violations re-linearise around the plan
   just made (at most ``max_iterations`` plans);
2. **repair** what is still violated (:func:`repair_site_kw`): per violating step, the
   sites behind the overloaded element (by their sensitivity in the linear rows of that
   element, else every site drawing power in that step) are scaled down along a ray that
   ends at zero EV power, bisected with exact AC checks — an AC-constrained projection of
   the step onto the feasible side;
3. **recover** energy where the grid allows: re-solve with the repaired site powers fixed
   as caps (``P[s, t] ≤ repaired``), so the LP moves the energy to other steps and sites;
   check again and repeat (``repair_rounds``);
4. if the last re-solve still violates, the plan itself is scaled to the repaired site
   powers (no solver), which always passes.

What is checked is the **grid view** of a plan (:func:`grid_site_kw`): per site and step,
every session present in the step at its planned rate — not the step mean, which a
re-plan made mid-step (it charges the rest of the step faster) or a car leaving inside a
step understates. Rows on the grid view become rows on the plan's step means through the
view/mean ratio of the plan they are linearised at (:func:`_in_plan_terms`).

Invariant (the guarantee): the plan :func:`successive_plan` returns passes the model's AC
check over the checked steps — with zero EV power in a step the feeder is at its
background, which the model's check never counts as the fleet's doing — unless the model
cannot be solved at all. What the repair cost is reported (:class:`GridRepair`): the
planned energy it removed, total and per feeder, over the whole plan and in its first
step (the one dispatched now). The margin against forecast error lives in the model's
limits (``grid.model.GridMargin``) and is reported in every :class:`GridCheck`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from aggregator.planning.request import Plan, PlanRequest, SiteLinearConstraints

__all__ = [
    "GridCheck",
    "GridModel",
    "GridPlanResult",
    "GridRepair",
    "GridViolation",
    "grid_site_kw",
    "plan_site_power_kw",
    "repair_site_kw",
    "step_share",
    "successive_plan",
]

BISECTION_STEPS = 8
"""AC checks per repair: the repaired power is within 2/2**8 of the ray's length (about 1 %
of a site's power at the weight floor) of the best point on the ray."""
_EPS_KW = 1e-6
_WEIGHT_FLOOR = 0.05


@dataclass(frozen=True, slots=True)
class GridViolation:
    """One limit broken in one step: ``element`` like ``line:<name>``, ``bus:<name>``."""

    step: int
    element: str
    kind: str
    value: float
    limit: float


@dataclass(frozen=True)
class GridCheck:
    """The AC check of a schedule: every violation and the extreme values seen."""

    violations: tuple[GridViolation, ...]
    max_line_loading_pct: float
    max_trafo_loading_pct: float
    min_voltage_pu: float
    max_voltage_pu: float
    loading_pct_by_step: tuple[float, ...] = ()  # highest line or trafo loading per step
    min_voltage_pu_by_step: tuple[float, ...] = ()
    margin_loading_pct: float = 0.0  # the limits checked are the ratings minus this margin
    margin_voltage_pu: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.violations

    def violating_steps(self) -> NDArray[np.intp]:
        """The steps with at least one violation, ascending."""
        return np.unique(np.array([v.step for v in self.violations], dtype=np.intp))

    def figures(self, prefix: str = "") -> dict[str, float]:
        return {
            f"{prefix}max_line_loading_pct": round(self.max_line_loading_pct, 3),
            f"{prefix}max_trafo_loading_pct": round(self.max_trafo_loading_pct, 3),
            f"{prefix}min_voltage_pu": round(self.min_voltage_pu, 5),
            f"{prefix}max_voltage_pu": round(self.max_voltage_pu, 5),
        }


@runtime_checkable
class GridModel(Protocol):
    """A feeder model that linearises and checks schedules of site powers."""

    def constraints(
        self,
        start: datetime,
        step_s: float,
        steps: int,
        site_kw: NDArray[np.float64] | None,
        margin_pct: float,
    ) -> SiteLinearConstraints | None:
        """Linear grid constraints around ``site_kw`` (``None`` = no EV load) per step."""
        ...

    def check(self, start: datetime, step_s: float, site_kw: NDArray[np.float64]) -> GridCheck:
        """AC power flow of every step with ``site_kw`` (sites × steps) on top of the
        feeder's own load; every violation found."""
        ...


def plan_site_power_kw(plan: Plan, req: PlanRequest) -> NDArray[np.float64]:
    """The plan's average power per site and step (kW, sites × steps)."""
    out = np.zeros((req.n_sites, req.steps))
    np.add.at(out, req.session_site, plan.power_kw * req.plugged_fraction())
    return out


def step_share(req: PlanRequest) -> NDArray[np.float64]:
    """Per step, the part of it the plan covers: below 1 only in a first step that began
    before the plan (a re-plan mid-step counts every session from now), where the largest
    plugged part of any session is what is left of the step (floored at 1e-6)."""
    if req.n_sessions == 0:
        return np.ones(req.steps)
    share = req.plugged_fraction().max(axis=0)
    return np.asarray(np.where(share > 1e-6, share, 1.0), dtype=np.float64)


def grid_site_kw(plan: Plan, req: PlanRequest) -> NDArray[np.float64]:
    """Site power with every session plugged in a step at its planned power (kW, sites ×
    steps): what the grid may carry at some moment of the step. The step mean understates
    it where sessions come or go inside a step, and in the first step of a re-plan made
    mid-step (made 10 min into a 15-min step, a plan charges at 3× its step mean), so the
    grid loop checks and constrains this view."""
    out = np.zeros((req.n_sites, req.steps))
    present = req.plugged_fraction() > 0
    np.add.at(out, req.session_site, np.where(present, plan.power_kw, 0.0))
    return out


def _view_ratio(plan: Plan | None, req: PlanRequest) -> NDArray[np.float64]:
    """Grid view over step mean per (site, step) of ``plan`` (``1 / step share`` where the
    plan draws nothing): the factor that turns rows on the grid view into rows on the
    plan's step means, linearised at ``plan``."""
    fallback = np.broadcast_to(1.0 / step_share(req), (req.n_sites, req.steps))
    if plan is None:
        return np.array(fallback)
    mean, view = plan_site_power_kw(plan, req), grid_site_kw(plan, req)
    ok = np.abs(mean) > 1e-6
    ratio = np.where(ok, view / np.where(ok, mean, 1.0), fallback)
    return np.asarray(np.clip(ratio, 1.0, 1e6), dtype=np.float64)


def _in_plan_terms(
    cons: SiteLinearConstraints | None, ratio: NDArray[np.float64]
) -> SiteLinearConstraints | None:
    """Rows on grid-view site power (:func:`grid_site_kw`) as rows on the plan's step
    means: column ``(s, t)`` scaled by ``ratio[s, t]`` (:func:`_view_ratio`)."""
    if cons is None or bool(np.all(ratio == 1.0)):
        return cons
    m = sp.csr_matrix(cons.matrix, copy=True)
    m.data = m.data * ratio.ravel()[m.indices]
    return SiteLinearConstraints(m, cons.upper, cons.labels)


@dataclass(frozen=True, kw_only=True)
class GridRepair:
    """What the grid repair did to a plan (energy in kWh of planned energy removed).

    ``cost_kwh_by_feeder`` follows the request's feeder order; ``first_step_*`` counts only
    the plan's first step, the one dispatched until the next plan. ``rounds`` counts the
    repair → re-solve rounds; ``scaled`` says the final plan was scaled without a solver.
    """

    rounds: int
    steps_repaired: int
    cost_kwh: float
    cost_kwh_by_feeder: tuple[float, ...]
    first_step_cost_kwh_by_feeder: tuple[float, ...]
    scaled: bool


@dataclass(frozen=True)
class GridPlanResult:
    plan: Plan
    check: GridCheck | None
    iterations: int
    constraints: SiteLinearConstraints | None
    note: str | None
    repair: GridRepair | None = None


def _widen(cons: SiteLinearConstraints | None, g: int, steps: int) -> SiteLinearConstraints | None:
    """Constraints built for the first ``g`` steps, re-indexed for a ``steps``-step plan."""
    if cons is None or g == steps:
        return cons
    m = sp.csr_matrix(cons.matrix)
    cols = (m.indices // g) * steps + (m.indices % g)
    shape = (m.shape[0], (m.shape[1] // g) * steps)
    return SiteLinearConstraints(
        sp.csr_matrix((m.data, cols, m.indptr), shape=shape), cons.upper, cons.labels
    )


def _weights(
    cons: SiteLinearConstraints | None,
    step: int,
    elements: set[str],
    site_kw: NDArray[np.float64],
    steps: int,
) -> NDArray[np.float64]:
    """Per site, how much shrinking its power relieves ``elements`` at ``step``.

    From the linear rows of those elements at that step: ``|a_s|`` where moving the site's
    power toward zero lowers the row (``a_s · sign(P_s) > 0``). All zero if no row names
    them (the caller then shrinks every site that draws power)."""
    n_sites = site_kw.shape[0]
    w = np.zeros(n_sites)
    if cons is None or not cons.labels:
        return w
    prefix = f"t{step} "
    rows = [
        r
        for r, label in enumerate(cons.labels)
        if label.startswith(prefix) and label.split(" ", 2)[1] in elements
    ]
    if not rows:
        return w
    a = sp.csr_matrix(cons.matrix)[rows][:, np.arange(n_sites) * steps + step].toarray()
    helps = a * np.sign(site_kw[:, step])[None, :]
    return np.asarray(np.where(helps > 0, np.abs(a), 0.0).sum(axis=0), dtype=np.float64)


def _ray_point(p: NDArray[np.float64], w: NDArray[np.float64], beta: float) -> NDArray[np.float64]:
    """Site powers of one step at ``beta`` ∈ [0, 2] on the repair ray.

    Up to 1, each weighted site's magnitude shrinks by ``beta × c × w_s / max w`` kW (the
    steepest descent of the violated rows; weights floored at :data:`_WEIGHT_FLOOR` of the
    largest so the ray stays short), with ``c`` such that every weighted site reaches zero
    at 1; from 1 to 2 every site shrinks uniformly to zero."""
    if beta > 1.0:
        return _ray_point(p, w, 1.0) * (2.0 - beta)
    if not (w > 0).any():
        return p.copy()
    m = np.where(w > 0, np.maximum(w / w.max(), _WEIGHT_FLOOR), 0.0)
    c = float(np.max(np.abs(p)[m > 0] / m[m > 0]))
    mag = np.maximum(np.abs(p) - beta * c * m, 0.0)
    return np.asarray(np.sign(p) * mag, dtype=np.float64)


def repair_site_kw(
    grid: GridModel,
    start: datetime,
    step_s: float,
    site_kw: NDArray[np.float64],
    check: GridCheck,
    cons: SiteLinearConstraints | None = None,
    *,
    cons_steps: int | None = None,
    bisection_steps: int = BISECTION_STEPS,
) -> tuple[NDArray[np.float64], GridCheck]:
    """Site powers (sites × steps) that pass ``grid``'s AC check: each violating step of
    ``check`` (the check of ``site_kw``) is pulled toward zero EV power along a ray (the
    sites behind the violated elements first, by their sensitivity in ``cons``; see
    :func:`_ray_point`) as far as AC bisection says is needed. Steps without violation are
    kept. Returns the repaired powers and their check."""
    p = np.array(site_kw, dtype=np.float64)
    steps = cons_steps if cons_steps is not None else p.shape[1]
    bad = check.violating_steps()
    if bad.size == 0:
        return p, check
    masks: dict[int, NDArray[np.float64]] = {}
    for t in bad:
        elements = {v.element for v in check.violations if v.step == t}
        w = _weights(cons, int(t), elements, p, steps)
        if not (w > 0).any():
            w = (np.abs(p[:, t]) > _EPS_KW).astype(np.float64)
        masks[int(t)] = w
    lo = dict.fromkeys(masks, 0.0)  # known to violate
    hi = dict.fromkeys(masks, 2.0)  # zero EV power: passes by the model's definition

    def at(beta: dict[int, float]) -> NDArray[np.float64]:
        out = p.copy()
        for t, b in beta.items():
            out[:, t] = _ray_point(p[:, t], masks[t], b)
        return out

    for _ in range(bisection_steps):
        mid = {t: 0.5 * (lo[t] + hi[t]) for t in masks}
        trial = grid.check(start, step_s, at(mid))
        failed = set(int(t) for t in trial.violating_steps())
        for t in masks:
            if t in failed:
                lo[t] = mid[t]
            else:
                hi[t] = mid[t]
    fixed = at(hi)
    return fixed, grid.check(start, step_s, fixed)


def _cap_rows(
    before: NDArray[np.float64], after: NDArray[np.float64], steps: int
) -> SiteLinearConstraints | None:
    """Rows that keep each repaired (site, step) at or below its repaired magnitude:
    ``P ≤ after`` where it drew power, ``−P ≤ −after`` where it fed in (layout: site-major,
    ``steps`` columns per site)."""
    s_idx, t_idx = np.nonzero(np.abs(after) < np.abs(before) - _EPS_KW)
    if s_idx.size == 0:
        return None
    sign = np.sign(before[s_idx, t_idx])
    n_sites = before.shape[0]
    rows = np.arange(s_idx.size)
    matrix = sp.csr_matrix(
        (sign, (rows, s_idx * steps + t_idx)), shape=(s_idx.size, n_sites * steps)
    )
    upper = np.maximum(sign * after[s_idx, t_idx], 0.0)
    labels = tuple(f"t{t} repair:site{s} cap" for s, t in zip(s_idx, t_idx, strict=True))
    return SiteLinearConstraints(matrix, upper, labels)


def _stack(
    a: SiteLinearConstraints | None, b: SiteLinearConstraints | None
) -> SiteLinearConstraints | None:
    if a is None or b is None:
        return a if b is None else b
    return SiteLinearConstraints(
        sp.vstack([sp.csr_matrix(a.matrix), sp.csr_matrix(b.matrix)]).tocsr(),
        np.concatenate([a.upper, b.upper]),
        a.labels + b.labels,
    )


def _scale_plan(
    plan: Plan, req: PlanRequest, before: NDArray[np.float64], after: NDArray[np.float64]
) -> Plan:
    """``plan`` with each session's power scaled like its site's (first ``after`` steps)."""
    g = after.shape[1]
    safe = np.where(np.abs(before[:, :g]) > _EPS_KW, before[:, :g], 1.0)
    factor = np.ones_like(before)
    factor[:, :g] = np.where(np.abs(before[:, :g]) > _EPS_KW, after / safe, 1.0)
    factor = np.clip(factor, 0.0, 1.0)
    power = plan.power_kw * factor[req.session_site]
    energy = (power * req.plugged_fraction()).sum(axis=1) * req.step_s / 3600.0
    return dataclasses.replace(
        plan,
        power_kw=power,
        energy_kwh=energy,
        shortfall_kwh=np.maximum(req.energy_needed_kwh - energy, 0.0),
        reserve_up_kw=plan.reserve_up_kw * factor,
    )


def _repair_cost(
    req: PlanRequest, before: NDArray[np.float64], after: NDArray[np.float64]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    h = req.step_s / 3600.0
    lost = np.maximum(before.sum(axis=1) - after.sum(axis=1), 0.0) * h  # per site, kWh
    first = np.maximum(before[:, 0] - after[:, 0], 0.0) * h
    n_feeders = int(req.site_feeder.max()) + 1 if req.site_feeder.size else 0
    by = np.bincount(req.site_feeder, weights=lost, minlength=n_feeders)
    first_by = np.bincount(req.site_feeder, weights=first, minlength=n_feeders)
    return tuple(float(x) for x in by), tuple(float(x) for x in first_by)


def successive_plan(
    req: PlanRequest,
    solve: Callable[[PlanRequest], Plan],
    grid: GridModel,
    *,
    guess_kw: NDArray[np.float64] | None = None,
    max_iterations: int = 3,
    margin_pct: float = 2.0,
    cached: SiteLinearConstraints | None = None,
    grid_steps: int | None = None,
    repair_rounds: int = 1,
) -> GridPlanResult:
    """Plan with linearised grid limits, repaired until the AC check passes (module doc).

    Grid limits are linearised and AC-checked for the first ``grid_steps`` steps (default:
    all): later steps are re-planned — re-linearised and re-checked — as they come near,
    long before they are dispatched. ``cached`` constraints (e.g. from an earlier plan in
    the same step) are tried first and replaced as soon as the AC check fails.
    ``margin_pct`` is the linearisation reserve (percentage points below the model's
    limits, which already hold the margin against forecast error).
    """
    g = req.steps if grid_steps is None else max(1, min(grid_steps, req.steps))

    def linearise(
        site_kw: NDArray[np.float64] | None, margin: float, at: Plan | None = None
    ) -> SiteLinearConstraints | None:
        near = None if site_kw is None else site_kw[:, :g]
        made = grid.constraints(req.start, req.step_s, g, near, margin)
        return _in_plan_terms(_widen(made, g, req.steps), _view_ratio(at, req))

    def ac(plan: Plan) -> GridCheck:
        return grid.check(req.start, req.step_s, grid_site_kw(plan, req)[:, :g])

    cons = cached or linearise(guess_kw, margin_pct)
    plan = solve(dataclasses.replace(req, site_constraints=cons))
    check = ac(plan)
    iterations = 1
    while not check.ok and iterations < max_iterations:
        cons = linearise(grid_site_kw(plan, req), margin_pct, plan)
        plan = solve(dataclasses.replace(req, site_constraints=cons))
        check = ac(plan)
        iterations += 1
    if check.ok:
        return GridPlanResult(plan, check, iterations, cons, None)
    # repair → recover (re-solve with the repaired caps) → check, then scale if need be
    unrepaired = plan_site_power_kw(plan, req)
    linear = cons  # what a later plan in the same step may start from (no repair caps)
    found = len(check.violations)
    rounds, repaired_steps, scaled = 0, 0, False
    while not check.ok:
        before = grid_site_kw(plan, req)
        after, _ = repair_site_kw(
            grid, req.start, req.step_s, before[:, :g], check, cons, cons_steps=req.steps
        )
        repaired_steps += int(check.violating_steps().size)
        rounds += 1
        if rounds > repair_rounds:
            plan, scaled = _scale_plan(plan, req, before, after), True
            check = ac(plan)
            break
        rows = _widen(_cap_rows(before[:, :g], after, g), g, req.steps)
        rows = _in_plan_terms(rows, _view_ratio(plan, req))
        cons = _stack(cons, rows)
        plan = solve(dataclasses.replace(req, site_constraints=cons))
        check = ac(plan)
        iterations += 1
    by_feeder, first_by = _repair_cost(req, unrepaired, plan_site_power_kw(plan, req))
    repair = GridRepair(
        rounds=rounds,
        steps_repaired=repaired_steps,
        cost_kwh=float(sum(by_feeder)),
        cost_kwh_by_feeder=by_feeder,
        first_step_cost_kwh_by_feeder=first_by,
        scaled=scaled,
    )
    note = (
        f"grid: {found} AC violations repaired ({rounds} rounds, "
        f"{repair.cost_kwh:.1f} kWh planned energy)"
    )
    if not check.ok:
        note = f"grid: {len(check.violations)} AC violations remain after repair"
    return GridPlanResult(plan, check, iterations, linear, note, repair)
