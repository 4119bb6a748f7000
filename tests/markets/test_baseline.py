"""Baseline: versioned, keyed by content, read from a plan, never overwritten."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import numpy as np

from aggregator.planning.optimizer import Planner
from markets.baseline import Baseline
from tests.markets.test_plan_reserve import _request

T0 = datetime(2026, 1, 14, tzinfo=UTC)


def test_versions_keys_and_lookup() -> None:
    b1 = Baseline("pool", 1, T0, T0, 900.0, np.array([10.0, 20.0, 30.0]), "forecast-p50")
    assert b1.validate() == []
    assert b1.key.startswith("pool:v1:") and b1.end == T0 + timedelta(minutes=45)
    assert b1.at(T0 + timedelta(minutes=20)) == 20.0 and b1.at(T0 + timedelta(hours=1)) is None
    b2 = b1.revise(np.array([11.0, 20.0, 30.0]), T0 + timedelta(hours=1), "plan")
    assert b2.version == 2 and b2.supersedes == b1.key and b2.key != b1.key
    assert b1.power_kw[0] == 10.0  # the bid's baseline is untouched
    same = dataclasses.replace(b1, created_at=T0 + timedelta(days=1))
    assert same.key == b1.key  # the key is the content, not when it was made
    bad = Baseline("p", 0, datetime(2026, 1, 1), T0, 0.0, np.array([np.nan]), "x")  # noqa: DTZ001
    assert {i.code for i in bad.validate()} == {"bad_version", "not_utc", "bad_step", "not_finite"}


def test_from_plan_is_the_fleet_power_per_step() -> None:
    req = _request(5, 10)
    req = dataclasses.replace(req, first_frac=np.full(10, 0.5))
    plan = Planner().plan(req)
    b = Baseline.from_plan(plan, req, pool_id="p", at=T0)
    energy_kwh = b.power_kw.sum() * req.step_h
    assert np.isclose(energy_kwh, plan.energy_kwh.sum(), rtol=1e-6, atol=1e-6)
    assert b.start == plan.start and b.source == "plan"
