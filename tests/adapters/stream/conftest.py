"""Replicas of the stream runner on the in-memory fake transport, with a manual clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel

from adapters.ops.metrics import Metrics
from adapters.stream.fake import FakeBroker, FakeTransport
from adapters.stream.runner import StreamRunner
from adapters.stream.settings import KafkaSettings
from aggregator.interfaces import ManualClock, SetpointSink
from aggregator.messages import (
    DsoLimitMessage,
    MeterValue,
    SessionEnded,
    SessionStarted,
    SetpointBatch,
    decode_setpoints,
    encode,
)
from aggregator.service.config import ServiceConfig
from aggregator.service.events import EventSink
from aggregator.service.planrunner import InlinePlanRunner, PlanEngine
from aggregator.service.replica import Service
from aggregator.topology import Feeder, Site, Topology

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
# f1 hashes to partition 3, f3 to partition 0 (of 6): with two replicas (range assignor)
# the first owns partitions 0-2 (f3), the second 3-5 (f1)
TOPO = Topology(
    (Feeder("f1", 100.0), Feeder("f3", 100.0)),
    (
        Site("s1", "f1", 80.0, None, "csms-1"),
        Site("s3", "f3", 80.0, None, "csms-3"),
    ),
)
SITE_FEEDER = {"s1": "f1", "s3": "f3"}
SITE_CSMS = {"s1": "csms-1", "s3": "csms-3"}
CONFIG = ServiceConfig(reserve_kw=0.0)


def settings(**kw: object) -> KafkaSettings:
    base: dict[str, object] = {"bootstrap": "fake:9092", "group_id": "g"}
    base.update(kw)
    return KafkaSettings.model_validate(base)


@dataclass
class Cluster:
    """A fake broker, a manual clock shared by broker timestamps and services, and helpers."""

    broker: FakeBroker = field(default_factory=FakeBroker)
    clock: ManualClock = field(default_factory=lambda: ManualClock(T0))
    kafka: KafkaSettings = field(default_factory=settings)

    def __post_init__(self) -> None:
        self.topics = self.kafka.topics()
        self.sync()

    def sync(self) -> None:
        self.broker.now_ms = int(self.clock.now().timestamp() * 1000)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.sync()

    def send(self, topic: str, key: str | None, msg: BaseModel) -> None:
        self.broker.append(topic, key.encode() if key else None, encode(msg))

    def raw(self, topic: str, key: str, value: bytes) -> None:
        self.broker.append(topic, key.encode(), value)

    def make_service(self) -> Callable[[Topology, SetpointSink, EventSink], Service]:
        def make(topo: Topology, sink: SetpointSink, events: EventSink) -> Service:
            return Service(
                topo,
                CONFIG,
                clock=self.clock,
                sink=sink,
                topics=self.topics,
                events=events,
                runner=InlinePlanRunner(PlanEngine.from_config(CONFIG)),
            )

        return make

    def replica(
        self, transport_type: type[FakeTransport] = FakeTransport, **kw: object
    ) -> tuple[StreamRunner, FakeTransport]:
        """A runner on a new fake transport (of ``transport_type``) in the cluster."""
        k = settings(**kw) if kw else self.kafka
        transport = transport_type(
            self.broker, group_id=k.group_id, frequency_topic=k.frequency_topic
        )
        runner = StreamRunner(
            TOPO,
            CONFIG,
            k,
            clock=self.clock,
            metrics=Metrics(),
            make_service=self.make_service(),
            transport=transport,
        )
        return runner, transport

    # --------------------------------------------------------------- messages

    def start(self, i: int, site: str, max_kw: float = 11.0) -> None:
        t = self.clock.now()
        msg = SessionStarted(
            ts=t,
            feeder_id=SITE_FEEDER[site],
            site_id=site,
            evse_id=f"e{i}",
            csms_id=SITE_CSMS[site],
            session_id=f"s-{i}",
            departure=t + timedelta(hours=6),
            energy_requested_kwh=40.0,
            max_power_kw=max_kw,
        )
        self.send(self.topics.telemetry, msg.feeder_id, msg)

    def meter(self, i: int, site: str, energy_kwh: float) -> None:
        self.advance(1.0)  # a meter value newer than the last one
        msg = MeterValue(
            ts=self.clock.now(),
            feeder_id=SITE_FEEDER[site],
            evse_id=f"e{i}",
            session_id=f"s-{i}",
            energy_kwh=energy_kwh,
            power_kw=5.0,
        )
        self.send(self.topics.telemetry, msg.feeder_id, msg)

    def end(self, i: int, site: str, energy_kwh: float) -> None:
        self.advance(1.0)
        msg = SessionEnded(
            ts=self.clock.now(),
            feeder_id=SITE_FEEDER[site],
            evse_id=f"e{i}",
            session_id=f"s-{i}",
            energy_kwh=energy_kwh,
        )
        self.send(self.topics.telemetry, msg.feeder_id, msg)

    def limit(self, feeder: str, kw: float, event_id: str = "cut") -> None:
        t = self.clock.now()
        msg = DsoLimitMessage(
            ts=t,
            event_id=event_id,
            target_type="feeder",
            target_id=feeder,
            start=t - timedelta(minutes=1),
            end=t + timedelta(hours=2),
            limit_kw=kw,
        )
        self.send(self.topics.grid_signals, feeder, msg)

    def batches(self) -> list[SetpointBatch]:
        return [
            decode_setpoints(m.value)
            for m in self.broker.records(self.topics.setpoints)
            if m.value is not None
        ]


def cycles(*runners: StreamRunner, n: int = 5) -> None:
    for _ in range(n):
        for r in runners:
            r.poll_once(0.0)


@pytest.fixture
def cluster() -> Cluster:
    return Cluster()
