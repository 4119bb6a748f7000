"""Solve an :class:`~aggregator.planning.lp.LpModel` with HiGHS (highspy) or Clarabel.

Both solvers read the same matrix model, so they cross-check each other on the same
numbers. HiGHS is the default (dual simplex: measured fastest on this problem, see
``benchmarks/RESULTS.md``); Clarabel (interior point) is the cross-check and takes the
quadratic term as well.

Invariants: nothing is ever written to stdout. HiGHS prints a banner from C++ the first
time a ``Highs`` object is made in a process, so the first one is made with file
descriptor 1 pointing at stderr; every instance then runs with ``output_flag`` off.
A :class:`HighsSolver` keeps its ``Highs`` object and the last optimal basis, so a
re-solve of the same structure starts from it (hot start). HiGHS's ``time_limit`` is
compared with a run clock that accumulates over the object's life, so each solve sets
it to the clock plus its own limit (otherwise a long-lived planner times out for good).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from aggregator.planning.lp import LpModel

__all__ = ["HIGHS_ALGORITHMS", "HighsSolver", "Solved", "solve_clarabel"]

HIGHS_ALGORITHMS = ("auto", "simplex", "ipm", "pdlp")
# "auto": interior point (with crossover, so there is a basis) for large problems with a
# reserve, dual simplex otherwise. Measured at 10 000 × 96 (benchmarks/RESULTS.md):
# without a reserve simplex 8 s vs IPM 27 s; with a 1 000 kW reserve simplex > 120 s
# (time limit) vs IPM 42 s.
IPM_MIN_ENTRIES_WITH_RESERVE = 50_000
# With the energy-reservoir rows (reservoir.py) interior point wins much earlier: CPU s of
# the reservoir plan, simplex / IPM (benchmarks/reservoir.py, 2026-12-01): 6 600 entries
# 2.3 / 3.1, 13 100 entries 12.8 / 7.4, 22 600 entries 58.8 / 16.4.
IPM_MIN_ENTRIES_WITH_RESERVOIR = 10_000
ROW_TOL = 1e-7  # a lazy row counts as violated past hi + ROW_TOL·max(1, |hi|)
MAX_ROUNDS = 30  # rounds of row generation before every remaining row is added
_banner_lock = threading.Lock()
_banner_done = False


@dataclass(frozen=True)
class Solved:
    """A solver's answer: ``status`` is ``"optimal"`` when ``v`` can be used."""

    status: str
    v: NDArray[np.float64] | None
    objective: float
    solve_s: float


def _new_highs() -> Any:
    """A silent ``highspy.Highs`` (its one-time banner goes to stderr, never stdout)."""
    global _banner_done
    import highspy

    with _banner_lock:
        if _banner_done:
            h = highspy.Highs()
        else:
            sys.stdout.flush()
            saved = os.dup(1)
            try:
                os.dup2(2, 1)
                h = highspy.Highs()
            finally:
                os.dup2(saved, 1)
                os.close(saved)
            _banner_done = True
    h.setOptionValue("output_flag", False)
    h.setOptionValue("log_to_console", False)
    return h


