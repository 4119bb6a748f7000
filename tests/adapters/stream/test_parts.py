"""The runner's parts: partitioning, topic creation, the state writer, the gate, the router."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from kafka.partitioner.default import murmur2 as kafka_murmur2

from adapters.csms.recording import RecordingSink
from adapters.stream.fake import FakeBroker, FakeTransport
from adapters.stream.gate import GatedSink
from adapters.stream.router import Rejection, route, route_frequency
from adapters.stream.state import StateWriter
from adapters.stream.topics import ensure_topics, feeder_partition, murmur2
from adapters.stream.transport import Message, TopicPartition, TopicSpec
from aggregator.errors import ConfigError
from aggregator.fleet import ApplyOutcome, ApplyResult, SessionState
from aggregator.messages import SetpointBatch
from aggregator.service.events import SessionChanged
from tests.adapters.stream.conftest import T0, Cluster, settings


def test_murmur2_is_kafkas_default_partitioner() -> None:
    for n in range(300):
        data = os.urandom(n % 41)
        assert murmur2(data) == kafka_murmur2(data)
    assert feeder_partition("f1", 6) == (kafka_murmur2(b"f1") & 0x7FFFFFFF) % 6


def test_missing_topics_are_created_with_the_state_topic_compacted() -> None:
    broker = FakeBroker()
    t = FakeTransport(broker, group_id="g", frequency_topic="other")
    k = settings(partitions=4)
    created = ensure_topics(t, k)
    assert set(created) == {
        k.telemetry_topic,
        k.grid_signals_topic,
        k.frequency_topic,
        k.setpoints_topic,
        k.state_topic,
        k.deadletter_topic,
        k.fleet_control(),
    }
    assert len(broker.topics[k.fleet_control()]) == 1  # one owner: the fleet splitter
    assert broker.configs[k.state_topic] == {"cleanup.policy": "compact"}
    assert broker.configs[k.telemetry_topic] == {}
    assert len(broker.topics[k.telemetry_topic]) == 4
    assert ensure_topics(t, k) == []  # nothing left to create


def test_without_creation_start_up_fails_at_once_naming_each_topic() -> None:
    broker = FakeBroker()
    t = FakeTransport(broker, group_id="g", frequency_topic="x.frequency")
    k = settings(create_topics=False, frequency_topic="x.frequency")
    with pytest.raises(ConfigError) as err:
        ensure_topics(t, k)
    missing = {i.ids[0] for i in err.value.issues}
    assert k.state_topic in missing and k.frequency_topic not in missing
    state = next(i for i in err.value.issues if i.ids == (k.state_topic,))
    assert state.code == "topic_missing"
    assert "--config cleanup.policy=compact" in state.message


def test_a_broker_refusing_creation_is_reported_with_the_command() -> None:
    class Refusing(FakeTransport):
        def create_topics(self, specs: list[TopicSpec]) -> dict[str, str | None]:  # type: ignore[override]
            return {s.name: "TOPIC_AUTHORIZATION_FAILED" for s in specs}

    t = Refusing(FakeBroker(), group_id="g", frequency_topic="f")
    with pytest.raises(ConfigError) as err:
        ensure_topics(t, settings(frequency_topic="f"))
    assert {i.code for i in err.value.issues} == {"topic_not_created"}
    assert all("kafka-topics.sh" in i.message for i in err.value.issues)


def test_telemetry_and_grid_signals_must_have_the_same_partitions() -> None:
    broker = FakeBroker()
    k = settings()
    broker.create_topic(k.telemetry_topic, 6)
    broker.create_topic(k.grid_signals_topic, 3)
    t = FakeTransport(broker, group_id="g", frequency_topic=k.frequency_topic)
    with pytest.raises(ConfigError) as err:
        ensure_topics(t, k)
    assert [i.code for i in err.value.issues] == ["partition_mismatch"]


def _state(evse: str, session: str, energy_kwh: float) -> SessionState:
    return SessionState(
        evse_id=evse,
        session_id=session,
        site_id="s1",
        csms_id="c",
        arrival=T0,
        departure=T0 + timedelta(hours=4),
        last_ts=T0,
        last_meter=T0,
        energy_requested_kwh=30.0,
        energy_kwh=energy_kwh,
        max_power_kw=11.0,
        min_power_kw=0.0,
        power_kw=5.0,
    )


class Clock:
    def __init__(self) -> None:
        self.s = 100.0

    def __call__(self) -> float:
        return self.s


def test_state_writes_at_start_and_end_at_once_and_coalesced_between() -> None:
    broker = FakeBroker()
    t = FakeTransport(broker, group_id="g", frequency_topic="f")
    clock = Clock()
    w = StateWriter(t, "state", interval_s=10.0, monotonic=clock)
    tp = TopicPartition("tel", 0)

    def change(offset: int, state: SessionState | None) -> None:
        w.position = (tp, offset)
        w.emit(SessionChanged.of(T0, "e1", "c", state))

    change(0, _state("e1", "a", 0.0))
    assert w.write_due() == 1  # a start: at once
    for k in range(1, 6):
        change(k, _state("e1", "a", float(k)))
        clock.s += 1.0
        assert w.write_due() == 0  # meter values inside the interval: held
    assert w.committable({tp: 6}) == {tp: 1}  # not past the first unwritten effect
    clock.s += 5.0
    assert w.write_due() == 1  # 10 s after the last write: the newest state
    assert w.committable({tp: 6}) == {tp: 6}
    change(6, None)
    assert w.write_due() == 1  # an end: at once (a tombstone)
    t.flush()
    values = [m.value for m in broker.records("state")]
    assert len(values) == 3 and values[-1] is None
    assert b'"energy_kwh":5.0' in (values[1] or b"")


def test_the_gate_drops_then_clamps_to_failsafe_then_passes() -> None:
    sink = RecordingSink()
    gate = GatedSink(sink)
    batch = SetpointBatch(
        csms_id="c",
        seq=1,
        issued_at=T0,
        valid_until=T0 + timedelta(minutes=2),
        evse_ids=["a", "b"],
        power_kw=[11.0, 2.0],
        failsafe_kw=[4.2, 4.2],
    )
    gate.publish(batch)
    assert sink.batches == [] and gate.dropped == 1
    gate.prior_failsafe = {"a": 3.0}
    gate.to_failsafe_only()
    gate.publish(batch)
    assert sink.batches[-1].power_kw == [3.0, 2.0]
    assert sink.batches[-1].failsafe_kw == [3.0, 4.2]
    gate.open()
    gate.publish(batch)
    assert sink.batches[-1] == batch


class StubService:
    """Answers the router's typed calls with fixed outcomes."""

    def __init__(self, telemetry: ApplyResult, limit: str | None) -> None:
        self.telemetry, self.limit = telemetry, limit

    def on_telemetry(self, msg: object) -> ApplyResult:
        return self.telemetry

    def on_grid_signal(self, msg: object) -> str | None:
        return self.limit

    def on_frequency(self, msg: object) -> None:
        return None


