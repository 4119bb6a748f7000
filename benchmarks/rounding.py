"""Plan rounding benchmark: time at 10 000 × 96, and energy lost against an exact MILP.

What is measured:

1. **Time** of :func:`aggregator.planning.rounding.round_plan` on a 10 000-session ×
   96-step plan (~1 000 sites of ~10 EVSEs, five feeders, tight connection caps, a mix of
   three-phase 4.14 kW and single-phase 1.38 kW minimums). The continuous plan is the
   proportional plan (:func:`~aggregator.planning.fallback.proportional_plan`): the
   rounding's cost depends on the shape of the arrays, not on how optimal the input is,
   and an LP of this size takes tens of seconds (``benchmarks/planner.py``).
   ``--repeat`` runs, median and max reported.
2. **Energy lost** on small cases (``--cases`` seeds, 8 sessions × 12 steps, 2 sites with
   tight caps): the LP (:class:`~aggregator.planning.optimizer.Planner`, continuous; an
   upper bound), the LP rounded by ``round_plan``, and the exact MILP with semi-continuous
   power (``x = 0`` or ``min ≤ x ≤ max`` per plugged step, binaries) solved by
   ``scipy.optimize.milp`` (HiGHS): maximum energy within the same caps and needs.
   Reported: energy of each, the rounding's loss against the MILP (kWh and % of the MILP),
   and against the LP. The rounding may beat the MILP by a little: it lets the step that
   completes a session's energy end below the minimum (the car stops when full), which
   the MILP does not.

Usage (from the repo root)::

    python benchmarks/rounding.py --json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

try:
    import aggregator  # noqa: F401
except ImportError:  # not installed: run from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from _machine import machine_info
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from aggregator.limits import Caps
from aggregator.planning.fallback import index, proportional_plan
from aggregator.planning.optimizer import Planner
from aggregator.planning.request import PlanRequest, PlanWeights
from aggregator.planning.rounding import round_plan

T0 = datetime(2026, 1, 14, tzinfo=UTC)


def synthetic(
    n: int, steps: int, sites: int, feeders: int, site_cap_kw: float, seed: int
) -> tuple[PlanRequest, np.ndarray]:
    """A request and each session's minimum charging power (kW)."""
    rng = np.random.default_rng(seed)
    first = rng.integers(0, max(1, steps - 4), n)
    last = np.minimum(first + rng.integers(4, steps + 1, n), steps)
    pmax = rng.choice([3.7, 7.4, 11.0, 22.0], n, p=[0.1, 0.3, 0.45, 0.15])
    three = rng.random(n) < 0.8
    mins = np.minimum(np.where(three, 4.14, 1.38), pmax)
    plugged_h = (last - first) * 0.25
    need = np.minimum(rng.uniform(4, 40, n), 0.9 * pmax * plugged_h)
    caps = Caps(
        np.full((sites, steps), site_cap_kw),
        np.full((feeders, steps), site_cap_kw * sites / feeders * 0.8),
        np.full(steps, np.inf),
        np.full((sites, steps), site_cap_kw),
    )
    req = PlanRequest(
        start=T0,
        step_s=900.0,
        steps=steps,
        session_site=rng.integers(0, sites, n).astype(np.intp),
        first_step=first.astype(np.intp),
        last_step=last.astype(np.intp),
        first_frac=np.ones(n),
        last_frac=np.ones(n),
        max_power_kw=pmax,
        min_power_kw=np.zeros(n),
        energy_needed_kwh=need,
        discharge_budget_kwh=np.zeros(n),
        site_feeder=(np.arange(sites) % feeders).astype(np.intp),
        caps=caps,
        reserve_kw=np.zeros(steps),
        price_eur_per_mwh=None,
        weights=PlanWeights(),
    )
    return req, mins