class HighsSolver:
    """HiGHS through highspy, with the basis of the last optimal solve kept for a hot start.

    ``algorithm``: ``"auto"`` (default, see ``HIGHS_ALGORITHMS``), ``"simplex"``,
    ``"ipm"`` (interior point, then crossover to a basis) or ``"pdlp"``.
    """

    def __init__(self, *, time_limit_s: float, algorithm: str = "auto") -> None:
        if algorithm not in HIGHS_ALGORITHMS:
            raise ValueError(f"algorithm must be one of {HIGHS_ALGORITHMS}")
        self.time_limit_s = time_limit_s
        self.algorithm = algorithm
        self._h: Any = None
        self._a: sp.csc_matrix | None = None  # matrix of the last optimal solve
        self.rounds = 0  # rounds of lazy-row generation in the last solve
        self.hot_started = False  # the last solve continued from the previous basis

    def solve(self, model: LpModel, *, hot_start: bool) -> Solved:
        """Solve ``model``; with ``hot_start`` and the same matrix as the last solve, only
        bounds and costs are changed in place, so HiGHS continues from its last basis and
        factorisation (typically a tenth of the iterations)."""
        if self._h is None:
            self._h = _new_highs()
        h = self._h
        t0 = time.perf_counter()
        same = (
            hot_start
            and self._a is not None
            and model.hess_diag is None
            and self._a.shape == model.a.shape
            and np.array_equal(self._a.indptr, model.a.indptr)
            and np.array_equal(self._a.indices, model.a.indices)
            and np.array_equal(self._a.data, model.a.data)
        )
        self.hot_started = bool(same)
        if same:
            n, m = model.a.shape[1], model.a.shape[0]
            cols = np.arange(n, dtype=np.int32)
            rows = np.arange(m, dtype=np.int32)
            h.changeColsCost(n, cols, model.cost)
            h.changeColsBounds(n, cols, model.col_lo, model.col_hi)
            h.changeRowsBounds(m, rows, model.row_lo, model.row_hi)
            h.changeObjectiveOffset(model.offset)
            h.setOptionValue("solver", "simplex")  # from the last basis (IPM has crossed over)
        else:
            self._pass(h, model)
        self._a = None
        # HiGHS's run clock accumulates over the object's life and ``time_limit`` is
        # compared with it: the limit of this solve counts from where the clock stands
        h.setOptionValue("time_limit", float(h.getRunTime()) + float(self.time_limit_s))
        h.run()
        if model.lazy_a is not None and self._optimal():
            self._generate_rows(model)
        solve_s = time.perf_counter() - t0
        if not self._optimal():
            status = h.modelStatusToString(h.getModelStatus()).lower()
            return Solved(status, None, float("nan"), solve_s)
        self._a = model.a if model.lazy_a is None else None
        v = np.asarray(h.getSolution().col_value, dtype=np.float64)
        obj = float(h.getInfo().objective_function_value)
        return Solved("optimal", v, obj, solve_s)

    def algorithm_for(self, model: LpModel) -> str:
        """The HiGHS ``solver`` option for ``model``."""
        if model.hess_diag is not None:
            return "choose"
        if self.algorithm != "auto":
            return self.algorithm
        lay = model.layout
        entries = lay.x.stop - lay.x.start
        big_reserve = lay.ru is not None and entries >= IPM_MIN_ENTRIES_WITH_RESERVE
        big_reservoir = lay.reservoir is not None and entries >= IPM_MIN_ENTRIES_WITH_RESERVOIR
        return "ipm" if big_reserve or big_reservoir else "simplex"

    def _optimal(self) -> bool:
        import highspy

        return bool(self._h.getModelStatus() == highspy.HighsModelStatus.kOptimal)

    def _generate_rows(self, model: LpModel) -> None:
        """Add the lazy rows the current solution violates and re-solve from the basis,
        until none is violated (after ``MAX_ROUNDS`` rounds: all the rest at once)."""
        assert model.lazy_a is not None and model.lazy_hi is not None
        h = self._h
        lazy, hi = model.lazy_a, model.lazy_hi
        tol = ROW_TOL * np.maximum(1.0, np.abs(hi))
        added = np.zeros(hi.size, dtype=bool)
        self.rounds = 0
        while self._optimal():
            v = np.asarray(h.getSolution().col_value, dtype=np.float64)
            new = np.flatnonzero(~added & (lazy @ v > hi + tol))
            if not new.size:
                return
            self.rounds += 1
            if self.rounds > MAX_ROUNDS:
                new = np.flatnonzero(~added)
            sub = lazy[new]
            h.addRows(
                new.size,
                np.full(new.size, -np.inf),
                hi[new],
                sub.nnz,
                sub.indptr[:-1].astype(np.int32),
                sub.indices.astype(np.int32),
                sub.data,
            )
            added[new] = True
            h.run()

    @property
    def run_time_s(self) -> float:
        """HiGHS's run clock: the time of every solve of this object so far."""
        return 0.0 if self._h is None else float(self._h.getRunTime())

    @property
    def iterations(self) -> int:
        """Simplex iterations of the last solve (0 before any)."""
        return 0 if self._h is None else int(self._h.getInfo().simplex_iteration_count)

    def _pass(self, h: Any, model: LpModel) -> None:
        import highspy

        a = model.a
        lp = highspy.HighsLp()
        lp.num_col_ = a.shape[1]
        lp.num_row_ = a.shape[0]
        lp.col_cost_ = model.cost
        lp.col_lower_ = model.col_lo
        lp.col_upper_ = model.col_hi
        lp.row_lower_ = model.row_lo
        lp.row_upper_ = model.row_hi
        lp.offset_ = model.offset
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = a.indptr
        lp.a_matrix_.index_ = a.indices
        lp.a_matrix_.value_ = a.data
        h.clearModel()
        h.setOptionValue("output_flag", False)
        algorithm = self.algorithm_for(model)
        h.setOptionValue("solver", algorithm)
        h.passModel(lp)
        if model.hess_diag is not None:
            q = sp.diags(model.hess_diag, format="csc")
            hess = highspy.HighsHessian()
            hess.dim_ = q.shape[0]
            hess.format_ = highspy.HessianFormat.kTriangular
            hess.start_ = q.indptr
            hess.index_ = q.indices
            hess.value_ = q.data
            h.passHessian(hess)


