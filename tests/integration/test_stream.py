"""The streaming service on a real Apache Kafka broker (started by scripts/kafka.sh).

Replicas are real ``gridflex serve`` processes, on each Kafka client the service ships
(confluent-kafka, the default, and kafka-python): telemetry in → limit-respecting
setpoints out, bad records dead-lettered while good ones flow, and a replica killed with
SIGKILL replaced by a second one that rebuilds from the compacted state topic. Every batch
is also checked by the independent checker. No fixed sleeps: every wait is for a
condition, with a deadline.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.messages import DsoLimitMessage, MeterValue
from tests.conftest import wait_until
from tests.integration.checker import Limit, SetpointChecker
from tests.integration.streaming import (
    CLIENTS,
    FEEDER_CAP,
    SITE_CAP,
    SITE_OF,
    Replica,
    Streams,
    answer,
    cap_model,
    now,
    send,
    session,
    sums,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
N = 12
EVSES = {f"e{i:02d}" for i in range(N)}
CSMS = {"csms-f1", "csms-f2"}


def start_sessions(streams: Streams) -> None:
    prod = streams.producer()
    t = now()
    for i in range(N):
        msg = session(i, SITE_OF[f"e{i:02d}"], t)
        send(prod, streams.topic("telemetry"), msg.feeder_id, msg)
    prod.flush()
    prod.close()


def meter_values(streams: Streams, energy0_kwh: float, power_kw: float) -> None:
    prod = streams.producer()
    for i in range(N):
        e = f"e{i:02d}"
        msg = MeterValue(
            ts=now(),
            feeder_id="f1" if SITE_OF[e] != "s3" else "f2",
            evse_id=e,
            session_id=f"sess-{i}",
            energy_kwh=energy0_kwh + i,
            power_kw=power_kw,
        )
        send(prod, streams.topic("telemetry"), msg.feeder_id, msg)
    prod.flush()
    prod.close()


def consumed_at_least(replica: Replica, topic: str, n: int, timeout_s: float = 60) -> None:
    wait_until(
        lambda: replica.consumed(topic) >= n,
        timeout_s,
        f"{n} records of {topic} consumed",
        detail=replica.tail,
    )


@pytest.mark.parametrize("client", CLIENTS)
def test_telemetry_in_limit_respecting_setpoints_out(
    client: str,
    streams: Streams,
    topology: Path,
    replicas: list[Replica],
    checker: SetpointChecker,
    tmp_path: Path,
) -> None:
    r = Replica(streams, topology, "g1", tmp_path / "r1.log", client=client)
    replicas.append(r)
    r.wait_ready()
    assert r.get("/livez") == 200
    start_sessions(streams)
    prod = streams.producer()
    t = now()
    limit = DsoLimitMessage(
        ts=t,
        event_id="cut-f1",
        target_type="feeder",
        target_id="f1",
        start=t - timedelta(minutes=1),
        end=t + timedelta(hours=2),
        limit_kw=12.0,
    )
    send(prod, streams.topic("grid-signals"), "f1", limit)
    prod.flush()
    prod.close()
    consumed_at_least(r, streams.topic("telemetry"), N)
    consumed_at_least(r, streams.topic("grid-signals"), 1)
    latest = answer(streams, checker, CSMS, hz=49.9, detail=r.tail)
    site, feeder = sums(latest)
    for s, cap in SITE_CAP.items():
        assert site[s] <= cap + 1e-6
    assert feeder["f1"] <= 12.0 + 1e-6  # the DSO limit
    assert feeder["f2"] <= FEEDER_CAP["f2"] + 1e-6
    assert {e for b in latest for e in b.evse_ids} == EVSES
    for b in latest:
        assert b.valid_until > b.issued_at and all(f <= 4.2 for f in b.failsafe_kw)
    # from the answered sample on, everything in force holds the limit (independent check)
    since = min(b.received_at for b in latest)
    dso = Limit(
        event_id="cut-f1",
        target_type="feeder",
        target_id="f1",
        start=limit.start,
        end=limit.end,
        limit_kw=12.0,
    )
    report = checker.check(cap_model(N), [dso], since, datetime.now(UTC))
    assert report.ok, report.summary()
    metrics = r.metrics()
    assert "gridflex_messages_in_total" in metrics and "gridflex_ready 1.0" in metrics


@pytest.mark.parametrize("client", CLIENTS)
def test_bad_records_go_to_the_dead_letter_topic_and_good_ones_flow(
    client: str,
    streams: Streams,
    topology: Path,
    replicas: list[Replica],
    checker: SetpointChecker,
    tmp_path: Path,
) -> None:
    r = Replica(streams, topology, "g2", tmp_path / "r.log", client=client)
    replicas.append(r)
    r.wait_ready()
    prod = streams.producer()
    tel = streams.topic("telemetry")
    prod.send(tel, key=b"f1", value=b"{this is not json")
    prod.send(tel, key=b"f1", value=b'{"v": 1, "type": "meter_value", "evse_id": "e01"}')
    bad_site = session(99, "s1", now()).model_copy(update={"site_id": "nowhere"})
    send(prod, tel, "f1", bad_site)
    prod.flush()
    prod.close()
    start_sessions(streams)  # good records after the bad ones
    consumed_at_least(r, tel, N + 3)
    batches = answer(streams, checker, CSMS, detail=r.tail)
    assert {e for b in batches for e in b.evse_ids} == EVSES
    dead = streams.consumer("deadletter")
    records: list = []

    def three_dead_letters() -> bool:
        records.extend(rec for rs in dead.poll(timeout_ms=200).values() for rec in rs)
        return len(records) >= 3

    wait_until(three_dead_letters, 30, "3 dead letters", detail=r.tail)
    records.extend(rec for rs in dead.poll(timeout_ms=500).values() for rec in rs)  # no more
    reasons = [dict(rec.headers)["reason"].decode() for rec in records]
    assert len(records) == 3, reasons
    assert any("json" in x for x in reasons)
    assert any("session_id" in x for x in reasons)
    assert "unknown_site" in reasons
    assert all(dict(rec.headers)["source-topic"].decode() == tel for rec in records)


@pytest.mark.parametrize("client", CLIENTS)
def test_sigkill_replica_is_replaced_from_the_state_topic(
    client: str,
    streams: Streams,
    topology: Path,
    replicas: list[Replica],
    checker: SetpointChecker,
    tmp_path: Path,
) -> None:
    tel = streams.topic("telemetry")
    a = Replica(streams, topology, "g3", tmp_path / "a.log", client=client)
    replicas.append(a)
    a.wait_ready()
    start_sessions(streams)
    meter_values(streams, 1.0, 5.0)  # every EVSE has charged a bit
    consumed_at_least(a, tel, 2 * N)
    b = Replica(streams, topology, "g3", tmp_path / "b.log", client=client)
    replicas.append(b)
    b.wait_ready()
    wait_until(lambda: a.get("/readyz") == 200, 60, "a ready again after the rebalance")
    a.kill()
    killed = datetime.now(UTC)
    # telemetry keeps coming while the group rebalances: none of it may be lost
    meter_values(streams, 20.0, 6.0)

    def covered_after_kill() -> bool:
        answer(streams, checker, set(), detail=b.tail)  # a sample; batches in the checker
        recent = [x for x in checker.received() if x.received_at >= killed]
        return {e for x in recent for e in x.evse_ids} >= EVSES

    wait_until(
        covered_after_kill, 60, "the survivor naming every EVSE", interval_s=0.5, detail=b.tail
    )
    took_over = datetime.now(UTC)
    recent = [x for x in checker.received() if x.received_at >= killed]
    site, feeder = sums(recent)
    for s, cap in SITE_CAP.items():
        assert site[s] <= cap + 1e-6
    for f, cap in FEEDER_CAP.items():
        assert feeder[f] <= cap + 1e-6
    # every setpoint in force from the kill through the takeover holds every static cap
    report = checker.check(cap_model(N), [], killed, took_over)
    assert report.ok, report.summary()
    # no telemetry lost: the state topic ends at the newest meter value of every EVSE
    expected = {f"e{i:02d}": 20.0 + i for i in range(N)}

    def state_complete() -> dict[str, float] | None:
        final: dict[str, bytes | None] = {}
        state = streams.consumer("state")
        try:
            while polled := state.poll(timeout_ms=500):
                for rs in polled.values():
                    for rec in rs:
                        final[rec.key.decode()] = rec.value
        finally:
            state.close()
        got = {k: json.loads(v)["energy_kwh"] for k, v in final.items() if v}
        return got if got == expected else None

    wait_until(state_complete, 60, f"state topic at {expected}", interval_s=1.0, detail=b.tail)
    restored = [ev for ev in b.log_events() if ev.get("event") == "partitions_assigned"]
    assert any(int(ev.get("restored_sessions", 0)) > 0 for ev in restored)  # type: ignore[call-overload]
