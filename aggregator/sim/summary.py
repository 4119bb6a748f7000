"""The figures a closed-loop simulation reports (its summary) and its AC grid figures.

Pure functions of what the run measured: no state, no I/O. Keys carry their unit
(``_kw``, ``_kwh``, ``_s``, ``_ms``, ``_pct``, ``_pu``) so reports can label them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from aggregator.planning.gridloop import GridModel, GridRepair
from aggregator.service.replica import Service
from aggregator.sim.bound import energy_bound_kwh
from aggregator.sim.scenario import Scenario, uncontrolled_site_kw

__all__ = ["grid_summary", "run_summary"]


def run_summary(
    scenario: Scenario,
    svc: Service,
    setpoint_batches: int,
    want: NDArray[np.float64],
    got: NDArray[np.float64],
    max_excess: float,
    fcr_req: NDArray[np.float64],
    fcr_got: NDArray[np.float64],
    n: int,
    grid: GridModel | None,
) -> dict[str, Any]:
    """The run's headline figures (energy, limits, FCR, plans, loop timings)."""
    solve = list(svc.plan_s)
    fast_ms = np.array(svc.dispatch_s) * 1000.0
    active = fcr_req != 0
    err = (fcr_got - fcr_req)[active] if active.any() else np.zeros(1)
    bound = energy_bound_kwh(scenario)  # a relaxation: no schedule beats it (sim/bound.py)
    delivered = float(got.sum())
    return {
        "scenario": scenario.name,
        "feeder": scenario.feeder,
        "evses": len({s.evse_id for s in scenario.sessions}),
        "sessions": n,
        "sites": scenario.topology.n_sites,
        "energy_requested_kwh": round(float(want.sum()), 3),
        "energy_bound_kwh": round(bound, 3),
        "energy_delivered_kwh": round(delivered, 3),
        "delivered_share_of_bound": round(delivered / bound, 4) if bound > 0 else 1.0,
        "max_limit_excess_kw": round(max_excess, 6),
        "fcr_reserve_kw": scenario.reserve_kw,
        "fcr_tracking_error_kw_rms": round(float(np.sqrt(np.mean(err**2))), 4),
        "fcr_activations": int(active.sum()),
        "plans": svc.counters["plans"],
        "plan_fallbacks": int(svc.counters["plans.fallback"]),
        "plan_solve_s_median": round(float(np.median(solve)), 4) if solve else 0.0,
        "fast_loop_ms_p50": round(float(np.percentile(fast_ms, 50)), 4) if fast_ms.size else 0.0,
        "fast_loop_ms_p99": round(float(np.percentile(fast_ms, 99)), 4) if fast_ms.size else 0.0,
        "setpoint_batches": setpoint_batches,
        "rejected_messages": int(
            sum(v for k, v in svc.counters.items() if k.startswith("rejected"))
            + svc.fleet.counters["rejected"]
        ),
        "solver": scenario.solver,
        "step_s": scenario.step_s,
        "tick_s": scenario.dispatch_tick_s,
    }


def grid_summary(
    scenario: Scenario, grid: GridModel, dispatched_kw: NDArray[np.float64], svc: Service
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """AC figures of the dispatched schedule and of uncontrolled charging (step means), the
    margin the plans kept, and what the grid repair cost: per plan step, the planned
    energy the last plan of that step lost to the repair in that step (kWh, per feeder)."""
    done = grid.check(scenario.start, scenario.step_s, dispatched_kw)
    free = grid.check(scenario.start, scenario.step_s, uncontrolled_site_kw(scenario))
    repairs = dict(getattr(svc, "grid_repairs", {}))  # per plan step: the last plan's repair
    n_feeders = scenario.topology.n_feeders
    cost = np.zeros(n_feeders)
    for rep in repairs.values():
        if isinstance(rep, GridRepair):
            cost += np.asarray(rep.first_step_cost_kwh_by_feeder, dtype=np.float64)[:n_feeders]
    figures = {
        **done.figures(),
        "grid_violations": len(done.violations),
        "grid_margin_loading_pct": done.margin_loading_pct,
        "grid_margin_voltage_pu": done.margin_voltage_pu,
        "grid_repaired_plans": len(repairs),
        "grid_repair_kwh": round(float(cost.sum()), 3),
        "grid_repair_kwh_by_feeder": {
            f.feeder_id: round(float(c), 3)
            for f, c in zip(scenario.topology.feeders, cost, strict=True)
        },
        **free.figures("uncontrolled_"),
        "uncontrolled_grid_violations": len(free.violations),
        "grid_plan_notes": svc.counters["plans.grid_note"],
    }
    series = {
        "loading_pct": list(done.loading_pct_by_step),
        "uncontrolled_loading_pct": list(free.loading_pct_by_step),
        "min_voltage_pu": list(done.min_voltage_pu_by_step),
        "uncontrolled_min_voltage_pu": list(free.min_voltage_pu_by_step),
    }
    return figures, series
