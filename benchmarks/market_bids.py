"""Markets benchmark: forecast + bids for a large pool, and the plan holding awarded reserve.

What is measured (wall times, ``time.perf_counter``):

* ``history_s`` — building the synthetic history (not part of the target): ``--weeks``
  weeks of sessions of ``--evses`` EVSEs (:func:`adapters.files.history.generate_history`,
  the demo's patterns) on ``evses/20`` sites (connection caps 40–150 kW) under
  ``sites/20`` feeders (caps 60 % of their sites' caps, 70 % of that 17:00–20:00 UTC, a
  DSO limit);
* ``forecast_s`` — :func:`markets.forecast.forecast_flexibility` for one delivery day
  (96 quarter-hours) with ``--scenarios`` scenarios, reservoir 15 min;
* ``bid_s`` — FCR bids, then aFRR bids on what FCR leaves (:func:`markets.bids.make_bids`);
* ``forecast_and_bid_s`` = forecast_s + bid_s, target ≤ 60 s (``within_target``);
* ``plan_s`` — with ``--plan``: a fresh ``Planner(time_limit_s=--plan-time-limit)`` plan of the
  10 000 × 96 request of ``benchmarks/planner.py`` (``make_request``) holding an
  awarded reserve per 4 h block: FCR 1 MW in blocks 1–5, aFRR NEG 1 MW in blocks 1, 4, 5
  and POS 1 MW in blocks 2, 3 (up 0/2/1/1/2/2 MW, down 0/1/2/2/1/1 MW; block 0 has none:
  the synthetic fleet arrives from 00:00 on and holds ~1 MW of range in its first step), via
  :func:`markets.bids.reserve_schedule` and ``ReserveSchedule.for_steps``. A fallback
  fails the run (exit 1); ``reserve_missed_kw_max`` is the largest per-step gap between
  the awarded and the planned reserve (0 = every block held in full).

Usage (from the repo root)::

    python benchmarks/market_bids.py --evses 10000 --scenarios 200 --plan --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dataclasses

import numpy as np
from _machine import machine_info
from planner import START, make_request

from adapters.files.history import generate_history
from aggregator.limits import Caps
from aggregator.planning.optimizer import Planner
from markets.bids import AFRR_RULES, FCR_RULES, Award, delivery_day, make_bids, reserve_schedule
from markets.forecast import SessionHistory, StepGrid, forecast_flexibility

DAY = date(2026, 1, 14)


def _pool(evses: int, rng: np.random.Generator, day_start: float, steps: int) -> StepGrid:
    n_sites = max(1, evses // 20)
    n_feeders = max(1, n_sites // 20)
    site_kw = rng.uniform(40.0, 150.0, n_sites)
    site_feeder = (np.arange(n_sites) % n_feeders).astype(np.intp)
    feeder_kw = 0.6 * np.bincount(site_feeder, weights=site_kw, minlength=n_feeders)
    feeder = np.repeat(feeder_kw[:, None], steps, axis=1)
    hod = ((day_start + 900.0 * np.arange(steps)) % 86_400) / 3600.0
    feeder[:, (hod >= 17) & (hod < 20)] *= 0.7
    site = np.repeat(site_kw[:, None], steps, axis=1)
    caps = Caps(site, feeder, np.full(steps, np.inf), site.copy())
    return StepGrid(day_start, 900.0, steps, caps, site_feeder)


def run_bids(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    d = delivery_day(DAY)
    grid = _pool(args.evses, rng, d.start.timestamp(), d.steps)
    sites = [f"site-{i:04d}" for i in range(grid.n_sites)]
    t0 = time.perf_counter()
    first = datetime.combine(DAY, datetime.min.time(), tzinfo=UTC) - timedelta(weeks=args.weeks)
    specs = generate_history(
        sites, evses=args.evses, first_day=first, days=7 * args.weeks, seed=args.seed
    )
    history = SessionHistory.from_specs(specs, sites)
    history_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    fc = forecast_flexibility(
        history, grid, d.blocks, n_scenarios=args.scenarios, reservoir_s=900.0, seed=args.seed
    )
    forecast_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    made = d.gate(FCR_RULES.gate_local) - timedelta(hours=1)
    fcr = make_bids(fc, d, FCR_RULES, created_at=made)
    sym = np.array([1000.0 * fcr.volume_mw("SYM", b) for b in range(d.blocks.n)])
    afrr = make_bids(fc.less(sym, sym), d, AFRR_RULES, created_at=made)
    bid_s = time.perf_counter() - t2
    total = forecast_s + bid_s
    return {
        "evses": args.evses,
        "sites": grid.n_sites,
        "feeders": int(grid.caps.feeder_kw.shape[0]),
        "history_sessions": history.sessions.size,
        "history_weeks": args.weeks,
        "scenarios": args.scenarios,
        "past_days": fc.past_days,
        "history_s": round(history_s, 2),
        "forecast_s": round(forecast_s, 2),
        "bid_s": round(bid_s, 3),
        "forecast_and_bid_s": round(total, 2),
        "target_s": 60.0,
        "within_target": total <= 60.0,
        "fcr_mw_per_block": [fcr.volume_mw("SYM", b) for b in range(d.blocks.n)],
        "afrr_pos_mw_per_block": [afrr.volume_mw("POS", b) for b in range(d.blocks.n)],
        "afrr_neg_mw_per_block": [afrr.volume_mw("NEG", b) for b in range(d.blocks.n)],
        "energy_bids": len(afrr.energy_bids),
    }


def run_plan(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng([args.seed, args.plan_evses])
    req = make_request(args.plan_evses, 96, rng)
    awards = []
    for b in range(1, 6):  # make_request's fleet starts empty at 00:00: block 0 has no award
        s = START + timedelta(hours=4 * b)
        e = s + timedelta(hours=4)
        awards.append(Award("FCR", s, e, "SYM", 1.0))
        awards.append(Award("aFRR", s, e, "NEG" if b in (0, 1, 4, 5) else "POS", 1.0))
    up, down = reserve_schedule(awards).for_steps(START.timestamp(), req.step_s, req.steps)
    req = dataclasses.replace(req, reserve_up_kw=up, reserve_down_kw=down)
    planner = Planner(time_limit_s=args.plan_time_limit, reuse=False)
    t0 = time.perf_counter()
    plan = planner.plan(req)
    plan_s = time.perf_counter() - t0
    missed_up = np.maximum(up - plan.reserve_up_kw.sum(axis=0), 0.0)
    missed_down = np.maximum(down - plan.reserve_down_kw.sum(axis=0), 0.0)
    return {
        "plan_evses": args.plan_evses,
        "plan_steps": 96,
        "plan_s": round(plan_s, 2),
        "plan_time_limit_s": args.plan_time_limit,
        "plan_status": plan.status,
        "plan_solver": plan.solver,
        "fallback": plan.fallback,
        "reserve_up_kw_per_block": [float(up[16 * b]) for b in range(6)],
        "reserve_down_kw_per_block": [float(down[16 * b]) for b in range(6)],
        "reserve_missed_kw_max": round(float(max(missed_up.max(), missed_down.max())), 3),
        "reserve_missed_kw_per_block": [
            round(
                float(
                    max(
                        missed_up[16 * b : 16 * b + 16].max(),
                        missed_down[16 * b : 16 * b + 16].max(),
                    )
                ),
                3,
            )
            for b in range(6)
        ],
        "shortfall_share": round(
            float(plan.shortfall_kwh.sum() / max(req.energy_needed_kwh.sum(), 1e-9)), 4
        ),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--evses", type=int, default=10_000)
    p.add_argument("--scenarios", type=int, default=200)
    p.add_argument("--weeks", type=int, default=12)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--plan", action="store_true", help="also plan 10 000 x 96 with the reserve")
    p.add_argument("--plan-evses", type=int, default=10_000)
    p.add_argument(
        "--plan-time-limit", type=float, default=120.0, help="s (the service's default: 120)"
    )
    p.add_argument("--plan-only", action="store_true", help="skip the forecast and bids")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result: dict[str, Any] = {}
    ok = True
    if not args.plan_only:
        result["bids"] = run_bids(args)
        ok = bool(result["bids"]["within_target"])
    if args.plan or args.plan_only:
        result["plan"] = run_plan(args)
        ok = ok and result["plan"]["fallback"] is None
    result["machine"] = machine_info()
    print(json.dumps(result, indent=2) if args.json else result)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
