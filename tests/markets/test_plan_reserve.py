"""The plan holds the awarded reserve per block (asymmetric) within every DSO and grid limit."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.planning.optimizer import Planner
from aggregator.planning.request import PlanRequest
from aggregator.service.config import ReserveSchedule
from markets.bids import Award, reserve_schedule
from markets.flexibility import fleet_flexibility_kw
from tests.aggregator.planning.requests import random_request

T0 = datetime(2026, 1, 14, tzinfo=UTC)
STEPS, STEP_S, SITES, BLOCK = 16, 900.0, 3, 4  # four 1 h blocks of four steps


def _request(seed: int, n: int) -> PlanRequest:
    return random_request(seed, n)


def _site_kw(plan_power: np.ndarray, req: PlanRequest) -> np.ndarray:
    site = np.zeros((SITES, STEPS))
    np.add.at(site, req.session_site, plan_power * req.plugged_fraction())
    return site


@settings(max_examples=25, deadline=None)
@given(
    st.integers(0, 2**31),
    st.integers(2, 20),
    st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4),
    st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4),
)
def test_plan_holds_awarded_headroom_per_block_within_every_limit(
    seed: int, n: int, up_share: list[float], down_share: list[float]
) -> None:
    req = _request(seed, n)
    planner = Planner(time_limit_s=30.0, reuse=False)
    free = planner.plan(req)
    assert free.fallback is None
    # what the unreserved plan leaves, per step, also under the grid element
    up0, down0 = fleet_flexibility_kw(free, req)
    assert req.site_constraints is not None
    grid_room = (
        req.site_constraints.upper
        - req.site_constraints.matrix @ _site_kw(free.power_kw, req).ravel()
    )
    up0 = np.minimum(up0, np.maximum(grid_room, 0.0))
    awards = []
    for b in range(STEPS // BLOCK):
        s = T0 + timedelta(seconds=STEP_S * BLOCK * b)
        e = s + timedelta(seconds=STEP_S * BLOCK)
        block = slice(b * BLOCK, (b + 1) * BLOCK)
        awards.append(Award("aFRR", s, e, "NEG", up_share[b] * up0[block].min() / 1000))
        awards.append(Award("aFRR", s, e, "POS", down_share[b] * down0[block].min() / 1000))
    sched = reserve_schedule(awards)
    assert isinstance(sched, ReserveSchedule) and sched.validate() == []
    want_up, want_down = sched.for_steps(T0.timestamp(), STEP_S, STEPS)

    req_r = dataclasses.replace(req, reserve_up_kw=want_up, reserve_down_kw=want_down)
    assert req_r.validate() == []
    plan = planner.plan(req_r)
    assert plan.fallback is None
    tol = 1e-4
    ru, rd = plan.reserve_up_kw, plan.reserve_down_kw
    # the awarded headroom, in every step of every block, in its own direction
    assert np.all(ru.sum(axis=0) >= want_up - tol)
    assert np.all(rd.sum(axis=0) >= want_down - tol)
    site = _site_kw(plan.power_kw, req)
    caps = req.caps
    # every limit holds with the reserve fully activated
    assert np.all(site + ru <= caps.site_kw + tol)
    assert np.all(site - rd >= -caps.site_export_kw - tol)
    assert np.all(site.sum(axis=0) + ru.sum(axis=0) <= caps.feeder_kw[0] + tol)
    loading = req.site_constraints.matrix @ (site + ru).ravel()
    assert np.all(loading <= req.site_constraints.upper + tol)
    # and the headroom is real: the sessions plugged in can move that far
    up_real, down_real = fleet_flexibility_kw(plan, req)
    assert np.all(up_real >= want_up - tol) and np.all(down_real >= want_down - tol)
    # holding it costs no energy the unreserved plan delivered
    assert plan.shortfall_kwh.sum() <= free.shortfall_kwh.sum() + 1e-3


def test_the_symmetric_scalar_is_a_constant_schedule() -> None:
    req = _request(3, 12)

    sym = dataclasses.replace(req, reserve_kw=np.full(STEPS, 5.0))
    up, down = sym.reserve_targets_kw()
    assert np.all(up == 5.0) and np.all(down == 5.0) and sym.has_reserve
    asym = dataclasses.replace(sym, reserve_up_kw=np.full(STEPS, 2.0))
    up, down = asym.reserve_targets_kw()
    assert np.all(up == 2.0) and np.all(down == 5.0)
    bad = dataclasses.replace(sym, reserve_down_kw=np.zeros(3))
    assert [i.field for i in bad.validate()] == ["reserve_down_kw"]
    const = ReserveSchedule.constant(7.0)
    assert const.at(0.0) == (7.0, 7.0)
    u, d = const.for_steps(0.0, 900.0, 4)
    assert np.all(u == 7.0) and np.all(d == 7.0)
    # a step half inside a block takes the larger of the block and the outside
    half = ReserveSchedule(
        np.array([450.0]), np.array([1800.0]), np.array([3.0]), np.array([9.0]), 5.0
    )
    u, d = half.for_steps(0.0, 900.0, 3)
    assert list(u) == [5.0, 3.0, 5.0] and list(d) == [9.0, 9.0, 5.0]


def test_matrix_and_cvxpy_planners_agree_on_an_asymmetric_reserve() -> None:
    req = _request(11, 14)
    up = np.where(np.arange(STEPS) < 8, 12.0, 3.0)
    down = np.where(np.arange(STEPS) < 8, 2.0, 9.0)
    req = dataclasses.replace(req, reserve_up_kw=up, reserve_down_kw=down)
    a = Planner("HIGHS").plan(req)
    b = Planner("HIGHS", backend="cvxpy").plan(req)
    assert a.fallback is None and b.fallback is None
    assert abs(a.objective - b.objective) <= 1e-4 * max(1.0, abs(a.objective))
    for plan in (a, b):  # both hold the asymmetric targets (the cvxpy one too)
        assert np.allclose(np.minimum(plan.reserve_up_kw.sum(axis=0), up), up, atol=1e-3)
        assert np.allclose(np.minimum(plan.reserve_down_kw.sum(axis=0), down), down, atol=1e-3)
