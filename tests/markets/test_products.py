"""Balancing products and the up/down flexibility a plan leaves for them."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.limits import Caps
from aggregator.planning.optimizer import Planner, proportional_plan
from aggregator.planning.request import Plan, PlanRequest
from markets.flexibility import fleet_flexibility_kw, max_symmetric_reserve_kw
from markets.products import AFRR, FCR, Product

T0 = datetime(2025, 3, 1, 6, 0, tzinfo=UTC)
STEP_S = 900.0
T = 4
SETTINGS = settings(max_examples=60, deadline=None)


def a(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def make_request(
    *,
    site_cap: Sequence[float] = (20.0, 50.0),
    export_cap: Sequence[float] | None = None,
    feeder_cap: float = 1000.0,
    fleet_cap: float = 1000.0,
) -> PlanRequest:
    """Two sites on one feeder, three sessions, four quarter-hour steps.

    * session 0 at site 0, plugged steps 0-3, 0…11 kW;
    * session 1 at site 0, plugged steps 1-2, -7…11 kW (V2G);
    * session 2 at site 1, plugged steps 2-3, 0…22 kW.
    """
    export = site_cap if export_cap is None else export_cap
    caps = Caps(
        site_kw=np.repeat(a(list(site_cap))[:, None], T, axis=1),
        feeder_kw=np.full((1, T), feeder_cap),
        fleet_kw=np.full(T, fleet_cap),
        site_export_kw=np.repeat(a(list(export))[:, None], T, axis=1),
    )
    return PlanRequest(
        start=T0,
        step_s=STEP_S,
        steps=T,
        session_site=np.array([0, 0, 1], dtype=np.intp),
        first_step=np.array([0, 1, 2], dtype=np.intp),
        last_step=np.array([4, 3, 4], dtype=np.intp),
        first_frac=np.ones(3),
        last_frac=np.ones(3),
        max_power_kw=a([11.0, 11.0, 22.0]),
        min_power_kw=a([0.0, -7.0, 0.0]),
        energy_needed_kwh=a([20.0, 5.0, 20.0]),
        discharge_budget_kwh=a([0.0, 5.0, 0.0]),
        site_feeder=np.array([0, 0], dtype=np.intp),
        caps=caps,
        reserve_kw=np.zeros(T),
    )


def make_plan(req: PlanRequest, power_kw: np.ndarray) -> Plan:
    zs = np.zeros((req.n_sites, req.steps))
    energy = power_kw.sum(axis=1) * req.step_h
    return Plan(
        req.start,
        req.step_s,
        power_kw,
        energy,
        np.maximum(req.energy_needed_kwh - energy, 0.0),
        zs,
        zs.copy(),
        0.0,
        "hand-made",
        "none",
        0.0,
        0.0,
        False,
    )


BASE = np.array(
    [
        [5.0, 5.0, 5.0, 5.0],  # session 0
        [0.0, 3.0, 3.0, 0.0],  # session 1 (unplugged in steps 0 and 3)
        [0.0, 0.0, 10.0, 10.0],  # session 2 (unplugged in steps 0 and 1)
    ]
)


# --- products ---------------------------------------------------------------------------


def test_fcr_parameters() -> None:
    assert FCR.name == "FCR"
    assert FCR.full_activation_s == 30.0
    assert FCR.deadband_hz == pytest.approx(0.010)
    assert FCR.full_activation_hz == pytest.approx(0.200)
    assert FCR.min_bid_kw == 1000.0


def test_afrr_parameters() -> None:
    assert AFRR.name == "aFRR"
    assert AFRR.full_activation_s == 300.0
    assert AFRR.setpoint_interval_s == 4.0
    assert AFRR.deadband_hz == 0.0
    assert AFRR.min_bid_kw == 1000.0


def test_product_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        FCR.full_activation_s = 1.0  # type: ignore[misc]
    assert Product("x", 10.0).setpoint_interval_s == 0.0


# --- fleet_flexibility_kw ---------------------------------------------------------------


def test_flexibility_hand_computed() -> None:
    req = make_request()
    assert req.validate() == []
    up, down = fleet_flexibility_kw(make_plan(req, BASE), req)
    # step 0: only s0 plugged: up 11-5 = 6; down 5
    # step 1: site 0 has s0 (up 6) + s1 (up 8) = 14 but cap room 20-8 = 12; down 5 + 10 (V2G)
    # step 2: site 0 as step 1 (12) + site 1 s2 up 12 (room 40) = 24; down 15 + 10
    # step 3: s0 up 6 + s2 up 12; down 5 + 10
    np.testing.assert_allclose(up, [6.0, 12.0, 24.0, 18.0])
    np.testing.assert_allclose(down, [5.0, 15.0, 25.0, 15.0])


def test_up_limited_by_site_cap() -> None:
    req = make_request(site_cap=[9.0, 50.0])
    up, _ = fleet_flexibility_kw(make_plan(req, BASE), req)
    # site 0 room: 9-5 = 4 (steps 0, 3) and 9-8 = 1 (steps 1, 2)
    np.testing.assert_allclose(up, [4.0, 1.0, 1.0 + 12.0, 4.0 + 12.0])


def test_up_never_negative_when_base_exceeds_a_cap() -> None:
    req = make_request(site_cap=[4.0, 50.0])  # base 5 kW already above the 4 kW cap
    up, _ = fleet_flexibility_kw(make_plan(req, BASE), req)
    np.testing.assert_allclose(up, [0.0, 0.0, 12.0, 12.0])


def test_up_limited_by_feeder_and_fleet_caps() -> None:
    req = make_request(feeder_cap=20.0)
    up, _ = fleet_flexibility_kw(make_plan(req, BASE), req)
    fleet_base = BASE.sum(axis=0)  # [5, 8, 18, 15]
    np.testing.assert_allclose(up, np.minimum([6.0, 12.0, 24.0, 18.0], 20.0 - fleet_base))
    req = make_request(fleet_cap=16.0)
    up, _ = fleet_flexibility_kw(make_plan(req, BASE), req)
    np.testing.assert_allclose(up, [6.0, 8.0, 0.0, 1.0])


def test_down_includes_v2g_and_not_only_the_base() -> None:
    req = make_request()
    _, down = fleet_flexibility_kw(make_plan(req, BASE), req)
    fleet_base = BASE.sum(axis=0)
    assert down[1] > fleet_base[1]  # the V2G session can go below zero
    assert down[1] - fleet_base[1] == pytest.approx(7.0)


def test_down_limited_by_site_export_cap() -> None:
    """A site's connection limit holds in both directions: V2G cannot export past it."""
    req = make_request(export_cap=[2.0, 50.0])
    _, down = fleet_flexibility_kw(make_plan(req, BASE), req)
    # site 0 in steps 1-2: base 8 kW, may go down to -2 kW → 10 kW instead of 15
    np.testing.assert_allclose(down, [5.0, 10.0, 20.0, 15.0])


