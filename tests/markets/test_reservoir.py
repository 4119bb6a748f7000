"""Reservoir check: the reserve a plan can sustain for 15/30 min, by hand and as a bound."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import numpy as np
import pytest

from aggregator.limits import Caps
from aggregator.planning.optimizer import Planner
from aggregator.planning.request import Plan, PlanRequest
from markets.bids.reservoir import reservoir_check
from markets.flexibility import fleet_flexibility_kw
from tests.markets.test_plan_reserve import STEPS, _request

T0 = datetime(2026, 1, 14, tzinfo=UTC)


def _one_car(power: list[float], reserve_kw: float) -> tuple[Plan, PlanRequest]:
    t = len(power)
    req = PlanRequest(
        start=T0,
        step_s=900.0,
        steps=t,
        session_site=np.zeros(1, np.intp),
        first_step=np.zeros(1, np.intp),
        last_step=np.full(1, t, np.intp),
        first_frac=np.ones(1),
        last_frac=np.ones(1),
        max_power_kw=np.array([11.0]),
        min_power_kw=np.zeros(1),
        energy_needed_kwh=np.array([sum(power) / 4]),
        discharge_budget_kwh=np.zeros(1),
        site_feeder=np.zeros(1, np.intp),
        caps=Caps(
            np.full((1, t), 100.0),
            np.full((1, t), 100.0),
            np.full(t, np.inf),
            np.full((1, t), 100.0),
        ),
        reserve_kw=np.full(t, reserve_kw),
    )
    z = np.full((1, t), reserve_kw)
    plan = Plan(
        T0,
        900.0,
        np.array([power]),
        np.zeros(1),
        np.zeros(1),
        z,
        z.copy(),
        0.0,
        "optimal",
        "x",
        0,
        0,
        True,
    )
    return plan, req


def test_one_car_by_hand() -> None:
    # 4 kW for four quarter-hours: after step 0 it still takes 3 kWh; 15 min reservoir
    plan, req = _one_car([4.0, 4.0, 4.0, 4.0], reserve_kw=5.0)
    c = reservoir_check(plan, req, 900.0)
    # up: give back 3 kWh later → 12 kW for 15 min, capped by the power headroom 7 kW
    assert c.up_kw[0] == pytest.approx(7.0)
    assert c.up_kw[2] == pytest.approx(4.0)  # 1 kWh after step 2 → 4 kW
    assert c.up_kw[3] == 0.0  # nothing after the last step
    # down: catch up in (11 − 4) kW × 0.75 h = 5.25 kWh → 21 kW, capped by 4 kW of power
    assert c.down_kw[0] == pytest.approx(4.0)
    assert c.down_kw[2] == pytest.approx(4.0)  # 1.75 kWh → 7 kW, capped at 4
    # held 5 kW: up falls short where the energy runs out, down everywhere (4 kW drawn)
    assert list(c.short_up_steps) == [2, 3] and list(c.short_down_steps) == [0, 1, 2, 3]
    assert not c.ok
    # a 30 min reservoir halves what the energy sustains
    assert reservoir_check(plan, req, 1800.0).up_kw[2] == pytest.approx(2.0)


def test_sustained_reserve_is_bounded_by_the_power_headroom() -> None:
    req = _request(4, 15)
    req = dataclasses.replace(
        req, reserve_up_kw=np.full(STEPS, 4.0), reserve_down_kw=np.full(STEPS, 2.0)
    )
    plan = Planner().plan(req)
    c = reservoir_check(plan, req, 900.0)
    up_p, down_p = fleet_flexibility_kw(plan, req)
    assert np.all(c.up_kw <= up_p + 1e-9) and np.all(c.down_kw <= down_p + 1e-9)
    assert np.all(c.up_kw >= 0) and np.all(c.down_kw >= 0)
    held = plan.reserve_up_kw.sum(axis=0)
    assert set(c.short_up_steps) == set(np.flatnonzero(c.up_kw < held - 1e-6))
