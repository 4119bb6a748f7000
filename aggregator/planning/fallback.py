"""The plan when there is no optimal plan, and the flattened (session, step) index.

:func:`proportional_plan` is the safe fallback of the slow loop (infeasible, time-out,
solver error): charge as soon as possible, scaled down to every cap, step by step. It
never raises and never exceeds a site, feeder or fleet cap that charging alone can meet
(caps below zero need V2G; the dispatcher handles those at run time).
:func:`empty_plan` is the all-zero schedule of an empty or invalid request.

:class:`Index` flattens the plugged-in (session, step) pairs of a request, session-major:
entry ``k`` is session ``sess_of[k]`` in step ``step_of[k]``; ``frac[k]`` is the plugged
part of that step (``0 < frac ≤ 1``); a session's entries are contiguous from
``offsets[j]`` for ``lengths[j]`` steps. Both planners (matrix and cvxpy) use it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from aggregator.planning.request import Plan, PlanRequest

__all__ = ["Index", "bincount_f", "empty_plan", "index", "proportional_plan", "with_times"]


def bincount_f(
    x: NDArray[np.intp], weights: NDArray[np.float64] | None = None, minlength: int = 0
) -> NDArray[np.float64]:
    return np.bincount(x, weights=weights, minlength=minlength).astype(np.float64, copy=False)


@dataclass(frozen=True)
class Index:
    """Flattened (session, step) entries of a request."""

    sess_of: NDArray[np.intp]
    step_of: NDArray[np.intp]
    frac: NDArray[np.float64]
    offsets: NDArray[np.intp]
    lengths: NDArray[np.intp]

    @property
    def size(self) -> int:
        return int(self.sess_of.shape[0])


def index(req: PlanRequest) -> Index:
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
    return Index(sess_of, step_of, frac, offsets, lengths)


def empty_plan(req: PlanRequest, fallback: str | None) -> Plan:
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


def with_times(plan: Plan, build_s: float, solve_s: float, rebuilt: bool, solver: str) -> Plan:
    return dataclasses.replace(
        plan, solver=solver, build_s=build_s, solve_s=solve_s, rebuilt=rebuilt
    )


def proportional_plan(req: PlanRequest, reason: str) -> Plan:
    """The safe fallback: charge as soon as possible, scaled down to every cap, step by step.

    Each session takes its full power until its energy is met; then every site, feeder and
    the fleet scale their sessions proportionally so no cap is exceeded (caps below zero
    cannot be met by charging alone; the dispatcher handles those with V2G at run time).
    """
    idx = index(req)
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
        sums = bincount_f(rows, weights=x, minlength=caps.size)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            alpha = np.where(sums > caps, np.clip(caps / sums, 0.0, 1.0), 1.0)
        x *= alpha[rows]
    # energy: cumulative per session, stop when the need is met (ASAP order)
    excl = np.cumsum(x * h) - x * h
    before = excl - excl[idx.offsets[idx.sess_of]] if idx.size else excl
    x = np.clip(req.energy_needed_kwh[idx.sess_of] - before, 0.0, x * h) / h
    power = np.zeros((req.n_sessions, t))
    power[idx.sess_of, idx.step_of] = x / idx.frac
    energy = bincount_f(idx.sess_of, weights=x * h, minlength=req.n_sessions)
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
