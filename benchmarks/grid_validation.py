"""Grid-validation benchmark: 96-step AC power flow, power-grid-model batch vs pandapower loop.

What is measured, per SimBench grid (default: the 15-bus LV grid ``1-LV-rural1--0-sw`` and
the 10 458-bus MV/LV grid ``1-MVLV-urban-all-0-sw``):

* ``engine_s`` — median wall time of ``grid.powerflow.run_timeseries(engine="pgm")`` over
  ``--repeats`` runs (default 3) after one warm-up call. The warm-up converts the net
  (cached afterwards) and is reported as ``engine_first_s``. ``engine_cpu_s`` is the
  process CPU time of the median run (all threads), to tell slow code from a busy machine.
* ``pandapower_s`` — wall time of one ``run_timeseries(engine="pandapower")`` run (a loop
  of ``pandapower.runpp(numba=False)``). When a timed probe of ``--probe-steps`` steps
  predicts more than ``--pp-budget-s`` (default 600 s) for all steps, only the probe is
  run and scaled to all steps; the output then says so with
  ``pandapower_extrapolated_from_steps``.

Both engines get the same inputs: 96 consecutive 15-min steps of 2016-01-14 (UTC; the
SimBench profiles of that winter Thursday) with the grid's own loads and generation from
its profiles, plus EV charging at ``--sites`` sites placed by ``grid.place_sites`` (seed 0):
11 kW × (site number mod 4 + 1) from 17:00 to 22:00, power factor 0.95. Outside the
timing the two results are compared (``max_dvm_pu``, ``max_dloading_pct`` over buses,
lines and transformers); the script exits with status 1 if they differ by more than the
stated tolerance of ``grid.powerflow`` or if a step did not converge.

Usage (from the repo root)::

    python benchmarks/grid_validation.py --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

try:
    import grid  # noqa: F401
except ImportError:  # not installed: run from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from _machine import machine_info
from numpy.typing import NDArray

from grid import load_feeder, place_sites
from grid.feeders import FeederModel
from grid.powerflow import LOADING_TOLERANCE_PCT, VM_TOLERANCE_PU, PowerFlowResult, run_timeseries

START = datetime(2016, 1, 14, tzinfo=UTC)
STEP = timedelta(minutes=15)
POWER_FACTOR = 0.95
TARGET_S = 0.5
BIG_GRID = "1-MVLV-urban-all-0-sw"


def ev_load(
    model: FeederModel, times: list[datetime], sites: int
) -> dict[str, NDArray[np.float64]]:
    """Per-bus EV charging (kW): 11 kW × (site number mod 4 + 1) from 17:00 to 22:00."""
    evening = np.array([17 <= t.hour < 22 for t in times], dtype=float)
    extra: dict[str, NDArray[np.float64]] = {}
    for i, site in enumerate(place_sites(model, sites, seed=0)):
        extra[site.bus] = extra.get(site.bus, np.zeros(len(times))) + 11.0 * (i % 4 + 1) * evening
    return extra


def timed(fn: Any) -> tuple[Any, float, float]:
    """``(result, wall_s, cpu_s)`` of ``fn()``."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def compare(a: PowerFlowResult, b: PowerFlowResult) -> dict[str, Any]:
    def gap(x: NDArray[np.float64], y: NDArray[np.float64]) -> float:
        same_nan = bool(np.array_equal(np.isnan(x), np.isnan(y)))
        return float(np.nanmax(np.abs(x - y), initial=0.0)) if same_nan else float("inf")

    return {
        "max_dvm_pu": gap(a.vm_pu, b.vm_pu),
        "max_dloading_pct": max(
            gap(a.line_loading_pct, b.line_loading_pct),
            gap(a.trafo_loading_pct, b.trafo_loading_pct),
        ),
        "converged": bool(a.converged.all() and b.converged.all()),
    }


