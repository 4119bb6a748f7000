"""Golden planner cases as data: ``tests/data/planner/<case>/{input,params,expected}.json``.

``input.json`` is a :class:`PlanRequest` in JSON (``null`` caps = no limit),
``params.json`` holds the tolerances and the solvers to run, ``expected.json`` the
answer: objective, energy and shortfall per session, and, where the optimum is unique,
the power per session and step, or the reserve per step. Every case runs on HiGHS and
on Clarabel (same model, two algorithms) and on the cvxpy baseline formulation, and
every plan is also checked against the request's caps and energy bounds.

Regenerate an ``expected.json`` only after checking the new numbers by hand:
``python tests/aggregator/planning/test_golden.py --write <case>``.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aggregator.limits import Caps
from aggregator.planning.optimizer import Planner
from aggregator.planning.request import Plan, PlanRequest, PlanWeights

DATA = Path(__file__).resolve().parents[2] / "data" / "planner"
CASES = sorted(p.name for p in DATA.iterdir() if (p / "input.json").exists())


def _arr(x: Any) -> np.ndarray:
    return np.array([np.inf if v is None else v for v in np.ravel(x)], dtype=np.float64).reshape(
        np.shape(x)
    )


def load_request(case: str) -> PlanRequest:
    d = json.loads((DATA / case / "input.json").read_text())
    s = d["sessions"]

    def col(name: str) -> np.ndarray:
        return np.array([x[name] for x in s], dtype=np.float64)

    c = d["caps"]
    return PlanRequest(
        start=datetime.fromisoformat(d["start"]),
        step_s=float(d["step_s"]),
        steps=int(d["steps"]),
        session_site=np.array([x["site"] for x in s], dtype=np.intp),
        first_step=np.array([x["first_step"] for x in s], dtype=np.intp),
        last_step=np.array([x["last_step"] for x in s], dtype=np.intp),
        first_frac=col("first_frac"),
        last_frac=col("last_frac"),
        max_power_kw=col("max_power_kw"),
        min_power_kw=col("min_power_kw"),
        energy_needed_kwh=col("energy_needed_kwh"),
        discharge_budget_kwh=col("discharge_budget_kwh"),
        site_feeder=np.array(d["site_feeder"], dtype=np.intp),
        caps=Caps(
            _arr(c["site_kw"]), _arr(c["feeder_kw"]), _arr(c["fleet_kw"]), _arr(c["site_export_kw"])
        ),
        reserve_kw=_arr(d["reserve_kw"]),
        price_eur_per_mwh=None if d["price_eur_per_mwh"] is None else _arr(d["price_eur_per_mwh"]),
        weights=PlanWeights(**d["weights"]),
    )


def _answer(plan: Plan) -> dict[str, Any]:
    return {
        "objective": plan.objective,
        "energy_kwh": plan.energy_kwh.tolist(),
        "shortfall_kwh": plan.shortfall_kwh.tolist(),
        "power_kw": plan.power_kw.tolist(),
        "reserve_up_total_kw": plan.reserve_up_kw.sum(axis=0).tolist(),
        "reserve_down_total_kw": plan.reserve_down_kw.sum(axis=0).tolist(),
    }


def _respects(req: PlanRequest, plan: Plan, tol: float = 1e-5) -> None:
    frac = req.plugged_fraction()
    avg = plan.power_kw * frac
    assert np.all(avg[frac == 0] == 0)
    assert np.all(plan.power_kw <= req.max_power_kw[:, None] + tol)
    assert np.all(plan.power_kw >= req.min_power_kw[:, None] - tol)
    site = np.zeros((req.n_sites, req.steps))
    np.add.at(site, req.session_site, avg)
    assert np.all(site + plan.reserve_up_kw <= req.caps.site_kw + tol)
    assert np.all(site >= -req.caps.site_export_kw - tol)
    feeder = np.zeros((req.n_feeders, req.steps))
    np.add.at(feeder, req.site_feeder, site)
    assert np.all(feeder <= req.caps.feeder_kw + tol)
    cum = np.cumsum(avg, axis=1) * req.step_h
    assert np.all(cum >= -req.discharge_budget_kwh[:, None] - tol)
    assert np.all(cum <= req.energy_needed_kwh[:, None] + tol)


@pytest.mark.parametrize("backend", ["matrix", "cvxpy"])
@pytest.mark.parametrize("solver", ["HIGHS", "CLARABEL"])
@pytest.mark.parametrize("case", CASES)
def test_golden_case(case: str, solver: str, backend: str) -> None:
    params = json.loads((DATA / case / "params.json").read_text())
    if solver not in params["solvers"]:
        pytest.fail(f"{case}: params.json must list {solver}")  # every case runs on both
    expected = json.loads((DATA / case / "expected.json").read_text())
    req = load_request(case)
    plan = Planner(solver, backend=backend).plan(req)
    assert plan.fallback is None, plan.fallback
    _respects(req, plan)
    assert plan.objective == pytest.approx(
        expected["objective"], rel=params["objective_rel_tol"], abs=params["objective_abs_tol"]
    )
    e_tol = params["energy_abs_tol_kwh"]
    np.testing.assert_allclose(plan.energy_kwh, expected["energy_kwh"], atol=e_tol)
    np.testing.assert_allclose(plan.shortfall_kwh, expected["shortfall_kwh"], atol=e_tol)
    if params.get("power_abs_tol_kw") is not None:  # the optimum is unique
        np.testing.assert_allclose(
            plan.power_kw, expected["power_kw"], atol=params["power_abs_tol_kw"]
        )
    # the up reserve fits under every cap in these cases: it is kept in every step
    assert np.all(plan.reserve_up_kw.sum(axis=0) >= req.reserve_kw - 1e-4)
    if params.get("reserve_down_sum_abs_tol_kw") is not None:  # unique over the horizon
        assert plan.reserve_down_kw.sum() == pytest.approx(
            sum(expected["reserve_down_total_kw"]), abs=params["reserve_down_sum_abs_tol_kw"]
        )


if __name__ == "__main__":  # regenerate expected.json of the named cases (check them!)
    if len(sys.argv) < 3 or sys.argv[1] != "--write":
        sys.exit("usage: test_golden.py --write <case> [<case> ...]")
    for name in sys.argv[2:]:
        answer = _answer(Planner("HIGHS").plan(load_request(name)))
        (DATA / name / "expected.json").write_text(json.dumps(answer, indent=1) + "\n")
        print(
            name, json.dumps({k: answer[k] for k in ("objective", "energy_kwh", "shortfall_kwh")})
        )
