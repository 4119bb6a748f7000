"""The REST API's view survives a restart: limits from the grid-signals topic, idempotency
keys from their compacted topic (:mod:`adapters.api.durable`), both on a real broker.

Done when: after ``gridflex serve`` is stopped and started again, ``GET /v1/limits`` lists the
limit posted before, a retry with the same Idempotency-Key and body is answered from the
stored response (same status and body, ``Idempotent-Replayed: true``, nothing published
again), the same key with another body is a 409 — also on a second replica that never saw
the first request.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from kafka import KafkaConsumer, TopicPartition

from tests.integration.streaming import TOPOLOGY, Replica, Streams, free_port, now

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
TOKEN = "dso-a-durable-token"


def grid_signal_count(streams: Streams) -> int:
    topic = streams.topic("grid-signals")
    c = KafkaConsumer(bootstrap_servers=streams.bootstrap, group_id=None)
    parts = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic) or ()]
    ends = c.end_offsets(parts)
    c.close()
    return int(sum(ends.values()))


def test_limits_and_idempotency_keys_survive_a_restart_and_reach_a_peer(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    streams = Streams(kafka_bootstrap)
    streams.create(partitions=2)
    topo = tmp_path / "topology.yaml"
    topo.write_text(TOPOLOGY)
    api_port = free_port()
    tokens = [
        {
            "sha256": hashlib.sha256(TOKEN.encode()).hexdigest(),
            "dso": "dso-a",
            "areas": ["f1"],
            "scopes": ["limits:read", "limits:write"],
        }
    ]
    env = {"GRIDFLEX_API__PORT": str(api_port), "GRIDFLEX_API__TOKENS": json.dumps(tokens)}
    base = f"http://127.0.0.1:{api_port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    t = now()
    body = {
        "event_id": "durable-1",
        "target_type": "feeder",
        "target_id": "f1",
        "start": t.isoformat(),
        "end": (t + timedelta(hours=1)).isoformat(),
        "limit_kw": 21.0,
    }
    key = {**auth, "Idempotency-Key": "k-durable-1"}

    first = Replica(streams, topo, "durable-g", tmp_path / "r1.log", extra_env=env)
    try:
        first.wait_ready()
        created = httpx.post(f"{base}/v1/limits", json=body, headers=key)
        assert created.status_code == 201, created.text
    finally:
        assert first.stop() == 0
    published = grid_signal_count(streams)
    assert published == 1

    again = Replica(streams, topo, "durable-g", tmp_path / "r2.log", extra_env=env)
    peer_port = free_port()
    peer_env = {**env, "GRIDFLEX_API__PORT": str(peer_port)}
    peer = Replica(streams, topo, "durable-g", tmp_path / "peer.log", extra_env=peer_env)
    try:
        again.wait_ready()
        peer.wait_ready()
        for at in (base, f"http://127.0.0.1:{peer_port}"):
            listed = httpx.get(f"{at}/v1/limits", headers=auth).json()
            assert [(x["event_id"], x["limit_kw"]) for x in listed] == [("durable-1", 21.0)]
            retry = httpx.post(f"{at}/v1/limits", json=body, headers=key)
            assert retry.status_code == 201, retry.text
            assert retry.headers.get("Idempotent-Replayed") == "true"
            assert retry.json() == created.json()
            other = httpx.post(f"{at}/v1/limits", json={**body, "limit_kw": 5.0}, headers=key)
            assert other.status_code == 409, other.text
        assert grid_signal_count(streams) == published  # nothing was published again

    finally:
        assert again.stop() == 0
        assert peer.stop() == 0
