"""The small fleet both OpenADR VEN integration tests curtail: two feeders of 60 kW, three
sites, five 11 kW cars that want 40 kWh each over 5 h (so a feeder limit binds)."""

from __future__ import annotations

from datetime import datetime, timedelta

from adapters.stream.inprocess import RecordingSink
from aggregator.interfaces import ManualClock
from aggregator.messages import SessionStarted
from aggregator.service.replica import Service, ServiceConfig
from aggregator.topology import Feeder, Site, Topology

TOPO = Topology(
    feeders=(Feeder("f1", 60.0), Feeder("f2", 60.0)),
    sites=(
        Site("s1", "f1", 40.0, csms_id="cs-a"),
        Site("s2", "f1", 30.0, csms_id="cs-b"),
        Site("s3", "f2", 40.0, csms_id="cs-a"),
    ),
)


def charging_fleet(now: datetime) -> tuple[Service, ManualClock, RecordingSink]:
    """A service on :data:`TOPO` with the five sessions started at ``now``."""
    clock = ManualClock(now)
    sink = RecordingSink()
    svc = Service(TOPO, ServiceConfig(horizon_s=6 * 3600.0), clock=clock, sink=sink)
    for i, site in enumerate(["s1", "s1", "s2", "s2", "s3"]):
        svc.on_telemetry(
            SessionStarted(
                ts=now,
                feeder_id="f2" if site == "s3" else "f1",
                site_id=site,
                evse_id=f"e{i}",
                csms_id="cs-b" if site == "s2" else "cs-a",
                session_id=f"sess{i}",
                departure=now + timedelta(hours=5),
                energy_requested_kwh=40.0,
                max_power_kw=11.0,
            )
        )
    return svc, clock, sink
