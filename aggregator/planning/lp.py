"""The slow loop's LP in matrix form, built with scipy.sparse and solved by HiGHS (highspy).

Why not cvxpy: at 10 000 sessions × 96 steps cvxpy's canonicalisation and its generic
constraint rows (a bound ``x ≥ lo`` becomes a matrix row) cost more than the solve.
Here the model is written once as ``row_lo ≤ A v ≤ row_hi``, ``col_lo ≤ v ≤ col_hi``,
``min cᵀv + ½ vᵀQv + offset`` with bounds as column bounds, and handed to HiGHS as is.

Columns (``v``), in this order (:class:`Layout` holds the offsets):

* ``x`` (k): power of entry (session ``j``, step ``t``), bounds ``[min·frac, max·frac]``;
* ``site`` (one per *occupied* site-step: a session is plugged in there; an empty
  site-step has power and reserve 0 and no columns — the demo's LP shrinks from 13 k to
  ~4 k rows; without a reserve or grid rows, only those whose cap can bind, see
  :func:`_binding_site_steps`), ``feeder`` (F·T), ``fleet`` (T): sums of ``x`` per site,
  feeder and step, each defined by one equality row. Without a reserve the caps are their
  column bounds. Every ``x`` is then in two rows only (its session's energy row and its
  site-step or feeder-step row): the flow EV → site/step → feeder/step → fleet/step;
* with a reserve: ``ru``, ``rd`` (per occupied site-step, ≥ 0) and ``miss`` (2·T, ≥ 0, priced);
* V2G: a running energy ``c`` per V2G entry (bounds ``[-budget_j, need_j]``, one row
  ``c_e - c_{e-1} - h·x_e = 0``: linear in the session length, not quadratic) and a
  discharge ``dch ≥ -x`` (priced for degradation);
* ``worst`` (fairness), ``peak``, ``ramp`` (T-1) when their weights are > 0;
* with the energy-reservoir rule (``req.reservoir_s``): ``u``, ``d`` per entry of a step
  with an up/down target and ``r`` per entry of their sessions, last
  (:mod:`aggregator.planning.reservoir`: the reserve is sustainable for that long).

* ``short`` (n, in ``[0, need]``): the priced shortfall of each session, in one energy
  row per session ``Σ h·x + short = need``. (Eliminating it — its
  price moved onto ``x`` — is exact but made HiGHS's dual simplex take 72 k instead of
  48 k iterations at 10 000 × 96, so it stays.)

The objective has every term of the cvxpy formulation (:mod:`aggregator.planning.model`,
kept as the baseline and the cross-check): shortfall, fairness, energy cost, peak, ramp,
degradation, missed reserve, earliness, optional quadratic valley filling. With a
reserve the two cvxpy rows ``site + ru ≤ cap`` and ``ru ≤ Σ hi - site`` share their left
side and become one row bounded by the smaller right side (likewise for ``rd``).

Grid rows (``site_constraints``) are *lazy* rows of the model: dense in the site
columns (every site moves every line's loading a little) and rarely binding, so the
HiGHS solver adds only the violated ones and re-solves from its basis until none is
violated (constraint generation; same optimum, measured ~?× faster on the demo).

Invariants: the matrix depends only on the request's structure, ``need`` (fairness
rows) and which site caps can bind; every other input is a bound or a cost (a re-plan
whose matrix differs is solved afresh, never hot-started). Caps at or above ``NO_LIMIT_KW`` are no
limit (infinite bound).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from aggregator.planning.fallback import Index
from aggregator.planning.request import PlanRequest
from aggregator.planning.reservoir import ReservoirLayout, add_reservoir_rows, reservoir_layout

__all__ = ["NO_LIMIT_KW", "Layout", "LpModel", "build_lp"]

NO_LIMIT_KW = 1e7  # caps at or above this are "no limit"


def cap_bound(a: NDArray[np.float64]) -> NDArray[np.float64]:
    """A cap as a bound: NaN is no capacity at all (as in the cvxpy model), ≥ 1e7 none."""
    out = np.nan_to_num(np.asarray(a, dtype=np.float64), nan=-NO_LIMIT_KW, posinf=np.inf)
    return np.where(out >= NO_LIMIT_KW, np.inf, out)


@dataclass(frozen=True)
class Layout:
    """Column offsets of each block (``stop`` = one past the last column).

    ``site_steps`` are the (site × steps + step) indices that have columns: the site-steps
    with a session plugged in (and any whose caps zero power would break, so that an
    impossible cap stays infeasible). Elsewhere site power and reserve are 0.
    """

    site_steps: NDArray[np.intp]
    x: slice
    short: slice
    site: slice
    feeder: slice
    fleet: slice
    ru: slice | None
    rd: slice | None
    miss: slice | None
    cum: slice | None
    dch: slice | None
    worst: int | None
    peak: int | None
    ramp: slice | None
    n_cols: int
    reservoir: ReservoirLayout | None = None  # energy-reservoir columns (rule on)


@dataclass(frozen=True)
class LpModel:
    """``min cost·v + ½ Σ hess_diag·v² + offset`` s.t. ``row_lo ≤ a v ≤ row_hi``,
    ``lazy_a v ≤ lazy_hi``, ``col_lo ≤ v ≤ col_hi``. ``hess_diag`` is ``None`` for a pure
    LP. The lazy rows (the grid's linearised limits) are part of the problem: a solver
    either adds them all or generates them (adds the violated ones and re-solves until
    none is violated), which gives the same optimum."""

    a: sp.csc_matrix
    cost: NDArray[np.float64]
    col_lo: NDArray[np.float64]
    col_hi: NDArray[np.float64]
    row_lo: NDArray[np.float64]
    row_hi: NDArray[np.float64]
    offset: float
    hess_diag: NDArray[np.float64] | None
    layout: Layout
    lazy_a: sp.csr_matrix | None = None
    lazy_hi: NDArray[np.float64] | None = None

    def with_all_rows(self) -> LpModel:
        """The same model with the lazy rows as ordinary rows."""
        if self.lazy_a is None or self.lazy_hi is None:
            return self
        return dataclasses.replace(
            self,
            a=sp.vstack([self.a, self.lazy_a], format="csc"),
            row_lo=np.concatenate([self.row_lo, np.full(self.lazy_hi.size, -np.inf)]),
            row_hi=np.concatenate([self.row_hi, self.lazy_hi]),
            lazy_a=None,
            lazy_hi=None,
        )


class _Rows:
    """Accumulates COO triplets and row bounds block by block."""

    def __init__(self) -> None:
        self.r: list[NDArray[np.intp]] = []
        self.c: list[NDArray[np.intp]] = []
        self.v: list[NDArray[np.float64]] = []
        self.lo: list[NDArray[np.float64]] = []
        self.hi: list[NDArray[np.float64]] = []
        self.n = 0

    def add(
        self,
        n_rows: int,
        terms: list[tuple[Any, Any, Any]],
        lo: NDArray[np.float64] | float,
        hi: NDArray[np.float64] | float,
    ) -> None:
        """``n_rows`` rows; ``terms`` are (local rows, columns, values or one value)."""
        for rows, cols, vals in terms:
            self.r.append(np.asarray(rows, dtype=np.intp) + self.n)
            self.c.append(np.asarray(cols, dtype=np.intp))
            self.v.append(np.broadcast_to(np.asarray(vals, dtype=np.float64), rows.shape))
        self.lo.append(np.broadcast_to(np.asarray(lo, dtype=np.float64), (n_rows,)))
        self.hi.append(np.broadcast_to(np.asarray(hi, dtype=np.float64), (n_rows,)))
        self.n += n_rows

    def matrix(self, n_cols: int) -> sp.csc_matrix:
        r = np.concatenate(self.r) if self.r else np.zeros(0, dtype=np.intp)
        c = np.concatenate(self.c) if self.c else np.zeros(0, dtype=np.intp)
        v = np.concatenate(self.v) if self.v else np.zeros(0)
        return sp.csc_matrix((v, (r, c)), shape=(self.n, n_cols))


def _layout(req: PlanRequest, idx: Index, v2g_entries: int, n_st: int) -> Layout:
    t, f_n = req.steps, req.n_feeders
    w = req.weights
    pos = 0

    def take(n: int) -> slice:
        nonlocal pos
        out = slice(pos, pos + n)
        pos += n
        return out

    x, short = take(idx.size), take(req.n_sessions)
    site, feeder, fleet = take(n_st), take(f_n * t), take(t)
    reserve = req.has_reserve
    ru = take(n_st) if reserve else None
    rd = take(n_st) if reserve else None
    miss = take(2 * t) if reserve else None
    cum = take(v2g_entries) if v2g_entries else None
    dch = take(v2g_entries) if v2g_entries else None
    worst = take(1).start if w.fairness_eur > 0 and req.n_sessions else None
    peak = take(1).start if w.peak_eur_per_kw > 0 else None
    ramp = take(t - 1) if w.ramp_eur_per_kw > 0 and t > 1 else None
    return Layout(
        np.zeros(0, dtype=np.intp),
        x,
        short,
        site,
        feeder,
        fleet,
        ru,
        rd,
        miss,
        cum,
        dch,
        worst,
        peak,
        ramp,
        pos,
    )


def _ar(s: slice) -> NDArray[np.intp]:
    return np.arange(s.start, s.stop, dtype=np.intp)


def _binding_site_steps(
    req: PlanRequest,
    idx: Index,
    occ: NDArray[np.intp],
    site_row_full: NDArray[np.intp],
    site_cap_full: NDArray[np.float64],
    site_exp_full: NDArray[np.float64],
) -> NDArray[np.intp]:
    """The occupied site-steps whose caps can bind, i.e. that need a column and a row.

    A site-step whose import cap is at least the sum of its sessions' maximum powers (and
    whose export cap is at most the sum of their negative minima) can never bind: its
    entries feed the feeder row directly (what HiGHS's presolve does, but kept for the hot
    start, which runs without presolve; at 10 000 × 96 it halves the rows). With a reserve or grid
    rows every occupied site-step keeps its column: both refer to site power.
    """
    sc = req.site_constraints
    if req.has_reserve or (sc is not None and sc.matrix.shape[0]) or not occ.size:
        return occ
    pos = np.full(site_cap_full.size, -1, dtype=np.intp)
    pos[occ] = np.arange(occ.size, dtype=np.intp)
    where = pos[site_row_full]
    # bounds over any plugged fraction in [0, 1], so that a re-plan that only moves the
    # fractions (a step boundary) keeps the matrix and its hot start
    hi_kw = np.maximum(req.max_power_kw, 0.0)[idx.sess_of]
    lo_kw = np.minimum(req.min_power_kw, 0.0)[idx.sess_of]
    hi = np.bincount(where, weights=hi_kw, minlength=occ.size)
    lo = np.bincount(where, weights=lo_kw, minlength=occ.size)
    tol = 1e-9 * np.maximum(1.0, np.abs(hi))
    can_bind = (site_cap_full[occ] < hi + tol) | (site_exp_full[occ] > lo - tol)
    return occ[can_bind]


def build_lp(req: PlanRequest, idx: Index) -> LpModel:
    """The planning problem of ``req`` in matrix form (see the module docstring)."""
    n, t, s_n, f_n = req.n_sessions, req.steps, req.n_sites, req.n_feeders
    k = idx.size
    h = req.step_h
    w = req.weights
    need = np.maximum(req.energy_needed_kwh, 0.0)
    v2g = np.flatnonzero(req.min_power_kw < 0)
    v2g_e = np.flatnonzero(np.isin(idx.sess_of, v2g)) if v2g.size else np.zeros(0, np.intp)
    site_row_full = req.session_site[idx.sess_of] * t + idx.step_of
    site_cap_full = cap_bound(req.caps.site_kw).ravel()
    site_exp_full = -cap_bound(req.caps.site_export_kw).ravel()
    zero_breaks = np.flatnonzero((site_cap_full < 0) | (site_exp_full > 0))
    occ = np.union1d(site_row_full, zero_breaks).astype(np.intp)
    occ = _binding_site_steps(req, idx, occ, site_row_full, site_cap_full, site_exp_full)
    n_st = int(occ.size)
    pos_of_st = np.full(s_n * t, -1, dtype=np.intp)
    pos_of_st[occ] = np.arange(n_st, dtype=np.intp)
    lay = dataclasses.replace(_layout(req, idx, int(v2g_e.size), n_st), site_steps=occ)
    res = reservoir_layout(req, idx, lay.n_cols)
    if res is not None:  # the energy-reservoir rule's columns come last
        lay = dataclasses.replace(lay, reservoir=res, n_cols=res.stop)
    cost = np.zeros(lay.n_cols)
    col_lo = np.full(lay.n_cols, -np.inf)
    col_hi = np.full(lay.n_cols, np.inf)
    rows = _Rows()
    lazy = _Rows()  # grid rows: dense in the site columns, few of them ever bind
    reserve = lay.ru is not None

    # x: power bounds and the earliness tie-break
    lo_x = req.min_power_kw[idx.sess_of] * idx.frac
    hi_x = req.max_power_kw[idx.sess_of] * idx.frac
    col_lo[lay.x], col_hi[lay.x] = lo_x, hi_x
    cost[lay.x] = w.earliness_eur_per_kwh_step * h * idx.step_of
    xcol = _ar(lay.x)

    # energy: Σ h·x ≤ need and Σ h·x + short ≥ need
    sess = np.arange(n, dtype=np.intp)
    short = sess + lay.short.start
    # one equality row: Σ h·x + short = need with 0 ≤ short ≤ need (Σ h·x ≤ need is then
    # short ≥ 0; a priced short never exceeds the gap, so the optimum is the same)
    col_lo[lay.short], col_hi[lay.short] = 0.0, need
    cost[lay.short] = w.shortfall_eur_per_kwh
    rows.add(n, [(idx.sess_of, xcol, np.full(k, h)), (sess, short, 1.0)], need, need)
    if lay.worst is not None:  # short ≤ need·worst + 1e-9
        rows.add(n, [(sess, short, 1.0), (sess, np.full(n, lay.worst), -need)], -np.inf, 1e-9)
        col_lo[lay.worst], col_hi[lay.worst] = 0.0, np.inf
        cost[lay.worst] = w.fairness_eur

    # site, feeder and fleet sums (site-major: site × T + step)
    st = np.arange(n_st, dtype=np.intp)  # local index of an occupied site-step
    site_row = pos_of_st[site_row_full]
    in_st = site_row >= 0  # entries of a site-step without a column feed the feeder row
    rows.add(n_st, [(site_row[in_st], xcol[in_st], 1.0), (st, st + lay.site.start, -1.0)], 0.0, 0.0)
    feeder_of_st = (req.site_feeder[occ // t] * t + occ % t) if t else occ
    ft = np.arange(f_n * t, dtype=np.intp)
    direct = ~in_st
    feeder_of_x = req.site_feeder[req.session_site[idx.sess_of[direct]]] * t + idx.step_of[direct]
    rows.add(
        f_n * t,
        [
            (feeder_of_st, st + lay.site.start, 1.0),
            (feeder_of_x, xcol[direct], 1.0),
            (ft, ft + lay.feeder.start, -1.0),
        ],
        0.0,
        0.0,
    )
    steps = np.arange(t, dtype=np.intp)
    rows.add(
        t,
        [(np.tile(steps, f_n), ft + lay.feeder.start, 1.0), (steps, steps + lay.fleet.start, -1.0)],
        0.0,
        0.0,
    )
    site_cap = site_cap_full[occ]
    site_exp = site_exp_full[occ]
    feeder_cap = cap_bound(req.caps.feeder_kw).ravel()
    fleet_cap = cap_bound(req.caps.fleet_kw)
    if req.price_eur_per_mwh is not None:
        cost[lay.fleet] = (h / 1000.0) * req.price_eur_per_mwh
    if not reserve:
        col_lo[lay.site], col_hi[lay.site] = site_exp, site_cap
        col_hi[lay.feeder] = feeder_cap
        col_hi[lay.fleet] = fleet_cap
    else:
        assert lay.ru is not None and lay.rd is not None and lay.miss is not None
        hi_st = np.bincount(site_row, weights=hi_x, minlength=n_st)
        lo_st = np.bincount(site_row, weights=lo_x, minlength=n_st)
        for s in (lay.ru, lay.rd, lay.miss):
            col_lo[s] = 0.0
        cost[lay.miss] = w.reserve_shortfall_eur_per_kw
        ru, rd, site = st + lay.ru.start, st + lay.rd.start, st + lay.site.start
        # site + ru ≤ min(cap, Σ hi) and site - rd ≥ max(-export, Σ lo)
        rows.add(n_st, [(st, site, 1.0), (st, ru, 1.0)], -np.inf, np.minimum(site_cap, hi_st))
        rows.add(n_st, [(st, site, 1.0), (st, rd, -1.0)], np.maximum(site_exp, lo_st), np.inf)
        rows.add(
            f_n * t,
            [(ft, ft + lay.feeder.start, 1.0), (feeder_of_st, ru, 1.0)],
            -np.inf,
            feeder_cap,
        )
        step_of_st = occ % t
        rows.add(
            t, [(steps, steps + lay.fleet.start, 1.0), (step_of_st, ru, 1.0)], -np.inf, fleet_cap
        )
        up_kw, down_kw = req.reserve_targets_kw()  # per step, asymmetric
        miss = np.arange(2 * t, dtype=np.intp) + lay.miss.start
        rows.add(t, [(step_of_st, ru, 1.0), (steps, miss[:t], 1.0)], up_kw, np.inf)
        rows.add(t, [(step_of_st, rd, 1.0), (steps, miss[t:], 1.0)], down_kw, np.inf)
        if lay.reservoir is not None:  # the reserve is sustainable for reservoir_s
            add_reservoir_rows(
                req,
                idx,
                lay.reservoir,
                rows,
                x0=lay.x.start,
                short0=lay.short.start,
                ru0=lay.ru.start,
                rd0=lay.rd.start,
                entry_st=site_row,
                n_st=n_st,
                lo_x=lo_x,
                hi_x=hi_x,
                col_lo=col_lo,
            )

    sc = req.site_constraints
    if sc is not None and sc.matrix.shape[0]:
        a = sp.coo_matrix(sc.matrix)
        col = pos_of_st[a.col]
        keep = col >= 0  # an empty site-step's power and reserve are 0
        a = sp.coo_matrix((a.data[keep], (a.row[keep], col[keep])), shape=(a.shape[0], n_st))
        terms = [(a.row.astype(np.intp), a.col.astype(np.intp) + lay.site.start, a.data)]
        if reserve:  # worst activation inside the reserve band, row by row
            assert lay.ru is not None and lay.rd is not None
            pos, neg = a.data > 0, a.data < 0
            terms.append((a.row[pos], a.col[pos] + lay.ru.start, a.data[pos]))
            terms.append((a.row[neg], a.col[neg] + lay.rd.start, -a.data[neg]))
        lazy.add(a.shape[0], terms, -np.inf, np.asarray(sc.upper, dtype=np.float64))

    if lay.cum is not None and lay.dch is not None:
        m = v2g_e.size
        loc = np.arange(m, dtype=np.intp)
        cum, dch = loc + lay.cum.start, loc + lay.dch.start
        sess = idx.sess_of[v2g_e]
        has_prev = np.zeros(m, dtype=bool)
        has_prev[1:] = sess[1:] == sess[:-1]
        budget = np.maximum(req.discharge_budget_kwh[sess], 0.0)
        col_lo[lay.cum], col_hi[lay.cum] = -budget, need[sess]
        # c_e - c_{e-1} - h·x_e = 0: the running total of each V2G session
        rows.add(
            m,
            [
                (loc, cum, 1.0),
                (loc[has_prev], cum[has_prev] - 1, -1.0),
                (loc, v2g_e + lay.x.start, -h),
            ],
            0.0,
            0.0,
        )
        col_lo[lay.dch] = 0.0
        cost[lay.dch] = w.degradation_eur_per_kwh * h
        rows.add(m, [(loc, dch, 1.0), (loc, v2g_e + lay.x.start, 1.0)], 0.0, np.inf)

    fleet = steps + lay.fleet.start
    if lay.peak is not None:
        col_lo[lay.peak] = -np.inf
        cost[lay.peak] = w.peak_eur_per_kw
        rows.add(t, [(steps, fleet, 1.0), (steps, np.full(t, lay.peak), -1.0)], -np.inf, 0.0)
    if lay.ramp is not None:
        d = np.arange(t - 1, dtype=np.intp)
        col_lo[lay.ramp] = 0.0
        cost[lay.ramp] = w.ramp_eur_per_kw
        r = d + lay.ramp.start
        for sign in (1.0, -1.0):  # ±(fleet[t+1] - fleet[t]) ≤ ramp[t]
            rows.add(
                t - 1,
                [(d, fleet[1:], sign), (d, fleet[:-1], -sign), (d, r, -1.0)],
                -np.inf,
                0.0,
            )
    hess = None
    if w.quadratic_eur_per_kw2 > 0:
        hess = np.zeros(lay.n_cols)
        hess[lay.fleet] = 2.0 * w.quadratic_eur_per_kw2 / max(t, 1)
    return LpModel(
        a=rows.matrix(lay.n_cols),
        cost=cost,
        col_lo=col_lo,
        col_hi=col_hi,
        row_lo=np.concatenate(rows.lo),
        row_hi=np.concatenate(rows.hi),
        offset=0.0,
        hess_diag=hess,
        layout=lay,
        lazy_a=lazy.matrix(lay.n_cols).tocsr() if lazy.n else None,
        lazy_hi=np.concatenate(lazy.hi) if lazy.n else None,
    )