def _cone_rows(
    a: sp.csr_matrix, lo: NDArray[np.float64], hi: NDArray[np.float64]
) -> tuple[sp.csr_matrix, NDArray[np.float64], sp.csr_matrix, NDArray[np.float64]]:
    """``lo ≤ a v ≤ hi`` as equalities ``E v = e`` and inequalities ``G v ≤ g``."""
    eq = np.isfinite(lo) & np.isfinite(hi) & (lo == hi)
    up = np.isfinite(hi) & ~eq
    dn = np.isfinite(lo) & ~eq
    g = sp.vstack([a[up], -a[dn]], format="csr")
    return a[eq], hi[eq], g, np.concatenate([hi[up], -lo[dn]])


def solve_clarabel(model: LpModel, *, time_limit_s: float) -> Solved:
    """Clarabel's interior point on the same model (bounds become cone rows)."""
    import clarabel

    model = model.with_all_rows()
    n = model.a.shape[1]
    e1, b1, g1, h1 = _cone_rows(sp.csr_matrix(model.a), model.row_lo, model.row_hi)
    e2, b2, g2, h2 = _cone_rows(sp.identity(n, format="csr"), model.col_lo, model.col_hi)
    a = sp.vstack([e1, e2, g1, g2], format="csc")
    b = np.concatenate([b1, b2, h1, h2])
    n_eq = e1.shape[0] + e2.shape[0]
    cones = [clarabel.ZeroConeT(n_eq), clarabel.NonnegativeConeT(a.shape[0] - n_eq)]
    p = (
        sp.csc_matrix((n, n))
        if model.hess_diag is None
        else sp.diags(model.hess_diag, format="csc")
    )
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    settings.time_limit = float(time_limit_s)
    t0 = time.perf_counter()
    sol = clarabel.DefaultSolver(p, model.cost, a, b, cones, settings).solve()
    solve_s = time.perf_counter() - t0
    status = str(sol.status)
    if status not in ("Solved", "AlmostSolved"):
        return Solved(f"clarabel: {status}".lower(), None, float("nan"), solve_s)
    return Solved(
        "optimal", np.asarray(sol.x, dtype=np.float64), float(sol.obj_val) + model.offset, solve_s
    )
