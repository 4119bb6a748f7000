"""The energy-reservoir rule's cost in the plan: the same request without and with it.

The request is ``benchmarks/planner.py``'s (``make_request``, ``--evses`` × 96 steps) with
the awards of ``benchmarks/market_bids.py --plan`` scaled to the pool (per 10 000 EVSEs: FCR
1 MW in blocks 1–5 and aFRR 1 MW, NEG in blocks 1, 4, 5 and POS in 2, 3). It is planned
twice in one process, power headroom only and then with ``reservoir_s``
(:mod:`aggregator.planning.reservoir`), and prints per run the LP's size, wall and CPU
time (``process_time``: the machine is shared), status, fallback, the largest missed
reserve per block, and the CPU ratio with / without.

Usage (from the repo root)::

    python benchmarks/reservoir.py --evses 2000 --reservoir-min 15 --algorithm ipm --json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

# the repo root first (the packages before any script of benchmarks/ with a clashing name)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(1, str(Path(__file__).resolve().parent))

import numpy as np
from _machine import machine_info
from planner import START, make_request

import aggregator.planning.solvers as solvers
from aggregator.planning.fallback import index
from aggregator.planning.lp import build_lp
from aggregator.planning.optimizer import Planner
from aggregator.planning.request import PlanRequest
from markets.bids import Award, reserve_schedule


def _request(evses: int, seed: int) -> PlanRequest:
    req = make_request(evses, 96, np.random.default_rng([seed, evses]))
    mw = evses / 10_000
    awards = []
    for b in range(1, 6):  # make_request's fleet starts empty at 00:00: block 0 has no award
        s = START + timedelta(hours=4 * b)
        e = s + timedelta(hours=4)
        awards.append(Award("FCR", s, e, "SYM", mw))
        awards.append(Award("aFRR", s, e, "NEG" if b in (1, 4, 5) else "POS", mw))
    up, down = reserve_schedule(awards).for_steps(START.timestamp(), req.step_s, req.steps)
    return dataclasses.replace(req, reserve_up_kw=up, reserve_down_kw=down)


def _run(req: PlanRequest, algorithm: str, time_limit_s: float) -> dict[str, Any]:
    m = build_lp(req, index(req))
    planner = Planner(time_limit_s=time_limit_s, reuse=False, highs_algorithm=algorithm)
    t0, c0 = time.perf_counter(), time.process_time()
    plan = planner.plan(req)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    up, down = req.reserve_targets_kw()
    miss_up = np.maximum(up - plan.reserve_up_kw.sum(axis=0), 0.0)
    miss_down = np.maximum(down - plan.reserve_down_kw.sum(axis=0), 0.0)
    return {
        "rows": int(m.a.shape[0]),
        "cols": int(m.a.shape[1]),
        "nnz": int(m.a.nnz),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "status": plan.status,
        "fallback": plan.fallback,
        "missed_up_kw_per_block": [
            round(float(miss_up[16 * b : 16 * b + 16].max()), 1) for b in range(6)
        ],
        "missed_down_kw_per_block": [
            round(float(miss_down[16 * b : 16 * b + 16].max()), 1) for b in range(6)
        ],
        "shortfall_share": round(
            float(plan.shortfall_kwh.sum() / max(req.energy_needed_kwh.sum(), 1e-9)), 4
        ),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--evses", type=int, default=2000)
    p.add_argument("--reservoir-min", type=float, default=15.0)
    p.add_argument("--algorithm", choices=["auto", "simplex", "ipm"], default="auto")
    p.add_argument("--time-limit", type=float, default=120.0, help="the service's plan limit")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.algorithm == "ipm":  # also below the size where "auto" picks it
        solvers.IPM_MIN_ENTRIES_WITH_RESERVE = 0
    req = _request(args.evses, args.seed)
    off = _run(req, args.algorithm, args.time_limit)
    on = _run(
        dataclasses.replace(req, reservoir_s=60.0 * args.reservoir_min),
        args.algorithm,
        args.time_limit,
    )
    out = {
        "machine": machine_info(),
        "evses": args.evses,
        "steps": 96,
        "reservoir_min": args.reservoir_min,
        "algorithm": args.algorithm,
        "power_headroom_only": off,
        "with_reservoir_rule": on,
        "cpu_ratio": round(on["cpu_s"] / max(off["cpu_s"], 1e-9), 2),
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k}: {v}")
    return 0 if on["fallback"] is None else 1


if __name__ == "__main__":
    sys.exit(main())
