"""The plan made semi-continuous (issue 11): 0 or ≥ the minimum, every cap, envelope and
energy bound still held, little energy lost, cars rotated."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.planning.fallback import proportional_plan
from aggregator.planning.optimizer import Planner
from aggregator.planning.rounding import round_plan
from tests.aggregator.planning.test_optimizer import assert_plan_respects, request

TOL = 1e-6


def _followable(
    plan_kw: np.ndarray, frac: np.ndarray, mins: np.ndarray, need: np.ndarray, h: float
) -> bool:
    """Every charging value is ≥ its minimum, except the one that completes the session."""
    p = plan_kw
    cum = np.cumsum(np.maximum(p, 0.0) * frac, axis=1) * h
    last = cum >= need[:, None] - 1e-6
    ok = (p <= TOL) | (p >= mins[:, None] - TOL) | last
    return bool(ok.all())


@settings(max_examples=25, deadline=None)
@given(
    st.integers(0, 10_000),
    st.sampled_from([8.0, 20.0, 40.0]),
    st.sampled_from([0.0, 15.0]),
    st.booleans(),
)
def test_rounded_plan_is_followable_and_respects_everything(
    seed: int, site_cap: float, reserve: float, lp: bool
) -> None:
    req = request(n=24, steps=16, sites=3, seed=seed, site_cap=site_cap, reserve=reserve)
    plan = Planner().plan(req) if lp else proportional_plan(req, "test")
    rng = np.random.default_rng(seed)
    mins = np.minimum(rng.choice([1.38, 4.14], req.n_sessions), req.max_power_kw)
    rounded, stats = round_plan(req, plan, mins)
    assert_plan_respects(req, rounded)  # caps, envelopes, energy by departure
    assert _followable(
        rounded.power_kw, req.plugged_fraction(), mins, req.energy_needed_kwh, req.step_h
    )
    # the reserve headroom the plan keeps per site is not used by the rounding
    site = np.zeros((req.n_sites, req.steps))
    np.add.at(site, req.session_site, rounded.power_kw * req.plugged_fraction())
    assert np.all(site + plan.reserve_up_kw <= np.maximum(req.caps.site_kw, site) + TOL)
    assert stats.followable_share == 1.0


def test_time_sharing_keeps_the_energy_and_rotates() -> None:
    # six cars, 4.14 kW minimum, a 12.5 kW site for 8 h: continuous 2.08 kW each
    req = request(n=6, steps=32, sites=1, seed=1, site_cap=12.5, feeder_cap=100.0, price=False)
    req = _all_plugged(req, need_kwh=12.0)
    plan = Planner().plan(req)
    mins = np.full(6, 4.14)
    rounded, stats = round_plan(req, plan, mins)
    frac, need, h = req.plugged_fraction(), req.energy_needed_kwh, req.step_h
    assert _followable(rounded.power_kw, frac, mins, need, h)
    assert stats.rounded_up > 0
    assert stats.energy_lost_kwh <= 0.05 * stats.energy_continuous_kwh
    # everyone got about the same energy
    assert rounded.energy_kwh.min() >= 0.85 * rounded.energy_kwh.max()


def _all_plugged(req, need_kwh: float):  # type: ignore[no-untyped-def]
    import dataclasses

    n = req.n_sessions
    return dataclasses.replace(
        req,
        first_step=np.zeros(n, dtype=np.intp),
        last_step=np.full(n, req.steps, dtype=np.intp),
        first_frac=np.ones(n),
        last_frac=np.ones(n),
        max_power_kw=np.full(n, 11.0),
        min_power_kw=np.zeros(n),
        energy_needed_kwh=np.full(n, need_kwh),
        discharge_budget_kwh=np.zeros(n),
    )


def test_no_minimum_changes_nothing() -> None:
    req = request(n=20, steps=12, seed=4)
    plan = Planner().plan(req)
    rounded, stats = round_plan(req, plan, np.zeros(req.n_sessions))
    np.testing.assert_allclose(rounded.power_kw, plan.power_kw, atol=1e-9)
    assert stats.rounded_up == 0 and stats.rounded_down == 0


def test_planner_rounds_after_the_lp_when_given_minimums() -> None:
    req = request(n=20, steps=12, seed=5, site_cap=12.0)
    planner = Planner()
    mins = np.full(req.n_sessions, 4.14)
    plan = planner.plan(req, min_charge_kw=mins)
    assert planner.last_rounding is not None
    frac, need, h = req.plugged_fraction(), req.energy_needed_kwh, req.step_h
    assert _followable(plan.power_kw, frac, np.minimum(mins, req.max_power_kw), need, h)
    assert_plan_respects(req, plan)


def test_v2g_sessions_keep_their_planned_values() -> None:
    # regression: rounding a V2G session's charging against its need (ignoring what it
    # discharged) pushed its running energy below what the LP allowed (PEBC check failed)
    req = request(n=20, steps=12, v2g=0.5, site_cap=40.0, feeder_cap=90.0)
    plan = Planner("HIGHS").plan(req)
    mins = np.full(req.n_sessions, 4.14)
    rounded, _ = round_plan(req, plan, mins)
    v2g = req.min_power_kw < 0
    assert v2g.any() and (plan.power_kw[v2g] < 0).any()
    np.testing.assert_array_equal(rounded.power_kw[v2g], plan.power_kw[v2g])
    assert_plan_respects(req, rounded)
