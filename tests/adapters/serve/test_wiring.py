"""The hand-over between DSO interfaces (API/VEN threads) and the service loop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.dso.intake import LimitIntake
from adapters.openadr import PricePoint
from adapters.serve.wiring import (
    BusInbox,
    PowerSnapshot,
    PriceInbox,
    kafka_publisher,
)
from adapters.stream.inprocess import InProcessBus, RecordingSink
from aggregator.interfaces import ManualClock, Record, Topics
from aggregator.messages import DsoLimitCancel, DsoLimitMessage, MeterValue, SessionStarted, encode
from aggregator.service.replica import Service, ServiceConfig
from aggregator.topology import Feeder, Site, Topology

T0 = datetime(2026, 1, 14, 17, tzinfo=UTC)
TOPO = Topology(
    (Feeder("f1", 60.0), Feeder("f2", 80.0)), (Site("s1", "f1", 40.0), Site("s2", "f2", 50.0))
)


def limit(target_type: str, target_id: str, kw: float = 10.0) -> DsoLimitMessage:
    return DsoLimitMessage(
        ts=T0,
        event_id=f"e-{target_id}",
        target_type=target_type,  # type: ignore[arg-type]
        target_id=target_id,
        start=T0,
        end=T0 + timedelta(hours=1),
        limit_kw=kw,
    )


def service() -> Service:
    return Service(TOPO, ServiceConfig(), clock=ManualClock(T0), sink=RecordingSink())


def clock() -> datetime:
    return T0


def test_the_ven_publisher_goes_through_the_intake() -> None:
    sent: list[tuple[str, object]] = []
    intake = LimitIntake(TOPO, lambda k, m: sent.append((k, m)), clock=clock)
    send = intake.relay
    reason = send(limit("site", "nowhere"))
    assert reason is not None and "unknown_site" in reason
    assert send(limit("site", "s2")) is None
    assert send(DsoLimitCancel(ts=T0, event_id="unknown")) is None  # nothing to cancel
    assert send(DsoLimitCancel(ts=T0, event_id="e-s2")) is None
    assert [(k, type(m).__name__) for k, m in sent] == [
        ("f2", "DsoLimitMessage"),
        ("f2", "DsoLimitCancel"),
    ]


def test_the_bus_inbox_applies_limits_and_telemetry_on_the_loop() -> None:
    svc = service()
    bus = InProcessBus()
    inbox = BusInbox()
    intake = LimitIntake(TOPO, inbox.publisher(svc.topics.grid_signals), clock=clock)
    intake.submit(limit("feeder", "f1", 7.0).to_domain())
    start = SessionStarted(
        ts=T0,
        feeder_id="f1",
        site_id="s1",
        evse_id="e1",
        csms_id="csms",
        session_id="x1",
        departure=T0 + timedelta(hours=4),
        energy_requested_kwh=10.0,
        max_power_kw=11.0,
    )
    inbox.ingest(svc.topics.telemetry)([encode(start)])
    assert not svc.limits.limits  # nothing applied from the producer's thread
    assert inbox.drain_into(bus) == 2
    for rec in bus.poll():
        assert svc.handle(rec) is None
    assert [lim.limit_kw for lim in svc.limits.limits] == [7.0]


def test_kafka_publisher_produces_under_the_intakes_key() -> None:
    class Producer:
        def __init__(self) -> None:
            self.sent: list[tuple[str, bytes]] = []
            self.flushed = 0

        def send(self, topic: str, key: bytes, value: bytes) -> None:
            self.sent.append((topic, key))

        def flush(self) -> None:
            self.flushed += 1

    p = Producer()
    intake = LimitIntake(TOPO, kafka_publisher(p, "signals"), clock=clock)
    intake.submit(limit("site", "s1").to_domain())
    intake.cancel("e-s1", source="rest")
    assert p.sent == [("signals", b"f1"), ("signals", b"f1")]
    assert p.flushed == 2


def test_power_snapshot_sums_measured_power_by_site_feeder_and_fleet() -> None:
    svc = service()
    t = Topics().telemetry
    for i, site in enumerate(["s1", "s1", "s2"]):
        feeder = "f1" if site == "s1" else "f2"
        start = SessionStarted(
            ts=T0,
            feeder_id=feeder,
            site_id=site,
            evse_id=f"e{i}",
            csms_id="c",
            session_id=f"x{i}",
            departure=T0 + timedelta(hours=4),
            energy_requested_kwh=20,
            max_power_kw=11,
        )
        svc.handle(Record(t, feeder, encode(start)))
        meter = MeterValue(
            ts=T0 + timedelta(seconds=10),
            feeder_id=feeder,
            evse_id=f"e{i}",
            session_id=f"x{i}",
            energy_kwh=0.1,
            power_kw=5.0 + i,
        )
        svc.handle(Record(t, feeder, encode(meter)))
    snap = PowerSnapshot()
    assert snap.kw("s1") == 0.0
    snap.refresh(svc)
    assert snap.kw("s1") == pytest.approx(11.0)
    assert snap.kw("f2") == pytest.approx(7.0)
    assert snap.kw("fleet") == pytest.approx(18.0)


def test_price_inbox_sets_the_service_prices() -> None:
    svc = service()
    inbox = PriceInbox()
    inbox.put([PricePoint(T0, T0 + timedelta(hours=1), price_eur_per_mwh=120.0, event_id="p")])
    inbox.drain(svc)
    assert svc.prices is not None
    assert float(svc.prices.at(svc.prices.start_s)[0]) == 120.0


def test_open_audit_exports_the_head_and_refuses_a_broken_chain(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from adapters.dso.audit import fallback_taken
    from adapters.serve.wiring import open_audit, ven_ready
    from aggregator.errors import InvalidInput

    registry = CollectorRegistry()
    assert open_audit(None, registry) is None
    audit = open_audit(tmp_path / "a.jsonl", registry)
    assert audit is not None
    entry = fallback_taken(audit, "x", T0)
    audit.close()
    labels = {"hash": entry.hash, "path": str(tmp_path / "a.jsonl")}
    assert registry.get_sample_value("gridflex_audit_head_info", labels) == 1.0
    (tmp_path / "a.jsonl").write_text("{}\n" + (tmp_path / "a.jsonl").read_text())
    with pytest.raises(InvalidInput):
        open_audit(tmp_path / "a.jsonl", CollectorRegistry())
    assert ven_ready(None)
