"""The service's own plans are semi-continuous: every planned charging value is 0 or at
least the session's minimum (6 A per phase by default), not only the fast loop's output."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from aggregator.interfaces import ManualClock, Record, Topics
from aggregator.messages import SessionStarted, encode
from aggregator.planning.optimizer import Planner
from aggregator.service.replica import Service, ServiceConfig
from aggregator.topology import Feeder, Site, Topology
from tests.aggregator.service.conftest import ListSink

T0 = datetime(2026, 1, 14, 17, 0, tzinfo=UTC)
# 35 kW for 11 kW cars that all want more than the site can give: a continuous LP plan
# puts 3 cars at 11 kW and a fourth at 2 kW (below a three-phase car's 4.14 kW minimum)
TOPO = Topology(feeders=(Feeder("f1", 100.0),), sites=(Site("s1", "f1", 35.0, csms_id="c"),))


def _start(i: int) -> Record:
    msg = SessionStarted(
        ts=T0,
        feeder_id="f1",
        site_id="s1",
        evse_id=f"e{i}",
        csms_id="c",
        session_id=f"sess{i}",
        departure=T0 + timedelta(hours=6),
        energy_requested_kwh=60.0,
        max_power_kw=11.0,
        min_power_kw=0.0,
    )
    return Record(Topics().telemetry, "f1", encode(msg))


def test_the_service_plans_no_value_between_zero_and_the_minimum() -> None:
    svc = Service(TOPO, ServiceConfig(), clock=ManualClock(T0), sink=ListSink())
    for i in range(6):
        assert svc.handle(_start(i)) is None
    svc.tick(force_replan=True)
    svc.tick()
    plan, req = svc.plan, svc.last_request
    assert plan is not None and req is not None and plan.fallback is None
    mins = svc.fleet.min_charge_kw[: svc.fleet.n_slots]
    assert float(mins.min()) > 4.0  # three-phase 6 A at 230 V
    p = plan.power_kw
    between = (p > 1e-6) & (p < mins.min() - 1e-6)
    assert not between.any(), p[between]
    assert np.all(p.sum(axis=0) <= 35.0 + 1e-6)
    # the same request planned continuously does have such values: the rounding did it
    continuous = Planner("HIGHS").plan(req).power_kw
    assert ((continuous > 1e-6) & (continuous < mins.min() - 1e-6)).any()
