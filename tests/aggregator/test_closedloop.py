"""The closed loop on measured power (issue 11): unused allowance goes to other cars,
over-takers are reported and their site's headroom shrinks."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import numpy as np
import pytest

from adapters.stream.inprocess import InProcessBus
from aggregator.closedloop import MeasuredLoop
from aggregator.interfaces import ManualClock
from aggregator.messages import MeterValue, SessionStarted, SetpointBatch
from aggregator.service.replica import Service, ServiceConfig
from aggregator.sim.simulation import run_simulation
from aggregator.sim.vehicle import VehicleModel
from aggregator.topology import Feeder, Site, Topology
from tests.aggregator.service.test_property_in_force import CapBlindPlanner
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


class _Sink:
    def __init__(self) -> None:
        self.batches: list[SetpointBatch] = []

    def publish(self, batch: SetpointBatch) -> bool:
        self.batches.append(batch)
        return True


def test_service_reallocates_unused_allowance_and_fences_an_over_taker() -> None:
    topo = Topology(feeders=(Feeder("F", 100.0),), sites=(Site("S", "F", 22.0, csms_id="C"),))
    clock = ManualClock(T0)
    sink = _Sink()
    svc = Service(
        topo,
        ServiceConfig(reserve_kw=0.0),
        clock=clock,
        sink=sink,
        planner=CapBlindPlanner(greedy=True),
    )
    for e in ("A", "B", "C"):
        msg = SessionStarted(
            ts=T0,
            feeder_id="F",
            site_id="S",
            evse_id=e,
            csms_id="C",
            session_id=e,
            departure=T0 + timedelta(hours=8),
            energy_requested_kwh=60.0,
            max_power_kw=11.0,
        )
        assert svc.on_telemetry(msg).outcome.value == "applied"

    def setpoints() -> dict[str, float]:
        svc.tick()
        svc.dispatch(0.0)
        b = sink.batches[-1]
        return dict(zip(b.evse_ids, b.power_kw, strict=True))

    def meters(kw: dict[str, float]) -> None:
        clock.advance(60)
        for e, p in kw.items():
            svc.on_telemetry(
                MeterValue(
                    ts=clock.now(),
                    feeder_id="F",
                    evse_id=e,
                    session_id=e,
                    energy_kwh=1.0,
                    power_kw=p,
                )
            )

    first = setpoints()
    assert sum(first.values()) <= 22.0 + 1e-6 and first["B"] < 11.0  # the site cap binds
    for _ in range(2):  # A takes 4 kW, persistently
        meters({"A": 4.0, "B": first["B"], "C": first["C"]})
        now = setpoints()
    assert now["A"] == pytest.approx(4.5)  # what it takes + the probe
    assert now["B"] > first["B"] and now["C"] > first["C"]  # its allowance went to them
    assert sum(now.values()) <= 22.0 + 1e-6
    for _ in range(2):  # C takes 11 kW whatever it is told
        meters({"A": now["A"], "B": now["B"], "C": 11.0})
        fenced = setpoints()
    assert svc.over_takers == ("C",) and fenced["C"] == 0.0
    assert sum(fenced.values()) + 11.0 <= 22.0 + 1e-6  # measured power fits the cap


def test_over_taker_is_reported_in_the_simulation() -> None:
    sc = scenario(seed=3, n=24, limit_kw=18.0, announce_h=2.0)
    sc = dataclasses.replace(sc, end=T0 + timedelta(hours=12))
    s = run_simulation(
        sc, InProcessBus(), vehicles=VehicleModel(over_taking_share=0.25, seed=3)
    ).summary
    assert s["over_takers_reported"] >= 1
