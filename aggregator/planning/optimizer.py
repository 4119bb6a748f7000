"""The slow loop: one vectorised cvxpy problem over every session × step.

Formulation (all linear unless ``quadratic_eur_per_kw2 > 0``). Variables exist only for
the steps a session is plugged in: entry ``k`` is (session ``j``, step ``t``) and
``x[k]`` its average power over the step (kW). With ``h`` the step length in hours:

* power range: ``min_power·frac ≤ x ≤ max_power·frac`` (``frac`` = plugged part of step);
* energy: ``Σ_t x·h + shortfall_j ≥ need_j`` and ``Σ_t x·h ≤ need_j``; a V2G session's
  running total stays in ``[-discharge_budget_j, need_j]`` at every step;
* caps per step: site connection and DSO limits on sites, feeders and the fleet, each
  including the up-reserve the site keeps (``site sum + ru_s ≤ cap``), and site export;
* reserve: per site and step ``ru_s ≤ Σ(hi - x)``, ``rd_s ≤ Σ(x - lo)`` and fleet-wide
  ``Σ ru ≥ R_t``, ``Σ rd ≥ R_t`` (soft, priced — a missed reserve is a commercial
  penalty, a breached DSO limit is not an option);
* objective: shortfall (dominant) + worst relative shortfall (fairness) + energy cost
  under the price series + peak + fleet ramp (smoothness) + V2G degradation + missed
  reserve + a tiny earliness tie-break (+ optional quadratic valley filling).

Rebuild or re-solve? The sparsity pattern depends on which sessions are plugged in when,
so a new session set means a new problem; a change of price, limit, reserve, bounds or
energy on the same sessions only changes parameter values. The planner caches the last
problem by its structure key and re-solves it with new :class:`cvxpy.Parameter` values
(DPP) when the key matches — measured in ``benchmarks/planner.py`` (see RESULTS.md).
HiGHS re-solves use ``warm_start=False``: cvxpy's default warm start made HiGHS re-solves
~80× slower on this problem.

Any failure (infeasible, time-out, solver error) falls back to :func:`proportional_plan`,
and the fast loop clips to every limit regardless, so a DSO limit holds either way.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import cvxpy as cp
import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from aggregator.planning.request import Plan, PlanRequest


def _bincount_f(
    x: NDArray[np.intp], weights: NDArray[np.float64] | None = None, minlength: int = 0
) -> NDArray[np.float64]:
    return np.bincount(x, weights=weights, minlength=minlength).astype(np.float64, copy=False)


__all__ = ["Planner", "proportional_plan"]

_NO_LIMIT_KW = 1e7  # caps above this are "no limit"; cvxpy needs finite data
_OK = {cp.OPTIMAL, cp.OPTIMAL_INACCURATE}


@dataclass(frozen=True)
class _Index:
    """Flattened (session, step) entries of a request."""

    sess_of: NDArray[np.intp]
    step_of: NDArray[np.intp]
    frac: NDArray[np.float64]
    offsets: NDArray[np.intp]
    lengths: NDArray[np.intp]

    @property
    def size(self) -> int:
        return int(self.sess_of.shape[0])


def _index(req: PlanRequest) -> _Index:
    lengths = (req.last_step - req.first_step).astype(np.intp)
    k = int(lengths.sum())
    n = req.n_sessions
    sess_of = np.repeat(np.arange(n, dtype=np.intp), lengths)
    offsets = np.zeros(n, dtype=np.intp)
    if n:
        offsets[1:] = np.cumsum(lengths)[:-1]
    step_of = req.first_step[sess_of] + (np.arange(k, dtype=np.intp) - offsets[sess_of])
    frac = np.ones(k, dtype=np.float64)
    if n:
        frac[offsets] = req.first_frac
        last = offsets + lengths - 1
        frac[last] = np.minimum(frac[last], req.last_frac)
    return _Index(sess_of, step_of, frac, offsets, lengths)


def _finite(a: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.clip(
        np.nan_to_num(a, nan=-_NO_LIMIT_KW, posinf=_NO_LIMIT_KW), -_NO_LIMIT_KW, _NO_LIMIT_KW
    )


def _structure_key(req: PlanRequest) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in (req.session_site, req.first_step, req.last_step, req.site_feeder):
        h.update(np.ascontiguousarray(a).tobytes())
        h.update(b"|")
    h.update((req.min_power_kw < 0).tobytes())
    has_reserve = bool(np.any(req.reserve_kw > 0))
    if req.site_constraints is not None:
        m = sp.csr_matrix(req.site_constraints.matrix)
        for part in (m.indptr, m.indices, m.data):
            h.update(np.ascontiguousarray(part).tobytes())
    h.update(
        repr(
            (
                req.steps,
                req.n_feeders,
                has_reserve,
                req.price_eur_per_mwh is not None,
                req.weights,
                req.step_s,
            )
        ).encode()
    )
    return h.hexdigest()


class _Problem:
    """A built cvxpy problem plus the parameters to refresh and the variables to read."""

    def __init__(self, req: PlanRequest, idx: _Index) -> None:
        n, t, s_n, f_n = req.n_sessions, req.steps, req.n_sites, req.n_feeders
        k = idx.size
        w = req.weights
        h = req.step_h
        self.idx = idx
        cols = np.arange(k)
        site_row = req.session_site[idx.sess_of] * t + idx.step_of
        m_site = sp.csr_matrix((np.ones(k), (site_row, cols)), shape=(s_n * t, k))
        # site sums are variables of their own: every x entry then appears in one row only,
        # and feeder/fleet sums are built from the (few) site sums, not from x again.
        site_t = np.tile(np.arange(t), s_n)
        b_feeder = sp.csr_matrix(
            (np.ones(s_n * t), (np.repeat(req.site_feeder, t) * t + site_t, np.arange(s_n * t))),
            shape=(f_n * t, s_n * t),
        )
        b_step = sp.csr_matrix((np.ones(s_n * t), (site_t, np.arange(s_n * t))), shape=(t, s_n * t))
        a_energy = sp.csr_matrix((np.full(k, h), (idx.sess_of, cols)), shape=(n, k))

        self.lo = cp.Parameter(k, name="lo_kw")
        self.hi = cp.Parameter(k, name="hi_kw")
        self.need = cp.Parameter(n, nonneg=True, name="need_kwh")
        self.site_cap = cp.Parameter(s_n * t, name="site_cap_kw")
        self.site_export = cp.Parameter(s_n * t, name="site_export_kw")
        self.feeder_cap = cp.Parameter(f_n * t, name="feeder_cap_kw")
        self.fleet_cap = cp.Parameter(t, name="fleet_cap_kw")
        self.reserve = cp.Parameter(t, nonneg=True, name="reserve_kw")
        self.price = (
            cp.Parameter(t, name="price_eur_per_mwh") if req.price_eur_per_mwh is not None else None
        )

        x = cp.Variable(k, name="power_kw")
        short = cp.Variable(n, nonneg=True, name="shortfall_kwh")
        site_sum = cp.Variable(s_n * t, name="site_power_kw")
        self.x, self.short = x, short
        fleet = b_step @ site_sum
        cons: list[Any] = [x >= self.lo, x <= self.hi, site_sum == m_site @ x]
        energy = a_energy @ x
        cons += [energy + short >= self.need, energy <= self.need]
        cost: Any = w.shortfall_eur_per_kwh * cp.sum(short)

        v2g = np.flatnonzero(req.min_power_kw < 0)
        self.budget: cp.Parameter | None = None
        if v2g.size:
            self.budget = cp.Parameter(v2g.size, nonneg=True, name="discharge_budget_kwh")
            rows: list[NDArray[np.intp]] = []
            cols_v: list[NDArray[np.intp]] = []
            n_rows = 0
            for j in v2g:  # per V2G session at build time; never on the fast path
                tri_r, tri_c = np.tril_indices(int(idx.lengths[j]))
                rows.append(tri_r + n_rows)
                cols_v.append(tri_c + int(idx.offsets[j]))
                n_rows += int(idx.lengths[j])
            rr, cc = np.concatenate(rows), np.concatenate(cols_v)
            cum = sp.csr_matrix((np.full(rr.size, h), (rr, cc)), shape=(n_rows, k))
            owner = np.repeat(np.arange(v2g.size), idx.lengths[v2g])
            need_rows = self.need[v2g[owner]]
            cons += [cum @ x <= need_rows, cum @ x >= -self.budget[owner]]
            v2g_entries = np.flatnonzero(np.isin(idx.sess_of, v2g))
            dch = cp.Variable(v2g_entries.size, nonneg=True, name="discharge_kw")
            cons.append(dch >= -x[v2g_entries])
            cost += w.degradation_eur_per_kwh * h * cp.sum(dch)

        if w.fairness_eur > 0 and n:
            worst = cp.Variable(nonneg=True, name="worst_relative_shortfall")
            cons.append(short <= cp.multiply(self.need, worst) + 1e-9)
            cost += w.fairness_eur * worst

        self.ru: cp.Variable | None = None
        self.rd: cp.Variable | None = None
        if np.any(req.reserve_kw > 0):
            ru = cp.Variable(s_n * t, nonneg=True, name="reserve_up_kw")
            rd = cp.Variable(s_n * t, nonneg=True, name="reserve_down_kw")
            miss = cp.Variable((2, t), nonneg=True, name="reserve_missed_kw")
            cons += [
                site_sum + ru <= self.site_cap,
                site_sum - rd >= -self.site_export,
                b_feeder @ (site_sum + ru) <= self.feeder_cap,
                fleet + b_step @ ru <= self.fleet_cap,
                ru <= m_site @ self.hi - site_sum,
                rd <= site_sum - m_site @ self.lo,
                b_step @ ru + miss[0] >= self.reserve,
                b_step @ rd + miss[1] >= self.reserve,
            ]
            cost += w.reserve_shortfall_eur_per_kw * cp.sum(miss)
            self.ru, self.rd = ru, rd
        else:
            cons += [
                site_sum <= self.site_cap,
                site_sum >= -self.site_export,
                b_feeder @ site_sum <= self.feeder_cap,
                fleet <= self.fleet_cap,
            ]
        self.grid_upper: cp.Parameter | None = None
        if req.site_constraints is not None and req.site_constraints.matrix.shape[0]:
            a = sp.csr_matrix(req.site_constraints.matrix)
            self.grid_upper = cp.Parameter(a.shape[0], name="site_constraint_upper")
            grid_expr = a @ site_sum
            if self.ru is not None and self.rd is not None:
                # worst activation inside the reserve band, row by row
                grid_expr = grid_expr + a.maximum(0) @ self.ru + (-a).maximum(0) @ self.rd
            cons.append(grid_expr <= self.grid_upper)
        if self.price is not None:
            cost += (h / 1000.0) * (self.price @ fleet)
        if w.peak_eur_per_kw > 0:
            peak = cp.Variable(name="peak_kw")
            cons.append(fleet <= peak)
            cost += w.peak_eur_per_kw * peak
        if w.ramp_eur_per_kw > 0 and t > 1:
            ramp = cp.Variable(t - 1, nonneg=True, name="ramp_kw")
            cons += [cp.diff(fleet) <= ramp, -cp.diff(fleet) <= ramp]
            cost += w.ramp_eur_per_kw * cp.sum(ramp)
        if w.earliness_eur_per_kwh_step > 0:
            cost += (w.earliness_eur_per_kwh_step * h * idx.step_of.astype(np.float64)) @ x
        if w.quadratic_eur_per_kw2 > 0:
            cost += w.quadratic_eur_per_kw2 * cp.sum_squares(fleet) / max(t, 1)
        self.problem = cp.Problem(cp.Minimize(cost), cons)

    def set_values(self, req: PlanRequest) -> None:
        idx = self.idx
        self.lo.value = req.min_power_kw[idx.sess_of] * idx.frac
        self.hi.value = req.max_power_kw[idx.sess_of] * idx.frac
        self.need.value = np.maximum(req.energy_needed_kwh, 0.0)
        self.site_cap.value = _finite(req.caps.site_kw).ravel()
        self.site_export.value = _finite(req.caps.site_export_kw).ravel()
        self.feeder_cap.value = _finite(req.caps.feeder_kw).ravel()
        self.fleet_cap.value = _finite(req.caps.fleet_kw)
        self.reserve.value = np.maximum(req.reserve_kw, 0.0)
        if self.price is not None and req.price_eur_per_mwh is not None:
            self.price.value = req.price_eur_per_mwh
        if self.grid_upper is not None and req.site_constraints is not None:
            self.grid_upper.value = req.site_constraints.upper
        if self.budget is not None:
            v2g = np.flatnonzero(req.min_power_kw < 0)
            self.budget.value = np.maximum(req.discharge_budget_kwh[v2g], 0.0)


class Planner:
    """Plans with cvxpy; caches the last problem so a same-structure re-plan only re-solves.

    ``solver`` is any cvxpy solver name (default HiGHS: the fastest reliable LP solver
    measured here; Clarabel is the cross-check and the QP choice). ``time_limit_s`` bounds
    one solve; past it the plan falls back.
    """

    def __init__(
        self, solver: str = "HIGHS", *, time_limit_s: float = 60.0, reuse: bool = True
    ) -> None:
        self.solver = solver
        self.time_limit_s = time_limit_s
        self.reuse = reuse
        self._key: str | None = None
        self._problem: _Problem | None = None

    def plan(self, req: PlanRequest) -> Plan:
        issues = req.validate()
        if issues:
            # never raise in the loop: an empty (all-zero) base schedule is safe, and the
            # reason names every problem for the log
            return _empty_plan(req, "invalid request: " + "; ".join(map(str, issues))[:500])
        if req.n_sessions == 0:
            return _empty_plan(req, None)
        t0 = time.perf_counter()
        key = _structure_key(req)
        rebuilt = not (self.reuse and key == self._key and self._problem is not None)
        if rebuilt:
            self._problem = _Problem(req, _index(req))
            self._key = key
        prob = self._problem
        assert prob is not None
        if not rebuilt:
            # same structure, but the plugged-in fractions of the first and last steps move
            # with every re-plan inside a step: they are values, refresh them
            prob.idx = _index(req)
        prob.set_values(req)
        build_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        try:
            prob.problem.solve(solver=self.solver, warm_start=False, **self._opts())
            status = str(prob.problem.status)
        except (cp.error.SolverError, ValueError, ArithmeticError) as exc:
            status = f"solver error: {type(exc).__name__}: {exc}"[:200]
        solve_s = time.perf_counter() - t1
        if status not in _OK or prob.x.value is None:
            self._key = None  # do not trust a problem that just failed
            fb = proportional_plan(req, f"{self.solver}: {status}")
            return _with_times(fb, build_s, solve_s, rebuilt, self.solver)
        return self._result(req, prob, status, build_s, solve_s, rebuilt)

    def _opts(self) -> dict[str, Any]:
        s = self.solver.upper()
        if s == "HIGHS":
            return {"time_limit": self.time_limit_s}
        if s == "CLARABEL":
            return {"time_limit": self.time_limit_s}
        return {}

    def _result(
        self,
        req: PlanRequest,
        prob: _Problem,
        status: str,
        build_s: float,
        solve_s: float,
        rebuilt: bool,
    ) -> Plan:
        idx = prob.idx
        x = np.asarray(prob.x.value, dtype=np.float64)
        x = np.clip(x, prob.lo.value, prob.hi.value)  # solver tolerance, never outside bounds
        power = np.zeros((req.n_sessions, req.steps))
        power[idx.sess_of, idx.step_of] = x / idx.frac
        energy = _bincount_f(idx.sess_of, weights=x * req.step_h, minlength=req.n_sessions)
        short = np.maximum(req.energy_needed_kwh - energy, 0.0)
        shape = (req.n_sites, req.steps)
        ru = (
            np.zeros(shape)
            if prob.ru is None
            else np.maximum(np.asarray(prob.ru.value), 0).reshape(shape)
        )
        rd = (
            np.zeros(shape)
            if prob.rd is None
            else np.maximum(np.asarray(prob.rd.value), 0).reshape(shape)
        )
        return Plan(
            req.start,
            req.step_s,
            power,
            energy,
            short,
            ru,
            rd,
            float(prob.problem.value),
            status,
            self.solver,
            build_s,
            solve_s,
            rebuilt,
        )


def _empty_plan(req: PlanRequest, fallback: str | None) -> Plan:
    """An all-zero schedule (no sessions, or a request that cannot be planned)."""
    z = np.zeros((req.n_sessions, max(req.steps, 0)))
    zs = np.zeros((req.n_sites, max(req.steps, 0)))
    return Plan(
        req.start,
        req.step_s,
        z,
        np.zeros(req.n_sessions),
        np.zeros(req.n_sessions),
        zs,
        zs.copy(),
        0.0,
        "empty",
        "none",
        0.0,
        0.0,
        False,
        fallback,
    )


def _with_times(plan: Plan, build_s: float, solve_s: float, rebuilt: bool, solver: str) -> Plan:
    return Plan(
        plan.start,
        plan.step_s,
        plan.power_kw,
        plan.energy_kwh,
        plan.shortfall_kwh,
        plan.reserve_up_kw,
        plan.reserve_down_kw,
        plan.objective,
        plan.status,
        solver,
        build_s,
        solve_s,
        rebuilt,
        plan.fallback,
    )


def proportional_plan(req: PlanRequest, reason: str) -> Plan:
    """The safe fallback: charge as soon as possible, scaled down to every cap, step by step.

    Each session takes its full power until its energy is met; then every site, feeder and
    the fleet scale their sessions proportionally so no cap is exceeded (caps below zero
    cannot be met by charging alone; the dispatcher handles those with V2G at run time).
    """
    idx = _index(req)
    h = req.step_h
    hi = req.max_power_kw[idx.sess_of] * idx.frac
    t = req.steps
    x = hi.copy()
    site_row = req.session_site[idx.sess_of] * t + idx.step_of
    feeder_row = req.site_feeder[req.session_site[idx.sess_of]] * t + idx.step_of
    for rows, caps in (
        (site_row, req.caps.site_kw.ravel()),
        (feeder_row, req.caps.feeder_kw.ravel()),
        (idx.step_of, req.caps.fleet_kw),
    ):
        sums = _bincount_f(rows, weights=x, minlength=caps.size)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            alpha = np.where(sums > caps, np.clip(caps / sums, 0.0, 1.0), 1.0)
        x *= alpha[rows]
    # energy: cumulative per session, stop when the need is met (ASAP order)
    excl = np.cumsum(x * h) - x * h
    before = excl - excl[idx.offsets[idx.sess_of]] if idx.size else excl
    x = np.clip(req.energy_needed_kwh[idx.sess_of] - before, 0.0, x * h) / h
    power = np.zeros((req.n_sessions, t))
    power[idx.sess_of, idx.step_of] = x / idx.frac
    energy = _bincount_f(idx.sess_of, weights=x * h, minlength=req.n_sessions)
    zs = np.zeros((req.n_sites, t))
    return Plan(
        req.start,
        req.step_s,
        power,
        energy,
        np.maximum(req.energy_needed_kwh - energy, 0.0),
        zs,
        zs.copy(),
        float("nan"),
        "fallback",
        "proportional",
        0.0,
        0.0,
        True,
        reason,
    )
