"""Linear grid constraints for the slow loop: loading and voltage sensitivities to site power.

This module owns the linear model of the feeder around an operating point: for each step,
how line and transformer loading (%) and bus voltage magnitude (pu) change per kW of extra
active power at each charging site's bus. :func:`linearize` measures it,
:func:`predict` evaluates it and :func:`grid_constraints` turns it into the
:class:`~aggregator.planning.request.SiteLinearConstraints` rows the optimizer adds to the plan.

Method — forward finite differences of the AC power flow, one batch for all steps.
Per step ``t`` the operating point is the background load of that time plus
``base_site_kw[t]``; each distinct site bus is then perturbed alone by ``delta_kw``
and ``d = (x(P0 + δ·e_bus) − x(P0)) / δ``. All ``T × (buses + 1)`` scenarios go to
:func:`grid.powerflow.run_timeseries` as one batch (times repeated), which the
power-grid-model engine solves in one call: 0.06 s (``1-LV-rural1--0-sw``) to 0.12 s
(``1-LV-urban6--0-sw``) for 96 steps × 10 sites. Sites on the same bus share one
perturbation. Why not the power-flow Jacobian:

1. loading is what the AC engine reports (max of both branch ends, transformer current ×
   rated voltage, ``df``, ``parallel``); differencing that output is consistent with the
   AC check by construction, where a Jacobian route re-derives every definition from
   branch admittances and pandapower's internal bus ordering;
2. the +δ secant follows the curvature of the moves a plan makes better than the tangent
   (for +20 kW it erred half as much as a central difference: 0.07 vs 0.15 pp);
3. the cost is of the same order, as one batch call solves the thousand scenarios, and
   either engine can be used (``engine="pandapower"`` agrees to 1e-8 pu/kW, 1e-6 %/kW).

Loading is |I|, not smooth at zero flow. The model treats ``base + d·ΔP`` as a signed
flow: :func:`predict` returns its absolute value and :func:`grid_constraints` bounds it on
both sides (``loading`` and ``reverse loading`` rows), which keeps flow reversal by V2G or
by PV in view; near zero flow the predicted magnitude is rough, but such a branch is far
from its limit. Voltage magnitude is smooth.

Stated tolerance (``tests/grid/test_sensitivity.py``; +20 kW at one site, ``delta_kw=10``,
SimBench ``1-LV-rural1--0-sw`` and ``1-LV-urban6--0-sw``, four days × 96 steps, operating
points 0 and 30 kW per site): :data:`VM_TOLERANCE_PU` on every bus voltage (measured ≤
6.2e-5 pu) and :data:`LOADING_TOLERANCE_PCT` percentage points on every line and
transformer loaded at least :data:`LOADING_FLOOR_PCT` before and after the move (measured
≤ 0.56 pp; ≤ 0.08 pp from a 30 kW operating point). Below that floor, where PV turns a
flow around inside the step or reactive current dominates, the error reaches several pp
(7 pp measured) — harmless there, as such a branch is far from its limit. The error grows
about with the square of the move: re-linearize at the plan's site powers (sequential
linear programming) when a plan moves far from the operating point; ``margin_pct`` (and
``margin_pu``) of :func:`grid_constraints` keep a reserve for the rest.

Invariants: kW in and out (MW only inside :mod:`grid.powerflow`); positive = import; the
constraint layout is the plan's, site-major (column ``site × steps + step``); arrays in a
:class:`Sensitivities` are read-only. Reactive power of the perturbation follows
``power_factor`` (unity by default, as EV chargers run).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from aggregator.errors import InvalidInput, Issue, SolverFailed
from aggregator.planning.request import SiteLinearConstraints
from grid.feeders import FeederModel, bus_index
from grid.powerflow import Engine, GridLimits, PowerFlowResult, run_timeseries

__all__ = [
    "LOADING_FLOOR_PCT",
    "LOADING_TOLERANCE_PCT",
    "VM_TOLERANCE_PU",
    "Sensitivities",
    "grid_constraints",
    "linearize",
    "operating_point_result",
    "predict",
]

VM_TOLERANCE_PU = 1e-4
"""Stated accuracy of :func:`predict` on bus voltage for a 20 kW move at one site (pu)."""
LOADING_TOLERANCE_PCT = 1.0
"""Stated accuracy of :func:`predict` on line and transformer loading for a 20 kW move at
one site (percentage points), on elements loaded ≥ :data:`LOADING_FLOOR_PCT` before and
after the move."""
LOADING_FLOOR_PCT = 10.0
"""Loading (%) from which :data:`LOADING_TOLERANCE_PCT` holds (flows away from reversal)."""
_ZERO_COEF = 1e-12
"""Coefficients below this (per kW) count as zero when rows are pruned."""

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class Sensitivities:
    """The linear grid model of each step around its operating point (see the module doc).

    ``d_*`` are per kW at the site's bus, shape (steps, elements, sites); ``base_*`` are the
    AC results at the operating point ``base_site_kw`` (steps, sites).
    """

    times: tuple[datetime, ...]
    site_buses: tuple[str, ...]
    base_line_loading_pct: FloatArray
    base_trafo_loading_pct: FloatArray
    base_vm_pu: FloatArray
    d_line_pct_per_kw: FloatArray
    d_trafo_pct_per_kw: FloatArray
    d_vm_pu_per_kw: FloatArray
    base_site_kw: FloatArray
    line_names: tuple[str, ...]
    trafo_names: tuple[str, ...]
    bus_names: tuple[str, ...]

    @property
    def steps(self) -> int:
        return len(self.times)

    @property
    def n_sites(self) -> int:
        return len(self.site_buses)


def check_site_inputs(
    model: FeederModel,
    site_buses: Sequence[str],
    times: Sequence[datetime],
    site_kw: FloatArray | None,
    name: str = "base_site_kw",
) -> list[Issue]:
    """Every problem with sites, aware times and a (steps, sites) power array, as values."""
    issues: list[Issue] = []
    if not times:
        issues.append(Issue("times", "need at least one time"))
    naive = tuple(str(i) for i, t in enumerate(times) if t.utcoffset() is None)
    if naive:
        issues.append(Issue("times", "must be timezone-aware (UTC)", naive))
    for bus in dict.fromkeys(site_buses):
        try:
            bus_index(model, bus)
        except InvalidInput as exc:
            issues.extend(exc.issues)
    if site_kw is not None:
        arr = np.asarray(site_kw)
        want = (len(times), len(site_buses))
        if arr.shape != want:
            issues.append(Issue(name, f"shape {arr.shape}, expected {want} (steps, sites)"))
        elif not np.isfinite(arr).all():
            issues.append(Issue(name, "must be finite"))
    return issues


def bus_groups(site_buses: Sequence[str]) -> tuple[tuple[str, ...], NDArray[np.intp]]:
    """Distinct buses in first-seen order and, per site, the index of its bus among them."""
    unique = tuple(dict.fromkeys(site_buses))
    pos = {bus: i for i, bus in enumerate(unique)}
    return unique, np.array([pos[b] for b in site_buses], dtype=np.intp)


def per_bus_kw(
    site_buses: Sequence[str], site_kw: FloatArray
) -> tuple[tuple[str, ...], FloatArray]:
    """Site powers (N, sites) summed per distinct bus: ``(buses, (N, buses))``."""
    unique, group = bus_groups(site_buses)
    out = np.zeros((site_kw.shape[0], len(unique)))
    np.add.at(out.T, group, site_kw.T)
    return unique, out


def _frozen(arr: FloatArray) -> FloatArray:
    out = np.ascontiguousarray(arr, dtype=np.float64)
    out.setflags(write=False)
    return out


def linearize(
    model: FeederModel,
    site_buses: Sequence[str],
    times: Sequence[datetime],
    base_site_kw: FloatArray | None = None,
    *,
    delta_kw: float = 10.0,
    engine: Engine = "pgm",
    power_factor: float = 1.0,
    fingerprint: int | None = None,
) -> Sensitivities:
    """Sensitivities of loading and voltage to each site's power, per step (module doc).

    ``base_site_kw`` (steps, sites; default zero) is the sites' power at the operating
    point, on top of the feeder's background load. Raises :class:`InvalidInput` with every
    problem (naive times, unknown buses, bad shapes, ``delta_kw`` not finite > 0) and
    :class:`SolverFailed` when the AC power flow does not converge at some step.
    """
    issues = check_site_inputs(model, site_buses, times, base_site_kw)
    if not (math.isfinite(delta_kw) and delta_kw > 0):
        issues.append(Issue("delta_kw", f"must be finite and > 0, got {delta_kw}"))
    if issues:
        raise InvalidInput(issues)
    n_steps, n_sites = len(times), len(site_buses)
    p0 = np.zeros((n_steps, n_sites)) if base_site_kw is None else np.asarray(base_site_kw, float)
    buses, p0_bus = per_bus_kw(site_buses, p0)
    _, group = bus_groups(site_buses)
    blocks = len(buses) + 1  # block 0: operating point; block k: bus k-1 + delta
    extra: dict[str, FloatArray] = {}
    for k, bus in enumerate(buses):
        column = np.tile(p0_bus[:, k], blocks)
        column[(k + 1) * n_steps : (k + 2) * n_steps] += delta_kw
        extra[bus] = column
    res = run_timeseries(
        model,
        list(times) * blocks,
        extra,
        engine=engine,
        power_factor=power_factor,
        fingerprint=fingerprint,
    )
    failed = np.flatnonzero(~np.asarray(res.converged).reshape(blocks, n_steps).all(axis=0))
    if failed.size:
        steps = tuple(str(int(t)) for t in failed)
        raise SolverFailed(f"AC power flow did not converge at steps {', '.join(steps)}")

    def split(values: FloatArray) -> tuple[FloatArray, FloatArray]:
        cube = np.asarray(values, float).reshape(blocks, n_steps, -1)
        d_bus = (cube[1:] - cube[0]) / delta_kw  # (buses, T, E)
        return _frozen(cube[0]), _frozen(d_bus[group].transpose(1, 2, 0))

    base_line, d_line = split(res.line_loading_pct)
    base_trafo, d_trafo = split(res.trafo_loading_pct)
    base_vm, d_vm = split(res.vm_pu)
    return Sensitivities(
        times=tuple(times),
        site_buses=tuple(site_buses),
        base_line_loading_pct=base_line,
        base_trafo_loading_pct=base_trafo,
        base_vm_pu=base_vm,
        d_line_pct_per_kw=d_line,
        d_trafo_pct_per_kw=d_trafo,
        d_vm_pu_per_kw=d_vm,
        base_site_kw=_frozen(p0),
        line_names=res.line_names,
        trafo_names=res.trafo_names,
        bus_names=res.bus_names,
    )


def predict(sens: Sensitivities, site_kw: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``(line_pct, trafo_pct, vm_pu)`` the linear model gives for site powers (steps, sites).

    Loading is the magnitude of the linearised signed flow (module doc).
    """
    p = np.asarray(site_kw, dtype=float)
    if p.shape != sens.base_site_kw.shape:
        msg = f"shape {p.shape}, expected {sens.base_site_kw.shape} (steps, sites)"
        raise InvalidInput([Issue("site_kw", msg)])
    dp = p - sens.base_site_kw
    line = sens.base_line_loading_pct + np.einsum("tes,ts->te", sens.d_line_pct_per_kw, dp)
    trafo = sens.base_trafo_loading_pct + np.einsum("tes,ts->te", sens.d_trafo_pct_per_kw, dp)
    vm = sens.base_vm_pu + np.einsum("tes,ts->te", sens.d_vm_pu_per_kw, dp)
    return np.abs(line), np.abs(trafo), vm


