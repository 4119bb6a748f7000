"""Slow-loop benchmark: first plan, re-plan and fresh rebuild of the planner.

``--baseline`` runs the cvxpy formulation (``Planner(backend="cvxpy")``, the planner
before issue 8) on the same requests in the same run and reports
``resolve_over_baseline`` (re-plan median of the matrix/highspy planner over the
baseline's) and the objectives' relative difference.

What is measured, per fleet size N (sessions) and horizon T (steps of 15 min):

* ``first_solve_s`` — wall time of the first ``Planner.plan(req)`` on a fresh
  ``Planner(reuse=True)``: building the cvxpy problem, the DPP compilation and the solve;
* ``resolve_s_median`` — median wall time of ``--resolves`` re-plans that change only
  parameter values (the price series × a random factor in [0.8, 1.25], the feeder cap
  × a random factor in [0.9, 1.1]) on the same sessions, so the planner re-uses the cached
  problem (checked: ``plan.rebuilt is False``, otherwise the script exits with status 1):
  the matrix planner changes bounds and costs in place and continues HiGHS from its
  basis, the cvxpy baseline re-solves its DPP problem from scratch;
* ``rebuild_s_median`` — median wall time of ``Planner(reuse=False).plan`` on the same
  changed requests (at least 3 samples): what a re-plan would cost without the cache.

All times are ``time.perf_counter`` wall times around ``Planner.plan``. Extra keys split
them (``*_build_s`` = Python problem construction, ``*_compile_s`` = cvxpy
canonicalisation, ``*_highs_s`` = the solver's own time, read from the cached cvxpy
problem), count fallbacks (``plan.fallback is not None``: time-out, infeasible, solver
error) and compare the objectives of the DPP re-solve and of the rebuild on the same
request (``objective_rel_diff_max``; they must agree).

The request is synthetic and seeded: sessions arrive at a random step, stay 1–12 h
(clipped to the horizon; first/last step partly plugged), at 3.7/7.4/11/22 kW with an
energy need of 5–50 kWh capped at 90 % of what the session could take; N/20 sites whose
connection cap is 35–70 % of their peak plugged-in power (so it binds at the peak); one
feeder capped at 80 % of the fleet's peak under those site caps, tightened to 70 % of that
by a DSO limit 17:00–20:00; no fleet cap; an hourly day-ahead-like price curve
(EUR/MWh). ``--reserve-kw`` adds a constant fleet reserve (default 0), ``--v2g-frac``
makes a share of the sessions bidirectional (default 0).

Usage (from the repo root)::

    python benchmarks/planner.py --evses 1000,10000 --steps 96 --json --baseline
    python benchmarks/planner.py --evses 10000 --steps 96 --reserve-kw 1000 --json
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

try:
    import aggregator  # noqa: F401
except ImportError:  # not installed: run from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from _machine import machine_info

from aggregator.limits import Caps
from aggregator.planning.optimizer import Planner
from aggregator.planning.request import Plan, PlanRequest, PlanWeights

STEP_S = 900.0
START = datetime(2026, 11, 21, tzinfo=UTC)
MIN_REBUILDS = 3


def price_curve(steps: int, step_s: float, rng: np.random.Generator) -> np.ndarray:
    """Hourly day-ahead-like prices (EUR/MWh): night trough, solar dip, evening peak."""
    hours = int(np.ceil(steps * step_s / 3600.0))
    hod = np.arange(hours) % 24
    shape = (
        85.0
        + 35.0 * np.exp(-(((hod - 8.0) / 1.5) ** 2))
        - 45.0 * np.exp(-(((hod - 13.0) / 2.5) ** 2))
        + 70.0 * np.exp(-(((hod - 19.0) / 1.8) ** 2))
        - 20.0 * ((hod <= 4) | (hod >= 23))
    )
    hourly = shape + rng.normal(0.0, 8.0, hours)
    per_step = np.repeat(hourly, max(1, round(3600.0 / step_s)))[:steps]
    return per_step.astype(np.float64)


def make_request(
    n: int,
    steps: int,
    rng: np.random.Generator,
    *,
    reserve_kw: float = 0.0,
    v2g_frac: float = 0.0,
    step_s: float = STEP_S,
) -> PlanRequest:
    """A realistic, seeded planning problem for ``n`` sessions over ``steps`` steps."""
    h = step_s / 3600.0
    n_sites = max(1, n // 20)
    per_hour = max(1, round(1.0 / h))
    first = rng.integers(0, max(1, steps - 1), n)
    dwell = rng.integers(per_hour, 12 * per_hour + 1, n)  # 1–12 h
    last = np.minimum(first + np.maximum(dwell, 1), steps)
    first_frac = rng.uniform(0.2, 1.0, n)
    last_frac = rng.uniform(0.2, 1.0, n)
    pmax = rng.choice([3.7, 7.4, 11.0, 22.0], n, p=[0.10, 0.25, 0.45, 0.20])
    v2g = rng.random(n) < v2g_frac
    pmin = np.where(v2g, -pmax, 0.0)
    plugged_h = np.maximum(last - first - 2, 0) * h + (first_frac + last_frac) * h
    need = np.minimum(rng.uniform(5.0, 50.0, n), 0.9 * pmax * plugged_h)
    budget = np.where(v2g, rng.uniform(5.0, 20.0, n), 0.0)
    site = rng.integers(0, n_sites, n).astype(np.intp)

    # plugged-in power per site and step → connection caps that bind at the site's peak
    occ = np.zeros((n_sites, steps))
    for j in range(n):  # build time only, O(n · dwell)
        occ[site[j], first[j] : last[j]] += pmax[j]
    peak = occ.max(axis=1)
    site_cap = np.where(peak > 0, rng.uniform(0.35, 0.70, n_sites) * peak, 11.0)
    site_cap_t = np.repeat(site_cap[:, None], steps, axis=1)
    feeder_peak = float(np.minimum(occ, site_cap[:, None]).sum(axis=0).max())
    feeder = np.full((1, steps), 0.8 * feeder_peak)
    hod = (np.arange(steps) * h) % 24
    feeder[0, (hod >= 17) & (hod < 20)] *= 0.7  # DSO limit in the evening peak
    caps = Caps(site_cap_t, feeder, np.full(steps, np.inf), site_cap_t.copy())
    return PlanRequest(
        start=START,
        step_s=step_s,
        steps=steps,
        session_site=site,
        first_step=first.astype(np.intp),
        last_step=last.astype(np.intp),
        first_frac=first_frac,
        last_frac=last_frac,
        max_power_kw=pmax,
        min_power_kw=pmin,
        energy_needed_kwh=need,
        discharge_budget_kwh=budget,
        site_feeder=np.zeros(n_sites, dtype=np.intp),
        caps=caps,
        reserve_kw=np.full(steps, float(reserve_kw)),
        price_eur_per_mwh=price_curve(steps, step_s, rng),
        weights=PlanWeights(),
    )


def perturb(req: PlanRequest, rng: np.random.Generator) -> PlanRequest:
    """Same sessions, new prices (× U[0.8, 1.25]) and feeder cap (× U[0.9, 1.1])."""
    assert req.price_eur_per_mwh is not None
    caps = dataclasses.replace(req.caps, feeder_kw=req.caps.feeder_kw * rng.uniform(0.9, 1.1))
    return dataclasses.replace(
        req, price_eur_per_mwh=req.price_eur_per_mwh * rng.uniform(0.8, 1.25), caps=caps
    )


def timed_plan(planner: Planner, req: PlanRequest) -> tuple[Plan, dict[str, float | None]]:
    """Plan and its wall time, plus the build / compile / solver split when available."""
    t0 = time.perf_counter()
    plan = planner.plan(req)
    wall = time.perf_counter() - t0
    compile_s: float | None = None
    highs_s: float | None = plan.solve_s if planner.backend == "matrix" else None
    prob = planner.last_problem if planner.backend == "cvxpy" else None
    if prob is not None:
        compile_s = getattr(prob, "compilation_time", None)
        stats = getattr(prob, "solver_stats", None)
        highs_s = getattr(stats, "solve_time", None) if stats is not None else None
    return plan, {
        "wall_s": wall,
        "build_s": plan.build_s,
        "compile_s": compile_s,
        "highs_s": highs_s,
    }


def binding(req: PlanRequest, plan: Plan, tol_kw: float = 1e-3) -> tuple[float, int]:
    """Share of occupied site-steps at their cap and number of steps at the feeder cap."""
    n, t = req.n_sessions, req.steps
    frac = np.zeros((n, t))
    rows = np.arange(n)
    for j in range(n):  # analysis only, outside the timing
        frac[j, req.first_step[j] : req.last_step[j]] = 1.0
    frac[rows, req.first_step] = req.first_frac
    frac[rows, req.last_step - 1] = np.minimum(frac[rows, req.last_step - 1], req.last_frac)
    x = plan.power_kw * frac
    site = np.zeros((req.n_sites, t))
    np.add.at(site, req.session_site, x)
    occupied = np.zeros((req.n_sites, t), dtype=bool)
    np.logical_or.at(occupied, req.session_site, frac > 0)
    at_cap = (site >= req.caps.site_kw - tol_kw) & occupied
    feeder = site.sum(axis=0)
    share = float(at_cap.sum() / max(occupied.sum(), 1))
    return share, int(np.sum(feeder >= req.caps.feeder_kw[0] - tol_kw))


def _median(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return round(statistics.median(vals), 4) if vals else None


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def run_one(n: int, args: argparse.Namespace, backend: str) -> tuple[dict[str, Any], list[str]]:
    rng = np.random.default_rng([args.seed, n])
    req = make_request(n, args.steps, rng, reserve_kw=args.reserve_kw, v2g_frac=args.v2g_frac)
    n_rebuilds = max(MIN_REBUILDS, args.rebuilds)
    changed = [perturb(req, rng) for _ in range(max(args.resolves, n_rebuilds))]
    errors: list[str] = []
    fallbacks: list[str] = []

    def note(plan: Plan, what: str) -> None:
        if plan.fallback is not None:
            fallbacks.append(f"{what}: {plan.fallback}")

    gc.collect()
    algo = args.highs_algorithm
    planner = Planner(
        args.solver, time_limit_s=args.time_limit, reuse=True, backend=backend, highs_algorithm=algo
    )
    first, first_t = timed_plan(planner, req)
    note(first, "first")

    resolve_t: list[dict[str, float | None]] = []
    resolve_obj: list[float] = []
    for i in range(args.resolves):
        plan, t = timed_plan(planner, changed[i])
        note(plan, f"resolve {i}")
        if plan.rebuilt is not False:
            errors.append(f"N={n} {backend}: resolve {i} rebuilt the problem (expected a re-use)")
        resolve_t.append(t)
        resolve_obj.append(plan.objective)
    del planner
    gc.collect()

    rebuild_t: list[dict[str, float | None]] = []
    rel_diff: list[float] = []
    for i in range(n_rebuilds):
        fresh = Planner(
            args.solver,
            time_limit_s=args.time_limit,
            reuse=False,
            backend=backend,
            highs_algorithm=algo,
        )
        plan, t = timed_plan(fresh, changed[i])
        note(plan, f"rebuild {i}")
        rebuild_t.append(t)
        if i < len(resolve_obj) and plan.fallback is None:
            ref = resolve_obj[i]
            rel_diff.append(abs(plan.objective - ref) / max(abs(ref), 1.0))
        del fresh, plan
        gc.collect()

    site_bind, feeder_bind = binding(req, first)
    resolve_med = _median([t["wall_s"] for t in resolve_t])
    rebuild_med = _median([t["wall_s"] for t in rebuild_t])
    lengths = req.last_step - req.first_step
    result: dict[str, Any] = {
        "evses": n,
        "steps": args.steps,
        "first_solve_s": _r(first_t["wall_s"]),
        "resolve_s_median": resolve_med,
        "rebuild_s_median": rebuild_med,
        "solver": args.solver,
        "backend": backend,
        "highs_algorithm": args.highs_algorithm if backend == "matrix" else "cvxpy default",
        "fallbacks": len(fallbacks),
        "rebuild_over_resolve": (
            round(rebuild_med / resolve_med, 2) if resolve_med and rebuild_med else None
        ),
        "first_build_s": _r(first_t["build_s"]),
        "first_compile_s": _r(first_t["compile_s"]),
        "first_highs_s": _r(first_t["highs_s"]),
        "resolve_s": [_r(t["wall_s"]) for t in resolve_t],
        "resolve_compile_s_median": _median([t["compile_s"] for t in resolve_t]),
        "resolve_highs_s_median": _median([t["highs_s"] for t in resolve_t]),
        "rebuild_s": [_r(t["wall_s"]) for t in rebuild_t],
        "rebuild_compile_s_median": _median([t["compile_s"] for t in rebuild_t]),
        "rebuild_highs_s_median": _median([t["highs_s"] for t in rebuild_t]),
        "objective_rel_diff_max": float(f"{max(rel_diff):.3g}") if rel_diff else None,
        "objective_first": first.objective,
        "status": first.status,
        "sites": req.n_sites,
        "variables_x": int(lengths.sum()),
        "shortfall_share": round(
            float(first.shortfall_kwh.sum() / max(req.energy_needed_kwh.sum(), 1e-9)), 4
        ),
        "site_steps_at_cap_share": round(site_bind, 3),
        "feeder_steps_at_cap": feeder_bind,
        "reserve_kw": args.reserve_kw,
        "v2g_frac": args.v2g_frac,
        "seed": args.seed,
    }
    if fallbacks:
        result["fallback_reasons"] = fallbacks[:5]
    return result, errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evses", default="1000,10000", help="comma-separated session counts")
    ap.add_argument("--steps", type=int, default=96, help="horizon in 15-min steps")
    ap.add_argument("--resolves", type=int, default=5, help="DPP re-solves per N")
    ap.add_argument("--rebuilds", type=int, default=MIN_REBUILDS, help="fresh rebuilds per N (≥ 3)")
    ap.add_argument("--solver", default="HIGHS", help="HIGHS, CLARABEL or a cvxpy solver name")
    ap.add_argument(
        "--highs-algorithm", default="auto", help="auto (default), simplex, ipm or pdlp"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reserve-kw", type=float, default=0.0, help="constant fleet reserve")
    ap.add_argument("--v2g-frac", type=float, default=0.0, help="share of V2G sessions")
    ap.add_argument("--time-limit", type=float, default=120.0, help="solver limit per solve (s)")
    ap.add_argument("--json", action="store_true", help="print exactly one JSON line")
    ap.add_argument(
        "--baseline",
        action="store_true",
        help="also run the cvxpy formulation (the planner before issue 8) in the same run",
    )
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.evses.split(",") if s.strip()]
    if not sizes or min(sizes) < 1 or args.steps < 2 or args.resolves < 1:
        ap.error("need --evses ≥ 1, --steps ≥ 2 and --resolves ≥ 1")

    results: list[dict[str, Any]] = []
    errors: list[str] = []
    backends = ["matrix", "cvxpy"] if args.baseline else ["matrix"]
    for n in sizes:
        by_backend: dict[str, dict[str, Any]] = {}
        for backend in backends:
            res, errs = run_one(n, args, backend)
            by_backend[backend] = res
            errors += errs
            if not args.json:
                print(
                    f"planner: N={n} T={args.steps} {args.solver} [{backend}]: first "
                    f"{res['first_solve_s']:.2f} s (build {res['first_build_s']:.2f}, compile "
                    f"{res['first_compile_s']}, solver {res['first_highs_s']}); re-plan median "
                    f"{res['resolve_s_median']:.2f} s; fresh rebuild median "
                    f"{res['rebuild_s_median']:.2f} s; fallbacks {res['fallbacks']}",
                    flush=True,
                )
        res = by_backend["matrix"]
        if "cvxpy" in by_backend:
            base = by_backend["cvxpy"]
            res["baseline"] = base
            if res["resolve_s_median"] and base["resolve_s_median"]:
                res["resolve_over_baseline"] = round(
                    res["resolve_s_median"] / base["resolve_s_median"], 3
                )
            gap = abs(res["objective_first"] - base["objective_first"])
            gap /= max(abs(base["objective_first"]), 1.0)
            res["objective_rel_diff_vs_baseline"] = float(f"{gap:.3g}")
            if not args.json:
                print(
                    f"planner: N={n}: re-plan median / baseline = "
                    f"{res.get('resolve_over_baseline')}",
                    flush=True,
                )
        results.append(res)
    if args.json:
        out: dict[str, Any] = {"results": results, "machine": machine_info()}
        if errors:
            out["errors"] = errors
        print(json.dumps(out))
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
