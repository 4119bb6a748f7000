"""The small fleet the DSO protocol integration tests (OpenADR 2.0b and 3, OSCP) curtail:
two feeders of 60 kW, three sites, five 11 kW cars that want 40 kWh each over 5 h (so a
feeder limit binds), and the rig around it."""

from __future__ import annotations

import queue
from dataclasses import dataclass
from datetime import datetime, timedelta

from adapters.dso.intake import LimitIntake, Signal
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


@dataclass
class DsoRig:
    """The fleet, its batches, and the intake a DSO protocol adapter submits to: what the
    intake publishes waits in ``signals`` until :meth:`next_signal` hands it to the service."""

    service: Service
    sink: RecordingSink
    clock: ManualClock
    signals: queue.Queue[Signal]
    intake: LimitIntake

    @classmethod
    def charging(cls, now: datetime) -> DsoRig:
        svc, clock, sink = charging_fleet(now)
        signals: queue.Queue[Signal] = queue.Queue()
        return cls(svc, sink, clock, signals, LimitIntake(TOPO, lambda _k, m: signals.put(m)))

    def feeder_kw(self, field: str = "power_kw") -> dict[str, float]:
        """Σ per feeder of the latest batches' ``power_kw`` (or ``failsafe_kw``)."""
        latest = {b.csms_id: b for b in self.sink.batches}
        fleet = self.service.fleet
        out = {f.feeder_id: 0.0 for f in TOPO.feeders}
        for batch in latest.values():
            for evse, kw in zip(batch.evse_ids, getattr(batch, field), strict=True):
                out[TOPO.sites[int(fleet.site[fleet.slot_of[evse]])].feeder_id] += kw
        return out

    def dispatch(self, at: datetime) -> dict[str, float]:
        """Σ setpoints per feeder after a tick and a dispatch at ``at``."""
        self.clock.set(at)
        self.service.tick()
        self.service.dispatch(0.0)
        return self.feeder_kw()

    def next_signal(self, timeout_s: float = 20.0) -> Signal:
        msg = self.signals.get(timeout=timeout_s)
        assert self.service.on_grid_signal(msg) is None
        return msg