def test_router_codes() -> None:
    topics = settings().topics()
    cluster = Cluster()
    cluster.start(1, "s1")
    cluster.limit("f1", 10.0)
    start = cluster.broker.records(topics.telemetry)[0]
    limit = cluster.broker.records(topics.grid_signals)[0]

    def msg(topic: str, value: bytes | None) -> Message:
        return Message(topic=topic, partition=0, offset=0, key=b"f1", value=value)

    rejected = StubService(ApplyResult(ApplyOutcome.REJECTED, "unknown_site"), "target_id: no")
    applied = StubService(ApplyResult(ApplyOutcome.DUPLICATE, "not_newer"), None)
    assert route(None, start, topics) == Rejection("not_ready")
    assert route(applied, start, topics) is None  # a duplicate is harmless
    assert route(applied, limit, topics) is None
    assert route(rejected, start, topics) == Rejection("unknown_site")
    assert route(rejected, limit, topics) == Rejection("limit_rejected", "target_id: no")
    assert route(applied, msg(topics.telemetry, None), topics).code == "no_value"  # type: ignore[union-attr]
    bad = route(applied, msg(topics.telemetry, b'{"v": 1}'), topics)
    assert bad is not None and bad.code == "invalid" and bad.reason.startswith("invalid: ")
    assert route(applied, msg("elsewhere", b"{}"), topics) == Rejection(
        "unknown_topic", "elsewhere"
    )
    assert route_frequency(applied, msg(topics.frequency, b"{}")).code == "invalid"  # type: ignore[arg-type,union-attr]
