"""What the core needs from a grid model, and what an AC check reports back.

The core plans with linear grid constraints and checks its plans by AC power flow, but it
imports no grid library: a :class:`GridModel` (implemented in the ``grid`` package, on
pandapower and power-grid-model) is injected. Site powers cross this interface as arrays
``(sites, steps)`` in kW, positive = import, in the order of the topology's sites.

:func:`successive_plan` is the loop of issue "grid awareness": linearise, plan, check by
AC power flow; on violations re-linearise around the plan just made (bounded iterations);
if that still fails, tighten the margin, and if even that fails, say so in the result.
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
    "GridViolation",
    "plan_site_power_kw",
    "successive_plan",
]


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

    @property
    def ok(self) -> bool:
        return not self.violations

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


@dataclass(frozen=True)
class GridPlanResult:
    plan: Plan
    check: GridCheck | None
    iterations: int
    constraints: SiteLinearConstraints | None
    note: str | None


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
) -> GridPlanResult:
    """Plan with linearised grid limits until the AC check passes (see module docstring).

    Grid limits are linearised and AC-checked for the first ``grid_steps`` steps (default:
    all): later steps are re-planned — re-linearised and re-checked — as they come near,
    long before they are dispatched. ``cached`` constraints (e.g. from an earlier plan in
    the same step) are tried first and replaced as soon as the AC check fails.
    """
    g = req.steps if grid_steps is None else max(1, min(grid_steps, req.steps))

    def linearise(
        site_kw: NDArray[np.float64] | None, margin: float
    ) -> SiteLinearConstraints | None:
        near = None if site_kw is None else site_kw[:, :g]
        made = grid.constraints(req.start, req.step_s, g, near, margin)
        return _widen(made, g, req.steps)

    def ac(plan: Plan) -> GridCheck:
        return grid.check(req.start, req.step_s, plan_site_power_kw(plan, req)[:, :g])

    cons = cached or linearise(guess_kw, margin_pct)
    plan = solve(dataclasses.replace(req, site_constraints=cons))
    check = ac(plan)
    iterations = 1
    margin = margin_pct
    while not check.ok and iterations < max_iterations + 2:
        if iterations >= max_iterations:
            margin *= 3.0  # successive linearisation did not converge: tighten
        cons = linearise(plan_site_power_kw(plan, req), margin)
        plan = solve(dataclasses.replace(req, site_constraints=cons))
        check = ac(plan)
        iterations += 1
    note = None
    if not check.ok:
        note = f"grid: {len(check.violations)} AC violations remain after {iterations} plans"
    elif margin != margin_pct:
        note = f"grid: margin tightened to {margin:.1f} % to pass the AC check"
    return GridPlanResult(plan, check, iterations, cons, note)
