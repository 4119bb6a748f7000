"""The service plans the awarded reserve per block: ServiceConfig.reserve_schedule → request."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import numpy as np

from aggregator.fleet import FleetState
from aggregator.limits import LimitBook
from aggregator.messages import SessionStarted
from aggregator.service.config import ReserveSchedule, ServiceConfig
from aggregator.service.request import plan_request
from aggregator.topology import Feeder, Site, Topology
from markets.bids import Award, reserve_schedule

T0 = datetime(2026, 1, 14, tzinfo=UTC)
TOPO = Topology((Feeder("F1", 500.0),), (Site("S1", "F1", 300.0),))


def _fleet() -> FleetState:
    fleet = FleetState(TOPO)
    for k in range(5):
        fleet.apply(
            SessionStarted(
                ts=T0,
                feeder_id="F1",
                site_id="S1",
                evse_id=f"E{k}",
                csms_id="C",
                session_id=f"X{k}",
                departure=T0 + timedelta(hours=10),
                energy_requested_kwh=30.0,
                max_power_kw=22.0,
                min_power_kw=0.0,
                energy_kwh=0.0,
            )
        )
    return fleet


def test_awarded_blocks_become_the_plans_reserve_per_step() -> None:
    awards = [
        Award("FCR", T0, T0 + timedelta(hours=4), "SYM", 0.02),
        Award("aFRR", T0 + timedelta(hours=4), T0 + timedelta(hours=8), "POS", 0.03),
    ]
    config = ServiceConfig(
        horizon_s=10 * 3600.0,
        reserve_kw=1.0,
        reserve_schedule=reserve_schedule(awards, base_kw=0.0),
    )
    assert config.validate() == []
    req, _ = plan_request(T0, fleet=_fleet(), limits=LimitBook(TOPO), config=config, prices=None)
    assert req.reserve_up_kw is not None and req.reserve_down_kw is not None
    assert (
        list(req.reserve_up_kw[:16]) == [20.0] * 16
        and list(req.reserve_down_kw[:16]) == [20.0] * 16
    )
    assert list(req.reserve_up_kw[16:32]) == [0.0] * 16
    assert list(req.reserve_down_kw[16:32]) == [30.0] * 16
    assert np.all(req.reserve_up_kw[32:] == 0.0)  # after the awarded blocks: the base, 0


def test_the_scalar_reserve_is_a_constant_schedule_and_a_bad_schedule_is_reported() -> None:
    config = ServiceConfig(horizon_s=2 * 3600.0, reserve_kw=12.0)
    req, _ = plan_request(T0, fleet=_fleet(), limits=LimitBook(TOPO), config=config, prices=None)
    up, down = req.reserve_targets_kw()
    assert np.all(up == 12.0) and np.all(down == 12.0)
    bad = ReserveSchedule(
        np.array([0.0, 10.0]), np.array([20.0, 30.0]), np.array([1.0, -1.0]), np.zeros(2)
    )
    issues = ServiceConfig(reserve_schedule=bad).validate()
    assert [i.message for i in issues] == [
        "blocks must be sorted, non-empty, disjoint",
        "reserve must be ≥ 0",
    ]


def test_the_fast_loop_activates_within_the_block_in_force() -> None:
    """aFRR awarded NEG 20 kW / POS 5 kW in 17:00–18:00 and nothing after: a request
    beyond the band is clipped to it, asymmetrically; outside the block nothing moves."""
    from aggregator.interfaces import ManualClock
    from aggregator.messages import AfrrRequest, FrequencySignal
    from aggregator.service.replica import Service
    from tests.aggregator.service.conftest import T0 as T17
    from tests.aggregator.service.conftest import HeldRunner, ListSink, session

    class Passthrough:  # the request as asked, within ± the reserve handed in
        def deviation_kw(self, signal: FrequencySignal, reserve_kw: float) -> float:
            assert isinstance(signal, AfrrRequest)
            return min(max(signal.setpoint_kw, -reserve_kw), reserve_kw)

    topo = Topology((Feeder("f1", 500.0),), (Site("s1", "f1", 300.0, csms_id="cs-a"),))
    awards = [
        Award("aFRR", T17, T17 + timedelta(hours=1), "NEG", 0.02),
        Award("aFRR", T17, T17 + timedelta(hours=1), "POS", 0.005),
    ]
    config = ServiceConfig(horizon_s=4 * 3600.0, reserve_schedule=reserve_schedule(awards))
    clock = ManualClock(T17)
    svc = Service(
        topo,
        config,
        clock=clock,
        sink=ListSink(),
        runner=HeldRunner(),
        activation=Passthrough(),
    )
    for i in range(4):
        svc.handle(session(i, site="s1", csms="cs-a", t=T17))
    svc.tick()
    assert svc.on_frequency(AfrrRequest(ts=T17, setpoint_kw=50.0)).deviation_kw == 20.0
    assert svc.on_frequency(AfrrRequest(ts=T17, setpoint_kw=-50.0)).deviation_kw == -5.0
    assert svc.on_frequency(AfrrRequest(ts=T17, setpoint_kw=-3.0)).deviation_kw == -3.0
    later = T17 + timedelta(hours=1, minutes=1)
    assert svc.on_frequency(AfrrRequest(ts=later, setpoint_kw=50.0)).deviation_kw == 0.0


def test_fcr_and_afrr_in_one_block_each_answer_within_their_own_part() -> None:
    """FCR 10 kW + aFRR NEG 20 kW in 17:00–18:00: up 30, down 10, FCR part 10. A full
    under-frequency asks −10 (FCR only), an aFRR request of +50 gets +20 (the aFRR part),
    of −50 gets 0 (no POS awarded)."""
    from aggregator.interfaces import ManualClock
    from aggregator.messages import AfrrRequest, FrequencySample, FrequencySignal
    from aggregator.service.replica import Service
    from tests.aggregator.service.conftest import T0 as T17
    from tests.aggregator.service.conftest import HeldRunner, ListSink, session

    class FullAsked:  # every signal asks for the full band it is handed, by its sign
        def deviation_kw(self, signal: FrequencySignal, reserve_kw: float) -> float:
            if isinstance(signal, FrequencySample):
                return reserve_kw if signal.hz > 50.0 else -reserve_kw
            assert isinstance(signal, AfrrRequest)
            return min(max(signal.setpoint_kw, -reserve_kw), reserve_kw)

    awards = [
        Award("FCR", T17, T17 + timedelta(hours=1), "SYM", 0.01),
        Award("aFRR", T17, T17 + timedelta(hours=1), "NEG", 0.02),
    ]
    sched = reserve_schedule(awards)
    assert sched.validate() == [] and sched.fcr_kw is not None and sched.fcr_kw[0] == 10.0
    topo = Topology((Feeder("f1", 500.0),), (Site("s1", "f1", 300.0, csms_id="cs-a"),))
    config = ServiceConfig(horizon_s=4 * 3600.0, reserve_schedule=sched)
    svc = Service(
        topo,
        config,
        clock=ManualClock(T17),
        sink=ListSink(),
        runner=HeldRunner(),
        activation=FullAsked(),
    )
    for i in range(4):
        svc.handle(session(i, site="s1", csms="cs-a", t=T17))
    svc.tick()
    assert svc.on_frequency(FrequencySample(ts=T17, hz=49.7)).deviation_kw == -10.0
    assert svc.on_frequency(FrequencySample(ts=T17, hz=50.3)).deviation_kw == 10.0
    assert svc.on_frequency(AfrrRequest(ts=T17, setpoint_kw=50.0)).deviation_kw == 20.0
    assert svc.on_frequency(AfrrRequest(ts=T17, setpoint_kw=-50.0)).deviation_kw == 0.0
    bad = dataclasses.replace(sched, fcr_kw=np.array([50.0]))
    assert [i.message for i in bad.validate()] == ["FCR part must be in [0, min(up, down)]"]
