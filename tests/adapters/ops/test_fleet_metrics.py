"""Lease gauges are computed at scrape time from delivered batches; power and caps follow
the service, a DSO limit lowering the cap in force."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from adapters.ops.fleet_metrics import FleetGauges
from adapters.stream.transport import TopicPartition
from aggregator.errors import TransientIO
from aggregator.interfaces import ManualClock
from aggregator.messages import SetpointBatch
from aggregator.service.replica import Service, ServiceConfig
from tests.adapters.ops.test_history import TOPO, feeder_limit, metered, started
from tests.aggregator.service.conftest import ListSink

T0 = datetime(2026, 1, 14, 17, 0, tzinfo=UTC)


def batch(csms: str, issued: datetime, lease_s: float) -> SetpointBatch:
    return SetpointBatch(
        csms_id=csms,
        seq=1,
        issued_at=issued,
        valid_until=issued + timedelta(seconds=lease_s),
        evse_ids=["e1"],
        power_kw=[3.0],
        failsafe_kw=[0.0],
    )


class Refusing:
    def publish(self, batch: SetpointBatch) -> bool:
        return False


def test_lease_age_and_remaining_move_with_the_clock_and_skip_dropped_batches() -> None:
    registry = CollectorRegistry()
    now = [T0.timestamp()]
    gauges = FleetGauges(registry, now=lambda: now[0])
    sink = gauges.leases(ListSink())
    sink.publish(batch("cs-a", T0, 120))
    gauges.leases(Refusing()).publish(batch("cs-b", T0, 120))  # dropped: no lease
    now[0] += 100

    def value(name: str, csms: str) -> float | None:
        return registry.get_sample_value(name, {"csms": csms})

    assert value("gridflex_lease_age_seconds", "cs-a") == 100
    assert value("gridflex_lease_remaining_seconds", "cs-a") == 20
    assert value("gridflex_lease_age_seconds", "cs-b") is None
    now[0] += 50
    assert value("gridflex_lease_remaining_seconds", "cs-a") == -30  # on failsafe now


def test_power_and_caps_follow_the_service() -> None:
    registry = CollectorRegistry()
    gauges = FleetGauges(registry)
    clock = ManualClock(T0)
    svc = Service(TOPO, ServiceConfig(), clock=clock, sink=ListSink())
    svc.handle(started(1, "s1", T0))
    svc.handle(metered(1, "s1", T0 + timedelta(seconds=5), 6.5))
    clock.advance(10)
    gauges.observe(svc)

    def value(name: str, level: str, target: str) -> float | None:
        return registry.get_sample_value(name, {"level": level, "id": target})

    assert value("gridflex_power_kw", "site", "s1") == 6.5
    assert value("gridflex_power_kw", "feeder", "f1") == 6.5
    assert value("gridflex_limit_kw", "feeder", "f1") == 60.0
    svc.handle(feeder_limit(20.0, clock.now()))
    gauges.observe(svc)
    assert value("gridflex_limit_kw", "feeder", "f1") == 20.0
    assert value("gridflex_limit_kw", "feeder", "f2") == 80.0


class StubTransport:
    """Two partitions per topic; this consumer holds partition 0 of each."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def partitions(self, topic: str) -> list[int]:
        return [0, 1]

    def position(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 40 for tp in tps if tp.partition == 0}

    def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        if self.fail:
            raise TransientIO("broker gone")
        return {tp: 100 if tp.topic == "t" else 40 for tp in tps}


def test_consumer_lag_of_held_partitions_is_exported_and_a_failure_is_no_lag() -> None:
    from adapters.serve.wiring import consumer_lag

    lag = consumer_lag(StubTransport(), ["t", "g"])
    assert lag == {("t", 0): 60, ("g", 0): 0}  # partition 1 is another replica's
    registry = CollectorRegistry()
    FleetGauges(registry).set_consumer_lag(lag)
    got = registry.get_sample_value(
        "gridflex_consumer_lag_records", {"topic": "t", "partition": "0"}
    )
    assert got == 60
    assert consumer_lag(StubTransport(fail=True), ["t"]) == {}
