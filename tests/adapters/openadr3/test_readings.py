"""What the OpenADR 3 VEN reports, read from a real (small) Service and its plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import adapters.openadr3 as oadr3
from adapters.openadr3 import OpenAdr3Target, Readings
from adapters.openadr3.readings import PlanReadings
from adapters.stream.inprocess import RecordingSink
from aggregator.interfaces import ManualClock
from aggregator.messages import SessionStarted
from aggregator.service.replica import Service, ServiceConfig
from aggregator.topology import Feeder, Site, Topology

TOPO = Topology(
    feeders=(Feeder("f1", 60.0), Feeder("f2", 60.0)),
    sites=(Site("s1", "f1", 40.0, csms_id="cs-a"), Site("s3", "f2", 40.0, csms_id="cs-a")),
)


def test_usage_baseline_and_regulation_per_target_from_the_plan() -> None:
    now = datetime.now(UTC)
    svc = Service(
        TOPO, ServiceConfig(horizon_s=3600.0), clock=ManualClock(now), sink=RecordingSink()
    )
    readings = PlanReadings(every_s=0.0)
    readings.refresh(svc)  # no plan yet: usage only, zero
    assert readings(OpenAdr3Target(type="feeder", id="f1")) == Readings(usage_kw=0.0)
    for i, site in enumerate(["s1", "s1", "s3"]):
        svc.on_telemetry(
            SessionStarted(
                ts=now,
                feeder_id="f1" if site == "s1" else "f2",
                site_id=site,
                evse_id=f"e{i}",
                csms_id="cs-a",
                session_id=f"x{i}",
                departure=now + timedelta(hours=1),
                energy_requested_kwh=30.0,
                max_power_kw=11.0,
            )
        )
    svc.tick()
    svc.dispatch(0.0)
    assert svc.plan is not None
    readings.refresh(svc)
    f1 = readings(OpenAdr3Target(type="feeder", id="f1"))
    fleet = readings(OpenAdr3Target(type="fleet", id="fleet"))
    s1 = readings(OpenAdr3Target(type="site", id="s1"))
    measured = svc.measured_power_kw()
    assert f1.usage_kw == measured["f1"] and fleet.usage_kw == measured["fleet"]
    # two sessions of 11 kW max on f1: the plan's baseline and the room up stay within them
    assert f1.baseline_kw is not None and 0.0 < f1.baseline_kw <= 22.0 + 1e-6
    assert s1.baseline_kw == f1.baseline_kw and s1.up_kw is None  # no sub-plan per site
    assert f1.up_kw is not None and f1.down_kw is not None
    assert 0.0 <= f1.up_kw <= 22.0 - f1.baseline_kw + 1e-6
    assert 0.0 <= f1.down_kw <= f1.baseline_kw + 1e-6
    assert fleet.baseline_kw is not None
    assert fleet.baseline_kw >= f1.baseline_kw
    assert readings(OpenAdr3Target(type="site", id="nowhere")) == Readings(usage_kw=0.0)


def test_public_surface() -> None:
    assert sorted(oadr3.__all__) == [
        "AuthRefused",
        "OpenAdr3Config",
        "OpenAdr3Target",
        "OpenAdr3Ven",
        "Readings",
        "TokenSource",
        "Ven3Status",
        "VtnClient",
        "VtnError",
        "add_duration",
        "event_to_limits",
        "event_windows",
        "limit_id",
        "power_kw",
        "report_body",
        "safe_mode_caps",
        "safe_mode_limits",
    ]
