"""Energy-reservoir rows of the planner LP: the reserve a plan holds can be sustained.

A reserve held in a step must be deliverable for the energy-reservoir time ``R =
PlanRequest.reservoir_s`` (15 or 30 min of full activation: SO GL Art. 156 lets the TSOs
choose; both appear in the sources), not only as power headroom. With the rule on
(``reservoir_s`` set and a reserve to hold), :func:`build_lp
<aggregator.planning.lp.build_lp>` adds, for every entry ``e = (j, t)`` (session ``j``
plugged in step ``t``) in a step with an up or a down target:

* ``r_e`` — the energy session ``j`` still needs after step ``t``: ``r_e = short_j +
  Σ_{τ>t} h·x_{jτ}`` (one row per entry, ``r_e − r_{e+1} − h·x_{e+1} = 0`` and ``r_last −
  short_j = 0``: linear in the session length, like the V2G running energy);
* **up** (the fleet consumes more): ``u_e ≥ 0`` with ``x_e + u_e ≤ hi_e`` (power) and
  ``R·u_e ≤ r_e`` (the extra energy taken in ``R`` fits in what the session still needs,
  so no session ever receives more than it asked for);
* **down** (the fleet consumes less): ``d_e ≥ 0`` with ``x_e − d_e ≥ lo_e`` (power) and
  ``R·d_e ≤ Σ_{τ>t} h·hi_{jτ} − (r_e − short_j)`` (the energy not taken in ``R`` can be
  caught up after the step, below the session's maximum power, so no session misses its
  departure energy because of the activation);
* per site-step of such a step: ``ru ≤ Σ u_e`` and ``rd ≤ Σ d_e`` over its entries.

Why per entry and not one row per step: a fleet-level ``R·Σru ≤ Σ r`` is necessary but not
sufficient — the plan charges early, so the power headroom sits on cars that are already
full and the energy on cars charging at their maximum, and nothing can be delivered while
both sums look fine. ``u_e ≤ min(headroom, energy / R)`` per entry is what makes the
reserve deliverable; its rows are linear in the number of entries of the reserve steps.

Conventions (as the rest of the LP): ``x_e`` is the step's mean power over the whole step
(bounds scaled by the plugged fraction), the activation's energy is counted on top of the
plan's whole step (conservative), and catching up starts after the step. A reservoir
longer than a step (30 min with 15 min steps) is held in every step of the block, each
with the energy of the whole reservoir. The V2G discharge budget is not re-checked for a
down activation. The site rows keep the activation inside every site, feeder, fleet, DSO
and grid limit, because those rows hold for ``site ± ru/rd``.

Cost (measured; the README's Markets section has the command): the rows are per entry,
so the LP grows ~8× in rows; at 2 000 EVSEs × 96 steps with FCR + aFRR awards the plan
takes ~20× the CPU time of the power-only plan. Only the matrix LP has these rows (the
cvxpy model, kept as the cross-check, and the fallback hold power headroom only).

Invariants: the columns and rows depend on the request's structure, which steps have a
target and ``reservoir_s``; ``need`` and maximum powers enter as bounds only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from aggregator.planning.fallback import Index
from aggregator.planning.request import PlanRequest

__all__ = ["ReservoirLayout", "add_reservoir_rows", "reservoir_layout"]


class _RowSink(Protocol):
    """The LP's row accumulator (:class:`aggregator.planning.lp._Rows`)."""

    def add(
        self,
        n_rows: int,
        terms: list[tuple[Any, Any, Any]],
        lo: NDArray[np.float64] | float,
        hi: NDArray[np.float64] | float,
    ) -> None: ...


@dataclass(frozen=True)
class ReservoirLayout:
    """Columns of the reservoir rows: ``u`` per entry of an up step (``up_e``), ``d`` per
    entry of a down step (``down_e``), ``r`` per entry of a session with any of those
    (``r_e``, session by session, in entry order)."""

    up_e: NDArray[np.intp]
    down_e: NDArray[np.intp]
    r_e: NDArray[np.intp]
    u: slice
    d: slice
    r: slice

    @property
    def stop(self) -> int:
        return int(self.r.stop)


