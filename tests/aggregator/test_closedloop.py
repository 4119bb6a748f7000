"""The closed loop on measured power (issue 11): unused allowance goes to other cars,
over-takers are reported and their site's headroom shrinks."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import numpy as np
import pytest

from adapters.stream.inprocess import InProcessBus
from aggregator.closedloop import MeasuredLoop
from aggregator.sim.simulation import run_simulation
from aggregator.sim.vehicle import VehicleModel
from tests.aggregator.sim.test_simulation import T0, scenario

SITE = np.array([0, 0, 1], dtype=np.intp)
ACTIVE = np.ones(3, dtype=np.bool_)
MIN = np.full(3, 4.14)


def read(loop: MeasuredLoop, measured: list[float], t: float):  # type: ignore[no-untyped-def]
    return loop.observe(
        measured_kw=np.array(measured),
        meter_s=np.full(3, t),
        active=ACTIVE,
        min_kw=MIN,
        slot_site=SITE,
        n_sites=2,
    )


def test_under_taker_is_capped_after_persistent_readings_and_released() -> None:
    loop = MeasuredLoop(persist=2, probe_kw=0.5)
    loop.sent(np.array([11.0, 11.0, 11.0]))
    v = read(loop, [5.0, 11.0, 10.8], 1.0)
    assert not v.under.any()  # once is not persistent
    v = read(loop, [5.0, 11.0, 10.8], 1.0)  # the same reading again: not fresh
    assert not v.under.any()
    v = read(loop, [5.0, 11.0, 10.8], 2.0)
    assert v.under.tolist() == [True, False, False]
    assert v.hi_cap_kw[0] == 5.5 and np.isinf(v.hi_cap_kw[1:]).all()
    loop.sent(np.array([5.5, 11.0, 11.0]))
    v = read(loop, [5.4, 11.0, 11.0], 3.0)  # takes what it is now allowed: cleared
    assert not v.under.any()


def test_cap_of_an_under_taker_stays_followable() -> None:
    loop = MeasuredLoop(persist=1)
    loop.sent(np.array([11.0, 0.0, 0.0]))
    v = read(loop, [1.0, 0.0, 0.0], 1.0)
    assert v.hi_cap_kw[0] == 4.14  # never below the car's minimum


def test_over_taker_is_reported_and_its_site_loses_what_it_takes() -> None:
    loop = MeasuredLoop(persist=2)
    loop.sent(np.array([4.14, 0.0, 6.0]))
    read(loop, [11.0, 0.0, 6.0], 1.0)
    v = read(loop, [11.0, 0.0, 6.1], 2.0)
    assert v.over_takers == (0,)
    assert v.hi_cap_kw[0] == 0.0
    assert v.site_penalty_kw.tolist() == [11.0, 0.0]


@pytest.mark.parametrize("seed", [3])
def test_unused_allowance_is_reallocated_in_the_simulation(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    sc = scenario(seed=seed, n=24, limit_kw=18.0, announce_h=2.0)
    sc = dataclasses.replace(sc, end=T0 + timedelta(hours=12))
    cars = VehicleModel(non_following_share=0.3, target_soc=0.9, seed=seed)
    with_loop = run_simulation(sc, InProcessBus(), vehicles=cars).summary
    import aggregator.service.replica as replica

    monkeypatch.setattr(replica, "MeasuredLoop", lambda: MeasuredLoop(persist=10**9))
    without = run_simulation(sc, InProcessBus(), vehicles=cars).summary
    assert with_loop["limit_excess_measured_kw"] == 0.0
    assert with_loop["energy_delivered_kwh"] > without["energy_delivered_kwh"]


def test_over_taker_is_reported_in_the_simulation() -> None:
    sc = scenario(seed=3, n=24, limit_kw=18.0, announce_h=2.0)
    sc = dataclasses.replace(sc, end=T0 + timedelta(hours=12))
    s = run_simulation(
        sc, InProcessBus(), vehicles=VehicleModel(over_taking_share=0.25, seed=3)
    ).summary
    assert s["over_takers_reported"] >= 1