@dataclass(frozen=True)
class _Family:
    """Rows ``sign × (c0 + d·P) ≤ limit`` for one element type and direction."""

    prefix: str
    names: tuple[str, ...]
    base: FloatArray  # (T, E)
    d: FloatArray  # (T, E, S)
    sign: float
    limit: float
    what: str


def _families(
    sens: Sensitivities, limits: GridLimits, margin_pct: float, margin_pu: float
) -> list[_Family]:
    line_lim = limits.max_line_loading_pct - margin_pct
    trafo_lim = limits.max_trafo_loading_pct - margin_pct
    vm_hi, vm_lo = limits.v_max_pu - margin_pu, limits.v_min_pu + margin_pu
    ln, tr, vm = sens.base_line_loading_pct, sens.base_trafo_loading_pct, sens.base_vm_pu
    d_ln, d_tr, d_vm = sens.d_line_pct_per_kw, sens.d_trafo_pct_per_kw, sens.d_vm_pu_per_kw
    return [
        _Family("line", sens.line_names, ln, d_ln, 1.0, line_lim, "loading"),
        _Family("line", sens.line_names, ln, d_ln, -1.0, line_lim, "reverse loading"),
        _Family("trafo", sens.trafo_names, tr, d_tr, 1.0, trafo_lim, "loading"),
        _Family("trafo", sens.trafo_names, tr, d_tr, -1.0, trafo_lim, "reverse loading"),
        _Family("bus", sens.bus_names, vm, d_vm, 1.0, vm_hi, "vmax"),
        _Family("bus", sens.bus_names, vm, d_vm, -1.0, -vm_lo, "vmin"),
    ]