def run_grid(code: str, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    model, load_s, _ = timed(lambda: load_feeder(code))
    times = [START + i * STEP for i in range(args.steps)]
    extra = ev_load(model, times, args.sites)

    def pgm() -> PowerFlowResult:
        return run_timeseries(model, times, extra, engine="pgm", power_factor=POWER_FACTOR)

    result, first_s, _ = timed(pgm)
    runs = [timed(pgm) for _ in range(args.repeats)]
    median_run = sorted(runs, key=lambda r: r[1])[len(runs) // 2]
    row: dict[str, Any] = {
        "code": code,
        "buses": model.buses,
        "steps": args.steps,
        "engine": "pgm",
        "engine_s": round(statistics.median(r[1] for r in runs), 4),
        "pandapower_s": None,
        "engine_runs_s": [round(r[1], 4) for r in runs],
        "engine_cpu_s": round(median_run[2], 4),
        "engine_first_s": round(first_s, 4),
        "load_s": round(load_s, 2),
        "ev_sites": args.sites,
        "ev_buses": len(extra),
    }
    probe = min(args.probe_steps, args.steps)
    _, probe_s, _ = timed(
        lambda: run_timeseries(
            model,
            times[:probe],
            {b: v[:probe] for b, v in extra.items()},
            engine="pandapower",
            power_factor=POWER_FACTOR,
        )
    )
    if probe_s / probe * args.steps > args.pp_budget_s:
        row["pandapower_s"] = round(probe_s / probe * args.steps, 2)
        row["pandapower_extrapolated_from_steps"] = probe
        row["agreement_steps"] = 0
    else:
        ref, pp_s, _ = timed(
            lambda: run_timeseries(
                model, times, extra, engine="pandapower", power_factor=POWER_FACTOR
            )
        )
        row["pandapower_s"] = round(pp_s, 2)
        row.update(compare(result, ref))
        row["agreement_steps"] = args.steps
    row["ratio"] = round(row["pandapower_s"] / row["engine_s"], 1)
    row["max_line_loading_pct"] = round(result.max_line_loading_pct(), 2)
    row["max_trafo_loading_pct"] = round(result.max_trafo_loading_pct(), 2)
    row["min_vm_pu"] = round(result.min_voltage_pu(), 4)
    row["violations"] = len(result.violations())
    errors = []
    if row.get("converged") is False or not result.converged.all():
        errors.append(f"{code}: a step did not converge")
    if row.get("max_dvm_pu", 0.0) > VM_TOLERANCE_PU:
        errors.append(f"{code}: voltages differ by {row['max_dvm_pu']} pu")
    if row.get("max_dloading_pct", 0.0) > LOADING_TOLERANCE_PCT:
        errors.append(f"{code}: loadings differ by {row['max_dloading_pct']} pp")
    return row, errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grids", default=f"1-LV-rural1--0-sw,{BIG_GRID}", help="SimBench codes")
    ap.add_argument("--steps", type=int, default=96, help="15-min steps from 2016-01-14 00:00")
    ap.add_argument("--repeats", type=int, default=3, help="timed pgm runs (median)")
    ap.add_argument("--sites", type=int, default=20, help="EV sites placed on each grid")
    ap.add_argument("--probe-steps", type=int, default=4, help="pandapower probe length")
    ap.add_argument("--pp-budget-s", type=float, default=600.0, help="full pandapower run if ≤")
    ap.add_argument("--json", action="store_true", help="print exactly one JSON line")
    args = ap.parse_args(argv)
    codes = [c.strip() for c in args.grids.split(",") if c.strip()]
    if not codes or args.steps < 1 or args.repeats < 1 or args.probe_steps < 1:
        ap.error("need grids, --steps ≥ 1, --repeats ≥ 1 and --probe-steps ≥ 1")

    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    for code in codes:
        row, errs = run_grid(code, args)
        rows.append(row)
        errors += errs
        if not args.json:
            extrapolated = row.get("pandapower_extrapolated_from_steps")
            note = f" (extrapolated from {extrapolated} steps)" if extrapolated else ""
            print(
                f"{code}: {row['buses']} buses × {row['steps']} steps: pgm {row['engine_s']} s "
                f"(cpu {row['engine_cpu_s']} s, first {row['engine_first_s']} s), pandapower "
                f"{row['pandapower_s']} s{note}, ×{row['ratio']}; max |Δvm| "
                f"{row.get('max_dvm_pu')} pu, max |Δloading| {row.get('max_dloading_pct')} pp",
                flush=True,
            )
    out: dict[str, Any] = {"grids": rows, "target_s": TARGET_S}
    big = [r for r in rows if r["code"] == BIG_GRID]
    if big:
        out["target_met"] = big[0]["engine_s"] <= TARGET_S
    versions = ("pandapower", "simbench", "power-grid-model", "power-grid-model-io")
    out["versions"] = {name: metadata.version(name) for name in versions}
    out["machine"] = machine_info()
    if errors:
        out["errors"] = errors
    if args.json:
        print(json.dumps(out))
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
