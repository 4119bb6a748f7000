"""The slow loop's LP as a vectorised cvxpy problem: the baseline and the cross-check.

This is the original formulation (before :mod:`aggregator.planning.lp`), kept runnable:
``Planner(backend="cvxpy")`` and ``benchmarks/planner.py --baseline`` solve with it, the
tests compare the matrix model's objective against it, and any cvxpy solver (e.g. a QP
solver for ``quadratic_eur_per_kw2 > 0``) can be used through it.

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

The sparsity pattern depends on which sessions are plugged in when, so a new session set
means a new problem; a change of price, limit, reserve, bounds or energy on the same
sessions only changes :class:`cvxpy.Parameter` values (DPP), keyed by
:func:`structure_key`.
"""

from __future__ import annotations

import hashlib
from typing import Any

import cvxpy as cp
import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from aggregator.planning.fallback import Index
from aggregator.planning.request import PlanRequest

__all__ = ["CvxpyModel", "structure_key"]

_NO_LIMIT_KW = 1e7  # caps above this are "no limit"; cvxpy needs finite data


def _finite(a: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.clip(
        np.nan_to_num(a, nan=-_NO_LIMIT_KW, posinf=_NO_LIMIT_KW), -_NO_LIMIT_KW, _NO_LIMIT_KW
    )


def structure_key(req: PlanRequest) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in (req.session_site, req.first_step, req.last_step, req.site_feeder):
        h.update(np.ascontiguousarray(a).tobytes())
        h.update(b"|")
    h.update((req.min_power_kw < 0).tobytes())
    has_reserve = req.has_reserve
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


class CvxpyModel:
    """A built cvxpy problem plus the parameters to refresh and the variables to read."""

    def __init__(self, req: PlanRequest, idx: Index) -> None:
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
        self.reserve = cp.Parameter(t, nonneg=True, name="reserve_up_kw")
        self.reserve_down = cp.Parameter(t, nonneg=True, name="reserve_down_kw")
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
        if req.has_reserve:
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
                b_step @ rd + miss[1] >= self.reserve_down,
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
        self.reserve.value, self.reserve_down.value = req.reserve_targets_kw()
        if self.price is not None and req.price_eur_per_mwh is not None:
            self.price.value = req.price_eur_per_mwh
        if self.grid_upper is not None and req.site_constraints is not None:
            self.grid_upper.value = req.site_constraints.upper
        if self.budget is not None:
            v2g = np.flatnonzero(req.min_power_kw < 0)
            self.budget.value = np.maximum(req.discharge_budget_kwh[v2g], 0.0)