def grid_constraints(
    sens: Sensitivities,
    *,
    limits: GridLimits | None = None,
    margin_pct: float = 2.0,
    margin_pu: float = 0.0,
    prune: bool = True,
    max_site_kw: FloatArray | None = None,
    relax_background: bool = True,
) -> SiteLinearConstraints:
    """Per-step linear loading and voltage limits on site powers, in the plan's layout.

    Rows, for each step ``t`` and element: ``base + d·(P − P0) ≤ limit − margin_pct`` and
    ``−(base + d·(P − P0)) ≤ limit − margin_pct`` for lines and transformers (signed flow,
    module doc), ``v_min + margin_pu ≤ base_v + d_v·(P − P0) ≤ v_max − margin_pu`` for
    buses, rearranged to ``a @ P ≤ ub`` with column ``site × steps + t``.

    ``relax_background``: a row that the point P = 0 already violates (background load or
    generation alone breaks the limit, to first order) gets ``ub = 0``: the fleet may not
    add to it but is not asked to cure it, so P = 0 satisfies every row and the grid rows
    never make a plan infeasible (a request keeps ``min ≤ 0 ≤ max``). Its label ends in
    ``(relaxed)``. ``prune`` drops rows that cannot bind: with ``max_site_kw`` (sites,) or
    (steps, sites), those with ``Σ |a| × max_site_kw ≤ ub`` (site powers within
    ±``max_site_kw``); always those with no coefficient and ``ub ≥ 0``. Elements with a
    non-finite base or sensitivity (unsupplied) give no rows. Labels read
    ``t12 line:LV1.101 Line 3 loading``.
    """
    lim = limits if limits is not None else GridLimits()
    n_steps, n_sites = sens.base_site_kw.shape
    issues: list[Issue] = []
    for name, value in (("margin_pct", margin_pct), ("margin_pu", margin_pu)):
        if not (math.isfinite(value) and value >= 0):
            issues.append(Issue(name, f"must be finite and ≥ 0, got {value}"))
    if margin_pct >= min(lim.max_line_loading_pct, lim.max_trafo_loading_pct):
        issues.append(Issue("margin_pct", "must be below the loading limits"))
    if 2 * margin_pu >= lim.v_max_pu - lim.v_min_pu:
        issues.append(Issue("margin_pu", "must leave a voltage band"))
    bound: FloatArray | None = None
    if max_site_kw is not None:
        raw = np.asarray(max_site_kw, dtype=float)
        if raw.shape not in ((n_sites,), (n_steps, n_sites)):
            issues.append(Issue("max_site_kw", f"shape {raw.shape}, expected ({n_sites},)"))
        elif not (np.isfinite(raw).all() and (raw >= 0).all()):
            issues.append(Issue("max_site_kw", "must be finite and ≥ 0"))
        else:
            bound = np.broadcast_to(raw, (n_steps, n_sites))
    if issues:
        raise InvalidInput(issues)
    p0 = sens.base_site_kw
    parts: list[tuple[NDArray[np.intp], FloatArray, FloatArray, list[str]]] = []
    for fam in _families(sens, lim, margin_pct, margin_pu):
        a = fam.sign * fam.d  # (T, E, S)
        c0 = fam.base - np.einsum("tes,ts->te", fam.d, p0)  # linear model at P = 0
        ub = fam.limit - fam.sign * c0  # (T, E)
        keep = np.isfinite(ub) & np.isfinite(a).all(axis=2)
        relaxed = keep & (ub < 0) & relax_background
        ub = np.where(relaxed, 0.0, ub)
        if prune:
            dead = (np.abs(a) <= _ZERO_COEF).all(axis=2) & (ub >= 0)
            if bound is not None:
                dead |= np.einsum("tes,ts->te", np.abs(a), bound) <= ub
            keep &= ~dead
        t_idx, e_idx = np.nonzero(keep)
        labels = [
            f"t{t} {fam.prefix}:{fam.names[e]} {fam.what}" + (" (relaxed)" if relaxed[t, e] else "")
            for t, e in zip(t_idx, e_idx, strict=True)
        ]
        parts.append((t_idx, a[t_idx, e_idx], ub[t_idx, e_idx], labels))
    step = np.concatenate([p[0] for p in parts])
    order = np.argsort(step, kind="stable")  # by step, then family, then element
    step = step[order]
    coefs = np.concatenate([p[1] for p in parts])[order]
    upper = np.concatenate([p[2] for p in parts])[order]
    all_labels = [label for p in parts for label in p[3]]
    rows = np.repeat(np.arange(len(upper)), n_sites)
    cols = (np.arange(n_sites)[None, :] * n_steps + step[:, None]).ravel()
    matrix: Any = sp.csr_matrix(
        (coefs.ravel(), (rows, cols)), shape=(len(upper), n_sites * n_steps)
    )
    matrix.eliminate_zeros()
    row_labels = tuple(all_labels[i] for i in order)
    return SiteLinearConstraints(matrix=matrix, upper=_frozen(upper), labels=row_labels)


def operating_point_result(sens: Sensitivities) -> PowerFlowResult:
    """The AC result at the operating point, as a :class:`PowerFlowResult` (for reports)."""
    return PowerFlowResult(
        line_loading_pct=sens.base_line_loading_pct,
        trafo_loading_pct=sens.base_trafo_loading_pct,
        vm_pu=sens.base_vm_pu,
        line_names=sens.line_names,
        trafo_names=sens.trafo_names,
        bus_names=sens.bus_names,
        engine="linearize",
        elapsed_s=0.0,
        converged=np.ones(sens.steps, dtype=bool),
    )
