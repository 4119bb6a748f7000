"""Grid-aware planning time: 1 000 EVSEs × 96 steps on an LV and an MV SimBench feeder.

Measures the wall time of one complete grid-aware plan — linearise the feeder around the
schedule, solve the LP with the linear grid constraints, AC-check every step with
power-grid-model, re-linearise and re-solve until the AC check passes
(``aggregator.planning.gridloop.successive_plan``) — for the whole 96-step horizon, and for the
4-hour grid horizon the service uses by default. Reports AC violations before (uncontrolled
charging of the same sessions) and after. Issue 3 target: ≤ 10 s for 1 000 × 96.

    python benchmarks/grid_planner.py --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

try:
    import aggregator  # noqa: F401
except ImportError:  # run from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _machine import machine_info

import grid
from aggregator.planning.gridloop import successive_plan
from aggregator.planning.optimizer import Planner
from aggregator.sim.scenario import Scenario, SessionSpec, uncontrolled_site_kw
from aggregator.sim.simulation import oracle_request
from aggregator.topology import Feeder, Topology

START = datetime(2026, 1, 14, 6, tzinfo=UTC)
FEEDERS = {
    "1-LV-urban6--0-sw": {"sites": 40, "kw": (3.7, 7.4, 11.0, 22.0), "kwh": (4.0, 30.0)},
    "1-MV-rural--0-sw": {"sites": 60, "kw": (150.0, 300.0), "kwh": (200.0, 1500.0)},
}


def scenario(code: str, evses: int, seed: int) -> tuple[Scenario, grid.FeederModel]:
    spec = FEEDERS[code]
    model = grid.load_feeder(code)
    placed = grid.place_sites(
        model,
        int(spec["sites"]),
        seed=seed,  # type: ignore[call-overload]
        connection_limit_kw=(1e5, 1e5),
    )
    topo = grid.to_topology(model, placed)
    topo = Topology((Feeder(model.feeder_id, 1e9),), topo.sites)
    rng = np.random.default_rng(seed)
    lo, hi = spec["kwh"]  # type: ignore[misc]
    sessions = []
    for i in range(evses):
        arrival = START + timedelta(hours=float(rng.uniform(0, 14)))
        stay = float(rng.uniform(2, 10))
        kw = float(rng.choice(spec["kw"]))  # type: ignore[arg-type]
        kwh = min(float(rng.uniform(lo, hi)), 0.9 * kw * stay)
        sessions.append(
            SessionSpec(
                f"e{i:05d}",
                placed[i % len(placed)].site_id,
                arrival,
                arrival + timedelta(hours=stay),
                round(kwh, 2),
                kw,
            )
        )
    sc = Scenario(
        name=code,
        feeder=model.feeder_id,
        topology=topo,
        start=START,
        end=START + timedelta(hours=24),
        step_s=900.0,
        sessions=tuple(sessions),
    )
    return sc, model


def measure(code: str, evses: int, repeats: int, seed: int) -> dict[str, object]:
    sc, model = scenario(code, evses, seed)
    fg = grid.FeederGrid(model, sc.topology)
    req = oracle_request(sc)
    free = fg.check(sc.start, sc.step_s, uncontrolled_site_kw(sc))
    out: dict[str, object] = {
        "code": code,
        "buses": model.buses,
        "evses": evses,
        "steps": req.steps,
        "sites": sc.topology.n_sites,
        "uncontrolled_violations": len(free.violations),
    }
    for label, grid_steps in (("full", None), ("service_4h", 16)):
        times, iters, violations = [], [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            res = successive_plan(req, Planner("HIGHS").plan, fg, grid_steps=grid_steps)
            times.append(time.perf_counter() - t0)
            iters.append(res.iterations)
            violations.append(len(res.check.violations) if res.check else -1)
        out[f"{label}_s_median"] = round(statistics.median(times), 3)
        out[f"{label}_s_all"] = [round(t, 3) for t in times]
        out[f"{label}_iterations"] = iters
        out[f"{label}_violations_after"] = violations
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evses", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--grids", default=",".join(FEEDERS))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = [measure(c, args.evses, args.repeats, args.seed) for c in args.grids.split(",")]
    result = {"results": rows, "target_s": 10.0, "machine": machine_info()}
    if args.json:
        print(json.dumps(result))
    else:
        for r in rows:
            print(
                f"{r['code']}: full {r['full_s_median']} s, service horizon "
                f"{r['service_4h_s_median']} s, uncontrolled violations "
                f"{r['uncontrolled_violations']} → {r['full_violations_after']}"
            )


if __name__ == "__main__":
    main()
