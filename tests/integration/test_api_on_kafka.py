"""A DSO's REST limit reaches the replica that owns the feeder, through Kafka, and holds."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from adapters.dso.audit import verify
from tests.conftest import wait_until
from tests.integration.checker import SetpointChecker
from tests.integration.streaming import (
    TOPOLOGY,
    Replica,
    Streams,
    answer,
    free_port,
    now,
    sums,
)
from tests.integration.test_stream import N, consumed_at_least, start_sessions

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
TOKEN = "dso-a-secret-token"


def test_rest_limit_is_published_applied_cancelled_and_listed_after_a_restart_and_by_a_peer(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    streams = Streams(kafka_bootstrap)
    streams.create()
    checker = SetpointChecker(streams.bootstrap, streams.topic("setpoints")).start()
    topo = tmp_path / "topology.yaml"
    topo.write_text(TOPOLOGY)
    api_port = free_port()
    tokens = [
        {
            "sha256": hashlib.sha256(TOKEN.encode()).hexdigest(),
            "dso": "dso-a",
            "areas": ["f1"],
            "scopes": ["limits:read", "limits:write", "grid:read"],
        }
    ]
    replica_env = {
        "GRIDFLEX_API__PORT": str(api_port),
        "GRIDFLEX_API__TOKENS": json.dumps(tokens),
        "GRIDFLEX_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
    }
    replica = Replica(streams, topo, "api-g", tmp_path / "r.log", extra_env=replica_env)
    base = f"http://127.0.0.1:{api_port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        replica.wait_ready()
        start_sessions(streams)
        consumed_at_least(replica, streams.topic("telemetry"), N)
        t = now()
        body = {
            "target_type": "feeder",
            "target_id": "f1",
            "start": (t - timedelta(minutes=1)).isoformat(),
            "end": (t + timedelta(hours=1)).isoformat(),
            "limit_kw": 7.5,
            "event_id": "rest-1",
        }
        r = httpx.post(f"{base}/v1/limits", json=body, headers={**auth, "Idempotency-Key": "k1"})
        assert r.status_code == 201, r.text
        r2 = httpx.post(f"{base}/v1/limits", json=body, headers={**auth, "Idempotency-Key": "k1"})
        assert r2.status_code == 201 and r2.headers.get("Idempotent-Replayed") == "true"
        # another area is out of reach for this DSO
        other = {**body, "target_id": "f2", "event_id": "rest-2"}
        assert (
            httpx.post(
                f"{base}/v1/limits", json=other, headers={**auth, "Idempotency-Key": "k2"}
            ).status_code
            == 403
        )
        assert httpx.get(f"{base}/v1/limits").status_code == 401
        consumed_at_least(replica, streams.topic("grid-signals"), 1)
        batches = answer(streams, checker, {"csms-f1", "csms-f2"}, detail=replica.tail)
        _, feeder = sums(batches)
        assert batches and feeder["f1"] <= 7.5 + 1e-6
        signals = streams.consumer("grid-signals")
        recs: list = []
        wait_until(
            lambda: (
                recs.extend(x for rs in signals.poll(timeout_ms=300).values() for x in rs) or recs
            ),
            30,
            "the limit on the grid-signals topic",
        )
        recs.extend(x for rs in signals.poll(timeout_ms=500).values() for x in rs)
        assert [x.key for x in recs] == [b"f1"]  # published once, keyed by the feeder
        assert httpx.delete(f"{base}/v1/limits/rest-1", headers=auth).status_code == 204
        kept = {**body, "event_id": "rest-3", "limit_kw": 9.0}
        r = httpx.post(f"{base}/v1/limits", json=kept, headers={**auth, "Idempotency-Key": "k3"})
        assert r.status_code == 201, r.text
        lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
        limits = [
            (e["kind"], e["payload"]["event_id"]) for e in lines if e["kind"].startswith("limit.")
        ]
        assert limits == [  # once each, by the intake
            ("limit.received", "rest-1"),
            ("limit.cancelled", "rest-1"),
            ("limit.received", "rest-3"),
        ]
        assert verify(tmp_path / "audit.jsonl") == []
    finally:
        checker.stop()
        assert replica.stop() == 0

    # a restarted replica rebuilds the book from the grid-signals topic: the limit still in
    # force is listed with its source and can still be cancelled by its DSO; a second
    # replica's API (its own book, following the topic) sees what the first one takes
    again = Replica(streams, topo, "api-g", tmp_path / "r2.log", extra_env=replica_env)
    peer_port = free_port()
    peer_env = {
        **replica_env,
        "GRIDFLEX_API__PORT": str(peer_port),
        "GRIDFLEX_AUDIT_LOG": str(tmp_path / "peer-audit.jsonl"),
    }
    peer = Replica(streams, topo, "api-g", tmp_path / "peer.log", extra_env=peer_env)
    peer_base = f"http://127.0.0.1:{peer_port}"

    def listed(at: str) -> list[tuple[str, str, float]]:
        got = httpx.get(f"{at}/v1/limits", headers=auth).json()
        return [(x["event_id"], x["source"], x["limit_kw"]) for x in got]

    try:
        again.wait_ready()
        peer.wait_ready()
        assert listed(base) == listed(peer_base) == [("rest-3", "rest:dso-a", 9.0)]
        assert httpx.delete(f"{base}/v1/limits/rest-3", headers=auth).status_code == 204
        assert listed(base) == []
        wait_until(lambda: listed(peer_base) == [], 30, "the peer to drop the cancelled limit")
        moved = {**body, "event_id": "rest-4", "limit_kw": 8.0}
        r = httpx.post(
            f"{peer_base}/v1/limits", json=moved, headers={**auth, "Idempotency-Key": "k4"}
        )
        assert r.status_code == 201, r.text
        wait_until(
            lambda: listed(base) == [("rest-4", "rest:dso-a", 8.0)],
            30,
            "the first replica to list the limit posted through the peer",
        )
        assert httpx.delete(f"{base}/v1/limits/rest-4", headers=auth).status_code == 204
        assert verify(tmp_path / "audit.jsonl") == []  # the same chain, continued
    finally:
        assert again.stop() == 0
        assert peer.stop() == 0
