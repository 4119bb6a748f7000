"""Hosting capacity: the extra kW each site alone could draw at each step without a violation.

This module owns the per-site, per-step hosting capacity of a feeder around an operating
point (the background load of each time plus ``base_site_kw``): how much more active
power one site could import, every other site staying at its base, before some line or
transformer exceeds its loading limit or some bus leaves its voltage band
(:class:`~grid.powerflow.GridLimits`). It is exposed as a function now and through the API
later.

Method. (1) A linear estimate from :func:`grid.sensitivity.linearize`
(:func:`linear_hosting_kw`): per element, the headroom over the sensitivity to the site
(loading both ways, as the rows of :func:`grid.sensitivity.grid_constraints`; voltage
towards the band edge the site pushes it), the minimum over elements, capped at
``cap_kw`` (10 MW: unconstrained) and 0 at steps whose operating point already violates
a limit. On the SimBench LV grids it overestimates the AC capacity by 1–35 % (up to 1.9×
where PV reverses a flow), because loading and voltage drop grow faster than linearly over
the 100–250 kW such a move takes. (2) With ``verify=True`` the AC boundary is bracketed
around it: each round is one batched :func:`~grid.powerflow.run_timeseries` call with two
probes ``c ± 0.4 × tolerance`` per unfinished (step, site) pair. Safe probes raise the
lower end ``lo``, violating or non-converging ones lower the upper end ``hi``. The next
centre ``c`` is the regula-falsi zero of the worst AC headroom (loading pp, voltage in %
of nominal) inside a bracket, bisection if an end did not converge, and a secant through
the operating point and ``lo`` (at most 4 × ``lo``) before any violation is seen. A pair is
done when ``hi − lo ≤ max(atol_kw, rtol × hi)``; 4–12 rounds, ~1 s for 96 steps × 10
sites.

Invariants: the returned value is always a probe the AC power flow found violation-free
(or 0: the operating point itself violates a limit or has no headroom), so adding exactly
it never causes a violation in AC (same engine and power factor). Once a pair's bracket
is closed, adding a little more than ``max(value + atol_kw, value / (1 − rtol))`` —
well under +10 % + 1 kW with the defaults — violates, provided the violating extra loads
of one site form an upper interval (true for load increases on radial feeders: voltages
fall and path flows grow monotonically once past a reversal). Pairs that reach
``max_rounds`` keep their last safe value. A capacity equal to ``cap_kw`` means that no
limit was found below the cap. kW throughout; positive = import.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from aggregator.errors import InvalidInput, Issue
from grid.feeders import FeederModel
from grid.powerflow import Engine, GridLimits, PowerFlowResult, run_timeseries
from grid.sensitivity import (
    Sensitivities,
    check_site_inputs,
    linearize,
    operating_point_result,
    per_bus_kw,
)

__all__ = ["DEFAULT_CAP_KW", "hosting_capacity_kw", "linear_hosting_kw"]

DEFAULT_CAP_KW = 10_000.0
"""Hosting capacity reported when no limit is found below it (10 MW)."""
_MAX_GROWTH = 4.0  # beyond a safe point, probe at most four times as far
_PROBE = 0.4  # the two probes of a round lie ± this share of the tolerance around the centre
_SAFEGUARD = 0.02  # regula falsi centres stay this share of the bracket inside it
_MIN_SLOPE = 1e-12  # sensitivities below this (per kW) count as zero

FloatArray = NDArray[np.float64]


def _limit_x(headroom: FloatArray, slope: FloatArray) -> FloatArray:
    """kW until ``headroom − slope·x`` reaches zero, +inf where the slope is not positive."""
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where(slope > _MIN_SLOPE, headroom / slope, np.inf)
    return np.asarray(np.where(np.isnan(x), np.inf, x), dtype=np.float64)


def _step_violated(res: PowerFlowResult, limits: GridLimits) -> NDArray[np.bool_]:
    return _worst_headroom(res, limits) < 0


def _worst_headroom(res: PowerFlowResult, limits: GridLimits) -> FloatArray:
    """Per scenario, the smallest headroom over all elements in % (−inf: not converged).

    Loading headroom is ``limit − loading`` (pp); voltage headroom is the distance to the
    nearer band edge in % of nominal. Negative = a violation, exactly as
    :meth:`~grid.powerflow.PowerFlowResult.violations` counts it (strict comparisons).
    """
    parts = [
        limits.max_line_loading_pct - res.line_loading_pct,
        limits.max_trafo_loading_pct - res.trafo_loading_pct,
        (res.vm_pu - limits.v_min_pu) * 100.0,
        (limits.v_max_pu - res.vm_pu) * 100.0,
    ]
    stacked = np.concatenate([np.asarray(p, dtype=float) for p in parts], axis=1)
    stacked = np.where(np.isnan(stacked), np.inf, stacked)  # unsupplied elements
    worst = stacked.min(axis=1, initial=np.inf)
    return np.asarray(np.where(res.converged, worst, -np.inf), dtype=np.float64)


def linear_hosting_kw(
    sens: Sensitivities, *, limits: GridLimits | None = None, cap_kw: float = DEFAULT_CAP_KW
) -> FloatArray:
    """The linear estimate of hosting capacity (steps, sites); see the module doc.

    0 at steps whose operating point violates a limit; ``cap_kw`` where no element limits.
    """
    lim = limits if limits is not None else GridLimits()
    x = np.full(sens.base_site_kw.shape, np.inf)
    loading = (
        (sens.base_line_loading_pct, sens.d_line_pct_per_kw, lim.max_line_loading_pct),
        (sens.base_trafo_loading_pct, sens.d_trafo_pct_per_kw, lim.max_trafo_loading_pct),
    )
    for base, d, limit in loading:
        b = base[:, :, None]
        x = np.minimum(x, _limit_x(limit - b, d).min(axis=1, initial=np.inf))
        x = np.minimum(x, _limit_x(limit + b, -d).min(axis=1, initial=np.inf))  # reversal
    vm, d_vm = sens.base_vm_pu[:, :, None], sens.d_vm_pu_per_kw
    x = np.minimum(x, _limit_x(lim.v_max_pu - vm, d_vm).min(axis=1, initial=np.inf))
    x = np.minimum(x, _limit_x(vm - lim.v_min_pu, -d_vm).min(axis=1, initial=np.inf))
    violated = _step_violated(operating_point_result(sens), lim)
    x[violated] = 0.0
    return np.asarray(np.clip(x, 0.0, cap_kw), dtype=np.float64)


def _check(cap_kw: float, rtol: float, atol_kw: float, max_rounds: int) -> list[Issue]:
    issues: list[Issue] = []
    if not (math.isfinite(cap_kw) and cap_kw > 0):
        issues.append(Issue("cap_kw", f"must be finite and > 0, got {cap_kw}"))
    if not (math.isfinite(rtol) and 0 < rtol < 1):
        issues.append(Issue("rtol", f"must be in (0, 1), got {rtol}"))
    if not (math.isfinite(atol_kw) and atol_kw > 0):
        issues.append(Issue("atol_kw", f"must be finite and > 0, got {atol_kw}"))
    if max_rounds < 1:
        issues.append(Issue("max_rounds", f"must be ≥ 1, got {max_rounds}"))
    return issues


def hosting_capacity_kw(
    model: FeederModel,
    site_buses: Sequence[str],
    times: Sequence[datetime],
    base_site_kw: FloatArray | None = None,
    *,
    limits: GridLimits | None = None,
    verify: bool = True,
    cap_kw: float = DEFAULT_CAP_KW,
    rtol: float = 0.01,
    atol_kw: float = 0.5,
    max_rounds: int = 20,
    engine: Engine = "pgm",
    power_factor: float = 1.0,
) -> FloatArray:
    """Extra kW each site alone could add at each step without a violation (steps, sites).

    ``base_site_kw`` (steps, sites; default zero) is the operating point; every other site
    stays there while one is raised. With ``verify`` the value is confirmed and tightened
    in AC (module doc) and never causes a violation in AC; without it, it is the linear
    estimate of :func:`linear_hosting_kw`. Raises :class:`InvalidInput` with every problem
    (naive times, unknown buses, bad shapes, bad tolerances).
    """
    lim = limits if limits is not None else GridLimits()
    issues = check_site_inputs(model, site_buses, times, base_site_kw)
    issues += _check(cap_kw, rtol, atol_kw, max_rounds)
    if issues:
        raise InvalidInput(issues)
    sens = linearize(
        model, site_buses, times, base_site_kw, engine=engine, power_factor=power_factor
    )
    estimate = linear_hosting_kw(sens, limits=lim, cap_kw=cap_kw)
    if not verify or estimate.size == 0:
        return estimate
    return _verify(
        model, sens, estimate, lim, cap_kw, rtol, atol_kw, max_rounds, engine, power_factor
    )


def _tol(x: FloatArray, atol_kw: float, rtol: float) -> FloatArray:
    return np.asarray(np.maximum(atol_kw, rtol * x), dtype=np.float64)


def _verify(
    model: FeederModel,
    sens: Sensitivities,
    estimate: FloatArray,
    limits: GridLimits,
    cap_kw: float,
    rtol: float,
    atol_kw: float,
    max_rounds: int,
    engine: Engine,
    power_factor: float,
) -> FloatArray:
    """Bracket each pair's AC boundary around ``estimate``; return the safe ends (module doc)."""
    shape = estimate.shape
    g0 = _worst_headroom(operating_point_result(sens), limits)[:, None]
    lo, g_lo = np.zeros(shape), np.broadcast_to(g0, shape).copy()
    hi, g_hi = np.full(shape, np.inf), np.full(shape, -np.inf)
    active = estimate > 0  # 0 = the operating point already violates (or no headroom)
    center = estimate.copy()
    for _ in range(max_rounds):
        t_idx, s_idx = np.nonzero(active)
        if t_idx.size == 0:
            break
        c = center[t_idx, s_idx]
        half = _PROBE * _tol(c, atol_kw, rtol)
        x1 = np.maximum(c - half, lo[t_idx, s_idx])
        x2 = np.minimum(c + half, np.minimum(hi[t_idx, s_idx], cap_kw))
        for x, g in zip(
            (x1, x2),
            _headrooms(model, sens, limits, t_idx, s_idx, x1, x2, engine, power_factor),
            strict=True,
        ):
            ok = (g >= 0) & (x > lo[t_idx, s_idx]) & (x < hi[t_idx, s_idx])
            lo[t_idx[ok], s_idx[ok]], g_lo[t_idx[ok], s_idx[ok]] = x[ok], g[ok]
            bad = (g < 0) & (x < hi[t_idx, s_idx])
            hi[t_idx[bad], s_idx[bad]], g_hi[t_idx[bad], s_idx[bad]] = x[bad], g[bad]
        closed = np.isfinite(hi) & (hi - lo <= _tol(hi, atol_kw, rtol))
        active &= ~closed & (lo < cap_kw)
        center = _next_center(lo, hi, g0, g_lo, g_hi, 2 * _tol(lo, atol_kw, rtol), cap_kw)
    return lo


