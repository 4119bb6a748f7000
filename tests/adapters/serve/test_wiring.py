"""The hand-over between DSO interfaces (API/VEN threads) and the service loop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters.openadr import PricePoint
from adapters.serve.wiring import (
    PowerSnapshot,
    PriceInbox,
    SignalQueue,
    feeder_key,
    kafka_publisher,
    validated,
)
from adapters.stream.inprocess import RecordingSink
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


def test_validated_rejects_unknown_targets_and_publishes_good_ones() -> None:
    sent: list[object] = []
    send = validated(TOPO, sent.append)
    assert send(limit("site", "nowhere")) is not None
    assert send(limit("feeder", "f1")) is None
    assert send(DsoLimitCancel(ts=T0, event_id="x")) is None
    assert len(sent) == 2


def test_signal_queue_applies_on_the_loop() -> None:
    svc = service()
    q = SignalQueue()
    q.put(limit("feeder", "f1", 7.0))
    assert not svc.limits.limits  # nothing applied from the producer's thread
    assert q.drain(svc) == 1
    assert [lim.limit_kw for lim in svc.limits.limits] == [7.0]


def test_feeder_keys_and_kafka_publisher_broadcast_cancels() -> None:
    assert feeder_key(TOPO, limit("site", "s2")) == "f2"
    assert feeder_key(TOPO, limit("feeder", "f1")) == "f1"

    class Producer:
        def __init__(self) -> None:
            self.sent: list[tuple[str, bytes]] = []

        def send(self, topic: str, key: bytes, value: bytes) -> None:
            self.sent.append((topic, key))

        def flush(self) -> None:
            return None

    p = Producer()
    publish = kafka_publisher(p, "signals", TOPO)
    publish(limit("site", "s1"))
    publish(DsoLimitCancel(ts=T0, event_id="e-s1"))
    assert p.sent == [
        ("signals", b"f1"),
        ("signals", b"f1"),
        ("signals", b"f2"),
        ("signals", b"fleet"),
    ]


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