def time_rounding(n: int, steps: int, repeat: int, seed: int) -> dict[str, object]:
    sites = max(1, n // 10)
    req, mins = synthetic(n, steps, sites, 5, 30.0, seed)
    plan = proportional_plan(req, "benchmark input")
    times = []
    stats = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        _, stats = round_plan(req, plan, mins)
        times.append(time.perf_counter() - t0)
    assert stats is not None
    return {
        "sessions": n,
        "steps": steps,
        "sites": sites,
        "repeat": repeat,
        "round_s_median": round(float(np.median(times)), 3),
        "round_s_max": round(float(np.max(times)), 3),
        "energy_continuous_kwh": round(stats.energy_continuous_kwh, 1),
        "energy_rounded_kwh": round(stats.energy_rounded_kwh, 1),
        "rounded_up": stats.rounded_up,
        "rounded_down": stats.rounded_down,
        "followable_share": stats.followable_share,
    }


def milp_energy(req: PlanRequest, mins: np.ndarray, time_limit_s: float) -> float:
    """Maximum energy (kWh) with semi-continuous power, within every cap and need."""
    idx = index(req)
    k = idx.size
    h = req.step_h
    s, t = idx.sess_of, idx.step_of
    frac = idx.frac
    # columns: x (k, kW averaged over the step) then z (k, binary)
    c = np.concatenate([-h * np.ones(k), np.zeros(k)])
    rows, cols, vals, lo, hi = [], [], [], [], []
    r = 0

    def add(rr: np.ndarray, cc: np.ndarray, vv: np.ndarray) -> None:
        rows.append(rr)
        cols.append(cc)
        vals.append(vv)

    e = np.arange(k)
    # x − max·frac·z ≤ 0 ; x − min·frac·z ≥ 0
    add(r + e, e, np.ones(k))
    add(r + e, k + e, -req.max_power_kw[s] * frac)
    lo.append(np.full(k, -np.inf))
    hi.append(np.zeros(k))
    r += k
    add(r + e, e, np.ones(k))
    add(r + e, k + e, -mins[s] * frac)
    lo.append(np.zeros(k))
    hi.append(np.full(k, np.inf))
    r += k
    # energy per session
    add(r + s, e, np.full(k, h))
    lo.append(np.full(req.n_sessions, -np.inf))
    hi.append(req.energy_needed_kwh)
    r += req.n_sessions
    # site, feeder, fleet per step
    site_row = req.session_site[s] * req.steps + t
    add(r + site_row, e, np.ones(k))
    lo.append(np.full(req.n_sites * req.steps, -np.inf))
    hi.append(req.caps.site_kw.reshape(-1))
    r += req.n_sites * req.steps
    feeder_row = req.site_feeder[req.session_site[s]] * req.steps + t
    add(r + feeder_row, e, np.ones(k))
    lo.append(np.full(req.n_feeders * req.steps, -np.inf))
    hi.append(req.caps.feeder_kw.reshape(-1))
    r += req.n_feeders * req.steps
    add(r + t, e, np.ones(k))
    lo.append(np.full(req.steps, -np.inf))
    hi.append(np.where(np.isfinite(req.caps.fleet_kw), req.caps.fleet_kw, 1e9))
    r += req.steps
    a = coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(r, 2 * k)
    ).tocsr()
    res = milp(
        c,
        constraints=LinearConstraint(a, np.concatenate(lo), np.concatenate(hi)),
        integrality=np.concatenate([np.zeros(k), np.ones(k)]),
        bounds=Bounds(np.zeros(2 * k), np.concatenate([np.full(k, np.inf), np.ones(k)])),
        options={"time_limit": time_limit_s},
    )
    if res.x is None:
        raise RuntimeError(f"MILP failed: {res.message}")
    return float(-res.fun)


def small_cases(cases: int, seed: int) -> dict[str, object]:
    rows = []
    planner = Planner()
    for i in range(cases):
        req, mins = synthetic(8, 12, 2, 1, 9.0, seed + i)
        req = dataclasses.replace(req, energy_needed_kwh=req.energy_needed_kwh * 0.6)
        plan = planner.plan(req)
        _, stats = round_plan(req, plan, mins)
        exact = milp_energy(req, mins, 60.0)
        rows.append((stats.energy_continuous_kwh, exact, stats.energy_rounded_kwh))
    arr = np.array(rows)
    lp, mi, ro = arr[:, 0], arr[:, 1], arr[:, 2]
    loss = mi - ro
    return {
        "cases": cases,
        "energy_lp_kwh_mean": round(float(lp.mean()), 3),
        "energy_milp_kwh_mean": round(float(mi.mean()), 3),
        "energy_rounded_kwh_mean": round(float(ro.mean()), 3),
        "loss_vs_milp_kwh_mean": round(float(loss.mean()), 3),
        "loss_vs_milp_pct_mean": round(float((loss / mi).mean() * 100), 2),
        "loss_vs_milp_pct_max": round(float((loss / mi).max() * 100), 2),
        "loss_vs_lp_pct_mean": round(float(((lp - ro) / lp).mean() * 100), 2),
        "milp_vs_lp_pct_mean": round(float(((lp - mi) / lp).mean() * 100), 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=96)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cases", type=int, default=20, help="small MILP cases")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print exactly one JSON line")
    args = ap.parse_args(argv)
    res = {
        "timing": time_rounding(args.sessions, args.steps, args.repeat, args.seed),
        "vs_milp": small_cases(args.cases, args.seed),
        "machine": machine_info(),
    }
    if args.json:
        print(json.dumps(res))
    else:
        t, m = res["timing"], res["vs_milp"]
        print(
            f"rounding {t['sessions']} x {t['steps']}: median {t['round_s_median']} s; "  # type: ignore[index]
            f"vs MILP on {m['cases']} small cases: loss {m['loss_vs_milp_pct_mean']} % mean, "  # type: ignore[index]
            f"{m['loss_vs_milp_pct_max']} % max"  # type: ignore[index]
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