def _headrooms(
    model: FeederModel,
    sens: Sensitivities,
    limits: GridLimits,
    t_idx: NDArray[np.intp],
    s_idx: NDArray[np.intp],
    x1: FloatArray,
    x2: FloatArray,
    engine: Engine,
    power_factor: float,
) -> tuple[FloatArray, FloatArray]:
    """Worst AC headroom with site ``s_idx`` raised by ``x1`` and by ``x2`` (one batch)."""
    n = t_idx.size
    site_kw = np.concatenate([sens.base_site_kw[t_idx], sens.base_site_kw[t_idx]])
    rows = np.arange(2 * n)
    site_kw[rows, np.concatenate([s_idx, s_idx])] += np.concatenate([x1, x2])
    buses, bus_kw = per_bus_kw(sens.site_buses, site_kw)
    res = run_timeseries(
        model,
        [sens.times[t] for t in t_idx] * 2,
        {bus: bus_kw[:, k] for k, bus in enumerate(buses)},
        engine=engine,
        power_factor=power_factor,
    )
    g = _worst_headroom(res, limits)
    return g[:n], g[n:]


def _next_center(
    lo: FloatArray,
    hi: FloatArray,
    g0: FloatArray,
    g_lo: FloatArray,
    g_hi: FloatArray,
    step_kw: FloatArray,
    cap_kw: float,
) -> FloatArray:
    """Where to probe next: regula falsi inside a bracket, secant extrapolation beyond.

    Beyond the last safe point the probe lies between ``lo + step_kw`` and four times
    ``lo``; a non-converged end (headroom −inf) falls back to bisection.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = g_lo / (g_lo - g_hi)
        ahead = lo + g_lo * lo / (g0 - g_lo)  # secant through the operating point and lo
    usable = np.isfinite(frac) & np.isfinite(g_hi)  # a non-converged end carries no slope
    frac = np.where(usable, np.clip(frac, _SAFEGUARD, 1 - _SAFEGUARD), 0.5)
    inside = lo + frac * (hi - lo)
    low = lo + step_kw
    ahead = np.where(np.isfinite(ahead) & (g0 > g_lo), ahead, _MAX_GROWTH * lo)
    ahead = np.minimum(np.maximum(ahead, low), np.maximum(_MAX_GROWTH * lo, low))
    return np.asarray(np.where(np.isfinite(hi), inside, np.minimum(ahead, cap_kw)), np.float64)