def reservoir_layout(req: PlanRequest, idx: Index, start: int) -> ReservoirLayout | None:
    """The reservoir columns from column ``start`` on; ``None`` when the rule is off or
    no step has a target."""
    if req.reservoir_s is None or not req.has_reserve:
        return None
    up_kw, down_kw = req.reserve_targets_kw()
    up_e = np.flatnonzero(up_kw[idx.step_of] > 0).astype(np.intp)
    down_e = np.flatnonzero(down_kw[idx.step_of] > 0).astype(np.intp)
    touched = np.zeros(req.n_sessions, dtype=bool)
    touched[idx.sess_of[up_e]] = True
    touched[idx.sess_of[down_e]] = True
    r_e = np.flatnonzero(touched[idx.sess_of]).astype(np.intp)
    u = slice(start, start + up_e.size)
    d = slice(u.stop, u.stop + down_e.size)
    r = slice(d.stop, d.stop + r_e.size)
    return ReservoirLayout(up_e, down_e, r_e, u, d, r)


def add_reservoir_rows(
    req: PlanRequest,
    idx: Index,
    res: ReservoirLayout,
    rows: _RowSink,
    *,
    x0: int,
    short0: int,
    ru0: int,
    rd0: int,
    entry_st: NDArray[np.intp],
    n_st: int,
    lo_x: NDArray[np.float64],
    hi_x: NDArray[np.float64],
    col_lo: NDArray[np.float64],
) -> None:
    """Add the rows of the module doc. ``x0``, ``short0``, ``ru0``, ``rd0``: first column
    of each block; ``entry_st``: each entry's local site-step (its ``ru``/``rd`` column)."""
    assert req.reservoir_s is not None
    h, res_h = req.step_h, req.reservoir_s / 3600.0
    k = idx.size
    col_lo[res.u] = 0.0
    col_lo[res.d] = 0.0  # r stays free: its rows define it
    pos_r = np.full(k, -1, dtype=np.intp)
    pos_r[res.r_e] = np.arange(res.r_e.size, dtype=np.intp)
    # r_e − r_{e+1} − h·x_{e+1} = 0, and r_last − short_j = 0
    e = res.r_e
    i = np.arange(e.size, dtype=np.intp)
    nxt = np.minimum(e + 1, k - 1)
    has = (e + 1 < k) & (idx.sess_of[nxt] == idx.sess_of[e])
    rows.add(
        e.size,
        [
            (i, res.r.start + i, 1.0),
            (i[has], res.r.start + i[has] + 1, -1.0),
            (i[has], x0 + e[has] + 1, -h),
            (i[~has], short0 + idx.sess_of[e[~has]], -1.0),
        ],
        0.0,
        0.0,
    )
    # up: x + u ≤ hi, R·u − r ≤ 0
    e = res.up_e
    i = np.arange(e.size, dtype=np.intp)
    u = res.u.start + i
    rows.add(e.size, [(i, u, 1.0), (i, x0 + e, 1.0)], -np.inf, hi_x[e])
    rows.add(e.size, [(i, u, res_h), (i, res.r.start + pos_r[e], -1.0)], -np.inf, 0.0)
    # down: x − d ≥ lo, R·d + r − short ≤ Σ_{later entries} h·hi
    after = _energy_room_after(idx, h * hi_x)
    e = res.down_e
    i = np.arange(e.size, dtype=np.intp)
    d = res.d.start + i
    rows.add(e.size, [(i, x0 + e, 1.0), (i, d, -1.0)], lo_x[e], np.inf)
    rows.add(
        e.size,
        [(i, d, res_h), (i, res.r.start + pos_r[e], 1.0), (i, short0 + idx.sess_of[e], -1.0)],
        -np.inf,
        after[e],
    )
    # per site-step of a reserve step: ru ≤ Σ u, rd ≤ Σ d
    for first, ents, col0 in ((ru0, res.up_e, res.u.start), (rd0, res.down_e, res.d.start)):
        st = np.unique(entry_st[ents])
        local = np.full(n_st, -1, dtype=np.intp)
        local[st] = np.arange(st.size, dtype=np.intp)
        j = np.arange(ents.size, dtype=np.intp)
        rows.add(
            st.size,
            [(local[st], first + st, 1.0), (local[entry_st[ents]], col0 + j, -1.0)],
            -np.inf,
            0.0,
        )


def _energy_room_after(idx: Index, e_max: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per entry: the session's maximum energy in its later entries (kWh)."""
    c = np.cumsum(e_max)
    last = (idx.offsets + idx.lengths - 1)[idx.sess_of]
    return np.asarray(c[last] - c, dtype=np.float64)
