"""The energy-reservoir rule in the plan: the reserve held can be sustained for R.

A simple simulated activation checks it: in each site-step, each plugged session can move
by its power headroom, but up (consume more) only as far as the energy it still needs
after the step lasts for ``R``, and down (consume less) only as far as it can catch up
below its maximum power after the step. The site must deliver its own ``ru``/``rd`` that
way; the LP's limit rows then hold for the activated power (checked too).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.planning.optimizer import Planner
from aggregator.planning.request import Plan, PlanRequest
from tests.aggregator.planning.requests import random_request

T0 = datetime(2026, 1, 14, tzinfo=UTC)
STEPS, STEP_S, SITES = 16, 900.0, 3
TOL_KW = 1e-4


def _request(seed: int, n: int, need_share: float) -> PlanRequest:
    return random_request(
        seed, n, need_kwh_share=(0.1 * need_share, need_share), partial_steps=True
    )


def _undelivered(plan: Plan, req: PlanRequest, reservoir_s: float) -> tuple[float, float]:
    """The largest part of a site-step's ``ru``/``rd`` a sustained activation misses (kW)."""
    frac = req.plugged_fraction()
    h, res_h = req.step_h, reservoir_s / 3600.0
    x = plan.power_kw * frac  # mean power over the step
    hi = req.max_power_kw[:, None] * frac
    lo = req.min_power_kw[:, None] * frac
    e = h * x
    rem = req.energy_needed_kwh[:, None] - np.cumsum(e, axis=1)  # still needed after t
    e_max = h * hi
    room = np.cumsum(e_max[:, ::-1], axis=1)[:, ::-1] - e_max  # max energy after t
    planned_after = np.cumsum(e[:, ::-1], axis=1)[:, ::-1] - e
    plugged = frac > 0
    up = np.where(plugged, np.minimum(hi - x, np.maximum(rem, 0.0) / res_h), 0.0)
    down = np.where(plugged, np.minimum(x - lo, np.maximum(room - planned_after, 0.0) / res_h), 0.0)
    site_up = np.zeros((req.n_sites, req.steps))
    site_down = np.zeros_like(site_up)
    np.add.at(site_up, req.session_site, np.maximum(up, 0.0))
    np.add.at(site_down, req.session_site, np.maximum(down, 0.0))
    return (
        float(np.max(plan.reserve_up_kw - site_up)),
        float(np.max(plan.reserve_down_kw - site_down)),
    )


def _site_kw(plan: Plan, req: PlanRequest) -> np.ndarray:
    site = np.zeros((req.n_sites, req.steps))
    np.add.at(site, req.session_site, plan.power_kw * req.plugged_fraction())
    return site


@settings(max_examples=25, deadline=None)
@given(
    st.integers(0, 2**31),
    st.integers(2, 20),
    st.floats(0.2, 1.0),
    st.floats(0.0, 30.0),
    st.floats(0.0, 30.0),
    st.sampled_from([900.0, 1800.0]),
)
def test_with_the_rule_the_reserve_is_sustainable_within_every_limit(
    seed: int, n: int, need_share: float, up_kw: float, down_kw: float, reservoir_s: float
) -> None:
    req = _request(seed, n, need_share)
    steps = np.arange(STEPS)
    up = np.where((steps >= 4) & (steps < 12), up_kw, 0.0)  # reserve in the middle blocks
    down = np.where(steps >= 8, down_kw, 0.0)
    req = dataclasses.replace(req, reserve_up_kw=up, reserve_down_kw=down, reservoir_s=reservoir_s)
    assert req.validate() == []
    plan = Planner(time_limit_s=30.0, reuse=False).plan(req)
    assert plan.fallback is None
    miss_up, miss_down = _undelivered(plan, req, reservoir_s)
    assert miss_up <= TOL_KW and miss_down <= TOL_KW
    ru, rd = plan.reserve_up_kw, plan.reserve_down_kw
    site = _site_kw(plan, req)
    caps = req.caps
    assert np.all(site + ru <= caps.site_kw + TOL_KW)
    assert np.all(site - rd >= -caps.site_export_kw - TOL_KW)
    assert np.all(site.sum(axis=0) + ru.sum(axis=0) <= caps.feeder_kw[0] + TOL_KW)
    assert req.site_constraints is not None
    loading = req.site_constraints.matrix @ (site + ru).ravel()
    assert np.all(loading <= req.site_constraints.upper + TOL_KW)
    # the rule never costs energy the cars asked for (a reserve it cannot hold is missed)
    free = Planner(time_limit_s=30.0, reuse=False).plan(dataclasses.replace(req, reservoir_s=None))
    assert plan.shortfall_kwh.sum() <= free.shortfall_kwh.sum() + 1e-3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_without_the_rule_power_headroom_alone_is_not_sustainable(seed: int) -> None:
    req = dataclasses.replace(_request(seed, 15, 0.6), reserve_kw=np.full(STEPS, 15.0))
    off = Planner(time_limit_s=30.0, reuse=False).plan(req)
    on = Planner(time_limit_s=30.0, reuse=False).plan(dataclasses.replace(req, reservoir_s=900.0))
    assert off.fallback is None and on.fallback is None
    # power headroom only: the plan counts full cars' headroom and starving cars' energy
    assert max(_undelivered(off, req, 900.0)) > 1.0
    assert max(_undelivered(on, req, 900.0)) <= TOL_KW
    # with the rule the plan still holds a reserve where cars can carry it
    assert on.reserve_up_kw.sum() > 0.0 and on.reserve_down_kw.sum() > 0.0


def test_a_reservoir_must_be_a_positive_time() -> None:
    req = _request(0, 4, 0.5)
    for bad in (0.0, -900.0, float("inf"), float("nan")):
        issues = dataclasses.replace(req, reservoir_s=bad).validate()
        assert [i.field for i in issues] == ["reservoir_s"]
    assert dataclasses.replace(req, reservoir_s=1800.0).validate() == []