def test_sessions_count_only_while_plugged() -> None:
    req = make_request()
    up, down = fleet_flexibility_kw(make_plan(req, BASE), req)
    # s1 is unplugged in step 0: it would add 11 kW up (capped to 15) and 7 kW down (V2G)
    assert up[0] == pytest.approx(6.0)
    assert down[0] == pytest.approx(5.0)
    # s2 arriving one step later: its (stale) 10 kW base in step 2 no longer counts
    late = dataclasses.replace(req, first_step=np.array([0, 1, 3], dtype=np.intp))
    up, down = fleet_flexibility_kw(make_plan(late, BASE), late)
    np.testing.assert_allclose(up, [6.0, 12.0, 12.0, 18.0])
    np.testing.assert_allclose(down, [5.0, 15.0, 15.0, 15.0])


def test_no_sessions_no_flexibility() -> None:
    req = make_request()
    empty = dataclasses.replace(
        req,
        session_site=np.zeros(0, dtype=np.intp),
        first_step=np.zeros(0, dtype=np.intp),
        last_step=np.zeros(0, dtype=np.intp),
        first_frac=np.zeros(0),
        last_frac=np.zeros(0),
        max_power_kw=np.zeros(0),
        min_power_kw=np.zeros(0),
        energy_needed_kwh=np.zeros(0),
        discharge_budget_kwh=np.zeros(0),
    )
    up, down = fleet_flexibility_kw(make_plan(empty, np.zeros((0, T))), empty)
    np.testing.assert_array_equal(up, np.zeros(T))
    np.testing.assert_array_equal(down, np.zeros(T))


# --- max_symmetric_reserve_kw -----------------------------------------------------------


