"""gridflex edge on a real Kafka broker: setpoint batches for its CSMS id in (batches of
other CSMS ids ignored), telemetry out keyed by feeder with an idempotency key per record,
and a restarted edge's consumer group continues after the batches it already read."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from adapters.csms.edge.runner import EdgeRunner
from adapters.csms.edge.settings import EdgeSettings, load_edge_settings
from adapters.csms.edge.upstream import IDEMPOTENCY_HEADER, KafkaUpstream
from aggregator.interfaces import ManualClock
from aggregator.messages import SetpointBatch, encode
from tests.adapters.csms.stations import await_until, open_station


def _settings(tmp: Path, bootstrap: str, prefix: str) -> EdgeSettings:
    return load_edge_settings(
        None,
        csms_id="c1",
        edge_id="e1",
        state_dir=tmp,
        kafka_bootstrap=bootstrap,
        telemetry_topic=f"{prefix}.telemetry",
        grid_signals_topic=f"{prefix}.grid-signals",
        setpoints_topic=f"{prefix}.setpoints",
        reports_topic=f"{prefix}.edge-reports",
        ocpp={"port": 0, "security_profile": 1, "needs_wait_s": 0, "phase_timeout_s": 120},
        sites=[{"id": "s1", "feeder": "f1", "cap_kw": 50.0, "stations": ["k1"]}],
        stations=[{"id": "k1", "password": "pw"}],
    )


def _upstream(s: EdgeSettings) -> KafkaUpstream:
    return KafkaUpstream(
        s.kafka_bootstrap, s.csms_id, s.edge_id, topics=s.topics(), reports_topic=s.reports_topic
    )


def _batch(csms: str, seq: int, kw: float) -> bytes:
    now = datetime.now(UTC)
    return encode(
        SetpointBatch(
            csms_id=csms,
            seq=seq,
            issued_at=now,
            valid_until=now + timedelta(seconds=120),
            evse_ids=["k1/1"],
            power_kw=[kw],
            failsafe_kw=[4.2],
        )
    )


async def _run(tmp: Path, bootstrap: str) -> None:
    prefix = f"e{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics(
        [
            NewTopic(f"{prefix}.{n}", 3, 1)
            for n in ("telemetry", "grid-signals", "setpoints", "edge-reports")
        ]
    )
    admin.close()
    s = _settings(tmp, bootstrap, prefix)
    clock = ManualClock(datetime.now(UTC))
    runner = EdgeRunner(s, clock, _upstream(s))
    await runner.start()
    ep = runner.targets[0].endpoint  # type: ignore[attr-defined]
    st, _task = await open_station(
        f"ws://127.0.0.1:{runner.targets[0].port}/ocpp",
        "k1",
        password="pw",  # type: ignore[attr-defined]
    )
    await st.boot(1)
    await st.tx("Started", 1, "kt1", 0.0, 0.0)
    await await_until(lambda: "k1" in ep.ready, 30, "station set up")
    prod = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    prod.send(s.setpoints_topic, key=b"other", value=_batch("other", 1, 2.0))
    prod.send(s.setpoints_topic, key=b"c1", value=_batch("c1", 1, 6.9))
    prod.flush()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while runner.counters.get("batches.applied", 0) < 1:
        assert loop.time() < deadline, f"no batch applied: {runner.counters}"
        await runner.step()
        await asyncio.sleep(0.1)
    tx = [p for _t, _e, p in st.rec.profiles if p["charging_profile_purpose"] == "TxProfile"]
    assert tx and tx[-1]["charging_schedule"][0]["charging_schedule_period"][0]["limit"] == 10.0
    await st.tx("Updated", 1, "kt1", 1200.0, 6900.0)
    assert runner.drain() > 0 and len(runner.buffer) == 0
    await runner.stop()
    runner.upstream.close()  # type: ignore[attr-defined]

    cons = KafkaConsumer(
        s.telemetry_topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    recs = list(cons)
    cons.close()
    assert {r.key for r in recs} == {b"f1"}
    keys = [dict(r.headers)[IDEMPOTENCY_HEADER].decode() for r in recs]
    assert len(keys) == len(set(keys)) and all(k.startswith("e1:") for k in keys)
    types = [json.loads(r.value)["type"] for r in recs]
    assert "session_started" in types and "meter_value" in types

    # a restarted edge (same group) does not apply the old batch again
    runner2 = EdgeRunner(s, clock, _upstream(s))
    for _ in range(20):
        await runner2.step()
        await asyncio.sleep(0.1)
    assert runner2.counters.get("batches.applied", 0) == 0
    runner2.upstream.close()  # type: ignore[attr-defined]
    runner2.buffer.close()


@pytest.mark.kafka
def test_edge_on_kafka(tmp_path: Path, kafka_bootstrap: str) -> None:
    asyncio.run(asyncio.wait_for(_run(tmp_path, kafka_bootstrap), 240))
