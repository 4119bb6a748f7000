"""The slow loop's planner: one LP over every session × step, solved off the fast path.

:class:`Planner` turns a :class:`~aggregator.planning.request.PlanRequest` into a
:class:`~aggregator.planning.request.Plan`. By default it builds the problem in matrix
form (:mod:`aggregator.planning.lp`) and solves it with HiGHS through highspy
(:mod:`aggregator.planning.solvers`); ``solver="CLARABEL"`` solves the same matrix with
Clarabel (the cross-check, and the choice for the quadratic term). ``backend="cvxpy"``
(or any other solver name) uses the original cvxpy formulation
(:mod:`aggregator.planning.model`), kept as the baseline.

The formulation (both backends, same optimum): power range per plugged-in step; energy
``Σ h·x ≤ need`` with a priced shortfall; a V2G session's running total within
``[-discharge_budget, need]``; site (import and export), feeder and fleet caps per step,
including the up-reserve each site keeps; the reserve per site and step within the
sessions' headroom and fleet-wide ``Σ ru ≥ R``, ``Σ rd ≥ R`` (soft, priced); optional
linear grid rows on site powers (with a reserve, for the worst activation in the band).
Objective: shortfall (dominant) + fairness + energy cost + peak + ramp + V2G
degradation + missed reserve + earliness tie-break (+ optional quadratic valley filling).

Re-use: the matrix depends only on which sessions are plugged in when; prices, limits,
reserve, bounds and needs are bounds and costs. A re-plan whose matrix equals the last
optimal one's (checked, not assumed) changes those in place and continues HiGHS from its
basis (``Plan.rebuilt`` is then ``False``). Any failure (infeasible, time-out, solver
error) falls back to :func:`~aggregator.planning.fallback.proportional_plan`, and the
fast loop clips to every limit regardless, so a DSO limit holds either way. Nothing is
printed on stdout.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aggregator.planning.fallback import (
    Index,
    bincount_f,
    empty_plan,
    index,
    proportional_plan,
    with_times,
)
from aggregator.planning.lp import LpModel, build_lp
from aggregator.planning.request import Plan, PlanRequest
from aggregator.planning.rounding import RoundingStats, round_plan
from aggregator.planning.solvers import HighsSolver, Solved, solve_clarabel

__all__ = ["Planner", "proportional_plan"]

_MATRIX_SOLVERS = ("HIGHS", "CLARABEL")


class Planner:
    """Plans a request; re-plans of the same structure hot-start from the last basis.

    ``solver``: ``"HIGHS"`` (default: the fastest reliable LP solver measured here) or
    ``"CLARABEL"`` (cross-check, QP) on the matrix model; any other cvxpy solver name
    runs the cvxpy baseline. ``time_limit_s`` bounds one solve; past it the plan falls
    back. ``backend`` (``"matrix"`` or ``"cvxpy"``) and ``highs_algorithm`` (``"auto"``:
    interior point for large plans with a reserve, dual simplex otherwise; ``"simplex"``,
    ``"ipm"``, ``"pdlp"``) are for benchmarks and cross-checks.
    """

    def __init__(
        self,
        solver: str = "HIGHS",
        *,
        time_limit_s: float = 60.0,
        reuse: bool = True,
        backend: str = "matrix",
        highs_algorithm: str = "auto",
    ) -> None:
        if backend not in ("matrix", "cvxpy"):
            raise ValueError("backend must be 'matrix' or 'cvxpy'")
        self.solver = solver
        self.time_limit_s = time_limit_s
        self.reuse = reuse
        self.backend = backend if solver.upper() in _MATRIX_SOLVERS else "cvxpy"
        self._key: str | None = None
        self._highs = HighsSolver(time_limit_s=time_limit_s, algorithm=highs_algorithm)
        self._cvxpy: Any = None  # CvxpyModel of the last structure (cvxpy backend)
        self.last_rounding: RoundingStats | None = None

    def plan(self, req: PlanRequest, *, min_charge_kw: NDArray[np.float64] | None = None) -> Plan:
        """The plan for ``req``; with ``min_charge_kw`` (per session, kW) made
        semi-continuous after the LP (:func:`~aggregator.planning.rounding.round_plan`:
        every charging value 0 or at least the minimum, within every cap; the stats of
        the last rounding are in :attr:`last_rounding`)."""
        plan = self._plan(req)
        if min_charge_kw is None or plan.power_kw.shape != (req.n_sessions, req.steps):
            return plan
        rounded, self.last_rounding = round_plan(req, plan, min_charge_kw)
        return rounded

    def _plan(self, req: PlanRequest) -> Plan:
        issues = req.validate()
        if issues:
            # never raise in the loop: an empty (all-zero) base schedule is safe, and the
            # reason names every problem for the log
            return empty_plan(req, "invalid request: " + "; ".join(map(str, issues))[:500])
        if req.n_sessions == 0:
            return empty_plan(req, None)
        if self.backend == "cvxpy":
            return self._plan_cvxpy(req)
        t0 = time.perf_counter()
        idx = index(req)
        model = build_lp(req, idx)
        build_s = time.perf_counter() - t0
        rebuilt = True
        try:
            if self.solver.upper() == "CLARABEL":
                solved = solve_clarabel(model, time_limit_s=self.time_limit_s)
            else:
                # the solver hot-starts only if the matrix equals the last optimal one's
                solved = self._highs.solve(model, hot_start=self.reuse)
                rebuilt = not self._highs.hot_started
        except (ValueError, ArithmeticError, RuntimeError) as exc:
            solved = Solved(f"solver error: {type(exc).__name__}: {exc}"[:200], None, 0.0, 0.0)
        if solved.v is None:
            fb = proportional_plan(req, f"{self.solver}: {solved.status}")
            return with_times(fb, build_s, solved.solve_s, rebuilt, self.solver)
        return _matrix_result(req, idx, model, solved, self.solver, build_s, rebuilt)

    def _plan_cvxpy(self, req: PlanRequest) -> Plan:
        import cvxpy as cp

        from aggregator.planning.model import CvxpyModel, structure_key

        t0 = time.perf_counter()
        key = structure_key(req)
        rebuilt = not (self.reuse and key == self._key and self._cvxpy is not None)
        if rebuilt:
            self._cvxpy = CvxpyModel(req, index(req))
            self._key = key
        prob = self._cvxpy
        if not rebuilt:
            prob.idx = index(req)  # the plugged-in fractions move with every re-plan
        prob.set_values(req)
        build_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        opts: dict[str, Any] = {}
        if self.solver.upper() in _MATRIX_SOLVERS:
            opts["time_limit"] = self.time_limit_s
        try:
            # warm_start=False: cvxpy's warm start made HiGHS re-solves ~80× slower here
            prob.problem.solve(solver=self.solver, warm_start=False, **opts)
            status = str(prob.problem.status)
        except (cp.error.SolverError, ValueError, ArithmeticError) as exc:
            status = f"solver error: {type(exc).__name__}: {exc}"[:200]
        solve_s = time.perf_counter() - t1
        if status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or prob.x.value is None:
            self._key = None
            fb = proportional_plan(req, f"{self.solver}: {status}")
            return with_times(fb, build_s, solve_s, rebuilt, self.solver)
        x = np.clip(np.asarray(prob.x.value, dtype=np.float64), prob.lo.value, prob.hi.value)
        ru = None if prob.ru is None else np.asarray(prob.ru.value, dtype=np.float64)
        rd = None if prob.rd is None else np.asarray(prob.rd.value, dtype=np.float64)
        return _plan_of(
            req, prob.idx, x, ru, rd, float(prob.problem.value), status, self.solver,
            build_s, solve_s, rebuilt,
        )  # fmt: skip

    @property
    def last_problem(self) -> Any:
        """The cvxpy problem of the last cvxpy-backend plan (benchmarks read its times)."""
        return None if self._cvxpy is None else self._cvxpy.problem


def _matrix_result(
    req: PlanRequest,
    idx: Index,
    model: LpModel,
    solved: Solved,
    solver: str,
    build_s: float,
    rebuilt: bool,
) -> Plan:
    assert solved.v is not None
    lay = model.layout
    v = solved.v
    x = np.clip(v[lay.x], model.col_lo[lay.x], model.col_hi[lay.x])
    ru = rd = None
    if lay.ru is not None and lay.rd is not None:  # only occupied site-steps have columns
        ru = np.zeros(req.n_sites * req.steps)
        rd = np.zeros(req.n_sites * req.steps)
        ru[lay.site_steps], rd[lay.site_steps] = v[lay.ru], v[lay.rd]
    return _plan_of(
        req, idx, x, ru, rd, solved.objective, solved.status, solver, build_s, solved.solve_s,
        rebuilt,
    )  # fmt: skip


def _plan_of(
    req: PlanRequest,
    idx: Index,
    x: np.ndarray[Any, np.dtype[np.float64]],
    ru: np.ndarray[Any, np.dtype[np.float64]] | None,
    rd: np.ndarray[Any, np.dtype[np.float64]] | None,
    objective: float,
    status: str,
    solver: str,
    build_s: float,
    solve_s: float,
    rebuilt: bool,
) -> Plan:
    """A plan from the entries' powers (kW averaged over each step) and site reserves."""
    power = np.zeros((req.n_sessions, req.steps))
    power[idx.sess_of, idx.step_of] = x / idx.frac
    energy = bincount_f(idx.sess_of, weights=x * req.step_h, minlength=req.n_sessions)
    short = np.maximum(req.energy_needed_kwh - energy, 0.0)
    shape = (req.n_sites, req.steps)
    up = np.zeros(shape) if ru is None else np.maximum(ru, 0.0).reshape(shape)
    dn = np.zeros(shape) if rd is None else np.maximum(rd, 0.0).reshape(shape)
    return Plan(
        req.start, req.step_s, power, energy, short, up, dn, objective, status, solver,
        build_s, solve_s, rebuilt,
    )  # fmt: skip