def test_max_symmetric_reserve_is_min_over_window_of_min_up_down() -> None:
    req = make_request()
    plan = make_plan(req, BASE)
    up, down = fleet_flexibility_kw(plan, req)
    both = np.minimum(up, down)  # [5, 12, 24, 15]
    np.testing.assert_allclose(both, [5.0, 12.0, 24.0, 15.0])
    assert max_symmetric_reserve_kw(plan, req) == pytest.approx(5.0)
    assert max_symmetric_reserve_kw(plan, req, 1) == pytest.approx(12.0)
    assert max_symmetric_reserve_kw(plan, req, 2, 3) == pytest.approx(24.0)
    assert max_symmetric_reserve_kw(plan, req, 2, 4) == pytest.approx(15.0)
    assert max_symmetric_reserve_kw(plan, req, 3, 3) == 0.0  # empty window


def test_max_symmetric_reserve_on_solver_plan() -> None:
    req = make_request()
    plan = Planner("HIGHS", time_limit_s=10.0).plan(req)
    assert plan.fallback is None, plan.fallback
    up, down = fleet_flexibility_kw(plan, req)
    assert np.all(up >= -1e-9) and np.all(down >= -1e-9)
    r = max_symmetric_reserve_kw(plan, req, 1, 3)
    assert r == pytest.approx(float(np.min(np.minimum(up, down)[1:3])))
    assert r >= 0.0


# --- property ---------------------------------------------------------------------------


@st.composite
def requests(draw: st.DrawFn) -> PlanRequest:
    n = draw(st.integers(1, 6))
    first = [draw(st.integers(0, T - 1)) for _ in range(n)]
    last = [draw(st.integers(f + 1, T)) for f in first]
    site_cap = [draw(st.floats(1.0, 60.0)) for _ in range(2)]
    base = make_request(
        site_cap=site_cap,
        export_cap=[draw(st.floats(0.0, 60.0)) for _ in range(2)],
        feeder_cap=draw(st.floats(1.0, 120.0)),
        fleet_cap=draw(st.floats(1.0, 120.0)),
    )
    return dataclasses.replace(
        base,
        session_site=np.array([draw(st.integers(0, 1)) for _ in range(n)], dtype=np.intp),
        first_step=np.array(first, dtype=np.intp),
        last_step=np.array(last, dtype=np.intp),
        first_frac=np.ones(n),
        last_frac=np.ones(n),
        max_power_kw=a([draw(st.floats(0.0, 22.0)) for _ in range(n)]),
        min_power_kw=a([draw(st.floats(-11.0, 0.0)) for _ in range(n)]),
        energy_needed_kwh=a([draw(st.floats(0.0, 30.0)) for _ in range(n)]),
        discharge_budget_kwh=np.zeros(n),
    )


@SETTINGS
@given(req=requests())
def test_property_flexibility_respects_caps(req: PlanRequest) -> None:
    assert req.validate() == []
    plan = proportional_plan(req, "property test")
    up, down = fleet_flexibility_kw(plan, req)
    steps = np.arange(req.steps)
    plugged = (steps >= req.first_step[:, None]) & (steps < req.last_step[:, None])
    base = np.where(plugged, plan.power_kw, 0.0).sum(axis=0)
    head_up = np.where(plugged, req.max_power_kw[:, None] - plan.power_kw, 0.0).sum(axis=0)
    head_down = np.where(plugged, plan.power_kw - req.min_power_kw[:, None], 0.0).sum(axis=0)
    tol = 1e-6
    assert np.all(up >= -tol) and np.all(down >= -tol)
    assert np.all(up <= head_up + tol)
    assert np.all(down <= head_down + tol)
    # moving up by `up` keeps the fleet within its cap wherever the plan itself was
    ok = base <= req.caps.fleet_kw + tol
    assert np.all((base + up)[ok] <= req.caps.fleet_kw[ok] + tol)
    # moving down by `down` keeps every site above minus its export cap (or its base)
    site_base = np.zeros((req.n_sites, req.steps))
    np.add.at(site_base, req.session_site, np.where(plugged, plan.power_kw, 0.0))
    floor = np.minimum(-req.caps.site_export_kw, site_base).sum(axis=0)
    assert np.all(base - down >= floor - tol)
    sym = max_symmetric_reserve_kw(plan, req)
    assert sym == pytest.approx(float(np.min(np.minimum(up, down))))
