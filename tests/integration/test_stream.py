"""The streaming service on a real Apache Kafka broker (started by scripts/kafka.sh).

Replicas are real ``gridflex serve`` processes: telemetry in → limit-respecting setpoints
out, bad records dead-lettered while good ones flow, and a replica killed with SIGKILL
replaced by a second one that rebuilds from the compacted state topic.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from aggregator.messages import DsoLimitMessage, FrequencySample, MeterValue
from tests.integration.streaming import (
    FEEDER_CAP,
    SITE_CAP,
    SITE_OF,
    TOPOLOGY,
    Replica,
    Streams,
    now,
    read_batches,
    send,
    session,
    sums,
)

pytestmark = pytest.mark.kafka
N = 12


@pytest.fixture
def streams(kafka_bootstrap: str) -> Streams:
    s = Streams(kafka_bootstrap)
    s.create()
    return s


@pytest.fixture
def topology(tmp_path: Path) -> Path:
    p = tmp_path / "topology.yaml"
    p.write_text(TOPOLOGY)
    return p


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[Replica]]:
    started: list[Replica] = []
    yield started
    for r in started:
        r.stop()


def start_sessions(streams: Streams) -> None:
    prod = streams.producer()
    t = now()
    for i in range(N):
        msg = session(i, SITE_OF[f"e{i:02d}"], t)
        send(prod, streams.topic("telemetry"), msg.feeder_id, msg)
    prod.flush()
    prod.close()


def frequency(streams: Streams, hz: float = 50.0, count: int = 1) -> None:
    prod = streams.producer()
    for _ in range(count):
        send(prod, streams.topic("frequency"), None, FrequencySample(ts=now(), hz=hz))
        prod.flush()
        time.sleep(0.1)
    prod.close()


def test_telemetry_in_limit_respecting_setpoints_out(
    streams: Streams, topology: Path, replicas: list[Replica], tmp_path: Path
) -> None:
    r = Replica(streams, topology, "g1", tmp_path / "r1.log")
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
    time.sleep(3)  # the replica consumes and re-plans
    consumer = streams.consumer("setpoints")
    frequency(streams, 49.9, count=5)
    batches = read_batches(consumer, 5)
    assert batches, r.log.read_text()[-2000:]
    assert {b.csms_id for b in batches} == {"csms-f1", "csms-f2"}
    latest = [b for b in batches if b.source_ts is not None]
    site, feeder = sums(latest)
    for s, cap in SITE_CAP.items():
        assert site[s] <= cap + 1e-6
    assert feeder["f1"] <= 12.0 + 1e-6  # the DSO limit
    assert feeder["f2"] <= FEEDER_CAP["f2"] + 1e-6
    evses = {e for b in latest for e in b.evse_ids}
    assert evses == {f"e{i:02d}" for i in range(N)}
    for b in latest:
        assert b.valid_until > b.issued_at and all(f <= 4.2 for f in b.failsafe_kw)
    metrics = r.metrics()
    assert "gridflex_messages_in_total" in metrics and "gridflex_ready 1.0" in metrics


def test_bad_records_go_to_the_dead_letter_topic_and_good_ones_flow(
    streams: Streams, topology: Path, replicas: list[Replica], tmp_path: Path
) -> None:
    r = Replica(streams, topology, "g2", tmp_path / "r.log")
    replicas.append(r)
    r.wait_ready()
    prod = streams.producer()
    tel = streams.topic("telemetry")
    prod.send(tel, key=b"f1", value=b"{this is not json")
    prod.send(tel, key=b"f1", value=b'{"v": 1, "type": "meter_value", "evse_id": "e01"}')
    bad_site = session(99, "s1", now()).model_copy(update={"site_id": "nowhere"})
    send(prod, tel, "f1", bad_site)
    prod.flush()
    start_sessions(streams)  # good records after the bad ones
    time.sleep(2)
    consumer = streams.consumer("setpoints")
    frequency(streams, 50.0, count=3)
    batches = read_batches(consumer, 4)
    assert {e for b in batches for e in b.evse_ids} == {f"e{i:02d}" for i in range(N)}
    dead = streams.consumer("deadletter")
    records = [rec for rs in dead.poll(timeout_ms=5000).values() for rec in rs]
    reasons = [dict(rec.headers)["reason"].decode() for rec in records]
    assert len(records) == 3, reasons
    assert any("json" in x for x in reasons)
    assert any("session_id" in x for x in reasons)
    assert "unknown_site" in reasons
    assert all(dict(rec.headers)["source-topic"].decode() == tel for rec in records)


def test_sigkill_replica_is_replaced_from_the_state_topic(
    streams: Streams, topology: Path, replicas: list[Replica], tmp_path: Path
) -> None:
    a = Replica(streams, topology, "g3", tmp_path / "a.log")
    replicas.append(a)
    a.wait_ready()
    start_sessions(streams)
    prod = streams.producer()
    tel = streams.topic("telemetry")
    sent = 0
    for i in range(N):  # meter values: every EVSE has charged a bit
        e = f"e{i:02d}"
        msg = MeterValue(
            ts=now(),
            feeder_id="f1" if SITE_OF[e] != "s3" else "f2",
            evse_id=e,
            session_id=f"sess-{i}",
            energy_kwh=1.0 + i,
            power_kw=5.0,
        )
        send(prod, tel, msg.feeder_id, msg)
        sent += 1
    prod.flush()
    time.sleep(3)
    b = Replica(streams, topology, "g3", tmp_path / "b.log")
    replicas.append(b)
    b.wait_ready()
    time.sleep(2)
    a.kill()
    killed = time.monotonic()
    # telemetry keeps coming while the group rebalances: none of it may be lost
    for i in range(N):
        e = f"e{i:02d}"
        msg = MeterValue(
            ts=now(),
            feeder_id="f1" if SITE_OF[e] != "s3" else "f2",
            evse_id=e,
            session_id=f"sess-{i}",
            energy_kwh=20.0 + i,
            power_kw=6.0,
        )
        send(prod, tel, msg.feeder_id, msg)
    prod.flush()
    consumer = streams.consumer("setpoints")
    covered: set[str] = set()
    latest: list = []
    while time.monotonic() - killed < 10.0 and covered != set(SITE_OF) - {
        f"e{i:02d}" for i in range(N, 30)
    }:
        frequency(streams, 50.0, count=1)
        fresh = [
            x for x in read_batches(consumer, 0.5) if x.issued_at.timestamp() > time.time() - 60
        ]
        latest += fresh
        recent = [x for x in latest if x.issued_at.timestamp() >= killed_wall(killed)]
        covered = {e for x in recent for e in x.evse_ids}
    elapsed = time.monotonic() - killed
    assert covered == {f"e{i:02d}" for i in range(N)}, (elapsed, b.log.read_text()[-3000:])
    assert elapsed <= 10.0
    site, feeder = sums([x for x in latest if x.issued_at.timestamp() >= killed_wall(killed)])
    for s, cap in SITE_CAP.items():
        assert site[s] <= cap + 1e-6
    for f, cap in FEEDER_CAP.items():
        assert feeder[f] <= cap + 1e-6
    # no telemetry lost: the state topic ends at the newest meter value of every EVSE
    time.sleep(2)
    state = streams.consumer("state")
    final: dict[str, bytes | None] = {}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for rs in state.poll(timeout_ms=300).values():
            for rec in rs:
                final[rec.key.decode()] = rec.value
    energies = {k: json.loads(v)["energy_kwh"] for k, v in final.items() if v}
    assert energies == {f"e{i:02d}": 20.0 + i for i in range(N)}
    restored = [ev for ev in b.log_events() if ev.get("event") == "partitions_assigned"]
    assert any(int(ev.get("restored_sessions", 0)) > 0 for ev in restored)  # type: ignore[call-overload]
    assert sent == N


_WALL_OFFSET = time.time() - time.monotonic()


def killed_wall(mono: float) -> float:
    return mono + _WALL_OFFSET
