"""``gridflex serve`` (embedded) with the REST API: limits, hosting capacity from the model."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from adapters.serve.run import serve
from adapters.serve.settings import ApiSettings, ServeSettings
from adapters.stream.inprocess import RecordingSink
from tests.conftest import wait_until
from tests.integration.streaming import free_port

TOKEN = "token-of-dso-a"
TOPOLOGY = """
feeders:
  - {id: f1, limit_kw: 140, model: 1-LV-rural1--0-sw}
  - {id: f2, limit_kw: 80}
sites:
  - {id: farm, feeder: f1, connection_limit_kw: 44, bus: "LV1.101 Bus 4", csms: c1}
  - {id: shop, feeder: f2, connection_limit_kw: 30, csms: c2}
"""


def test_embedded_serve_answers_the_api_with_hosting_capacity(tmp_path: Path) -> None:
    topo = tmp_path / "topology.yaml"
    topo.write_text(TOPOLOGY)
    api, health = free_port(), free_port()
    tokens = [
        {
            "sha256": hashlib.sha256(TOKEN.encode()).hexdigest(),
            "dso": "dso-a",
            "areas": ["*"],
            "scopes": ["limits:read", "limits:write", "grid:read"],
        }
    ]
    env = {
        **os.environ,
        "GRIDFLEX_TOPOLOGY": str(topo),
        "GRIDFLEX_HTTP_PORT": str(health),
        "GRIDFLEX_API__PORT": str(api),
        "GRIDFLEX_API__TOKENS": json.dumps(tokens),
        "GRIDFLEX_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "GRIDFLEX_LOG_FORMAT": "json",
    }
    env.pop("GRIDFLEX_KAFKA__BOOTSTRAP", None)
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from adapters.cli.main import main; main()", "serve"],
        env=env,
        stdout=log,
        stderr=log,
    )
    base, auth = f"http://127.0.0.1:{api}", {"Authorization": f"Bearer {TOKEN}"}
    try:
        wait_until(
            lambda: httpx.get(f"{base}/v1/sites", headers=auth).status_code == 200,
            60,
            "the embedded API answering /v1/sites",
            interval_s=0.3,
        )
        sites = httpx.get(f"{base}/v1/sites", headers=auth).json()
        assert len(sites) == 2 and "farm" in json.dumps(sites) and "shop" in json.dumps(sites)
        feeder = httpx.get(f"{base}/v1/feeders/f1", headers=auth, timeout=60)
        assert feeder.status_code == 200, feeder.text
        kw = feeder.json()["hosting_capacity"]["site_kw"]["farm"]
        assert len(kw) == 96 and min(kw) > 0
        assert httpx.get(f"{base}/v1/feeders/f2", headers=auth, timeout=30).status_code == 404
        t = datetime.now(UTC)
        body = {
            "target_type": "site",
            "target_id": "farm",
            "start": t.isoformat(),
            "end": (t + timedelta(hours=1)).isoformat(),
            "limit_kw": 11.0,
            "event_id": "x1",
        }
        r = httpx.post(f"{base}/v1/limits", json=body, headers={**auth, "Idempotency-Key": "a"})
        assert r.status_code == 201, r.text
        listed = httpx.get(f"{base}/v1/limits", headers=auth).json()
        assert [(x["event_id"], x["source"]) for x in listed] == [("x1", "rest:dso-a")]
        entries = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
        # audited once, by the intake (regression, issue 8.5: the API and the service both
        # wrote a limit.received entry)
        assert [(e["kind"], e["source"]) for e in entries] == [("limit.received", "rest:dso-a")]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        log.close()


def test_embedded_serve_takes_telemetry_over_http_and_sends_setpoints(tmp_path: Path) -> None:
    """Regression (issue 15.7): without Kafka nothing fed the embedded service's bus, so it
    could never see a session. Session in (POST /v1/telemetry) -> setpoint batch out."""
    topo = tmp_path / "topology.yaml"
    topo.write_text(
        "feeders:\n  - {id: f1, limit_kw: 100}\n"
        "sites:\n  - {id: s1, feeder: f1, connection_limit_kw: 50, csms: c1}\n"
    )
    api_port = free_port()
    token = "feeder-token"
    tokens = [
        {
            "sha256": hashlib.sha256(token.encode()).hexdigest(),
            "dso": "csms-feed",
            "areas": ["*"],
            "scopes": ["telemetry:write", "limits:read"],
        }
    ]
    settings = ServeSettings(
        topology=topo,
        kafka=None,
        api=ApiSettings(port=api_port, tokens=tokens),
        http_port=free_port(),
        log_format="console",
        log_level="WARNING",
        tick_s=0.2,
    )
    sink = RecordingSink()
    stop = threading.Event()
    code: list[int] = []
    thread = threading.Thread(target=lambda: code.append(serve(settings, stop, sink=sink)))
    thread.start()
    base, auth = f"http://127.0.0.1:{api_port}", {"Authorization": f"Bearer {token}"}

    def up() -> bool:
        assert thread.is_alive(), "serve stopped"
        try:
            return httpx.get(f"{base}/v1/limits", headers=auth).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, 60, "the embedded API to answer")
        now = datetime.now(UTC)
        session = {
            "v": 1,
            "type": "session_started",
            "ts": now.isoformat(),
            "feeder_id": "f1",
            "site_id": "s1",
            "evse_id": "evse-1",
            "csms_id": "c1",
            "session_id": "sess-1",
            "departure": (now + timedelta(hours=3)).isoformat(),
            "energy_requested_kwh": 20.0,
            "max_power_kw": 11.0,
        }
        bad = {**session, "evse_id": "evse-2", "max_power_kw": "fast"}
        r = httpx.post(f"{base}/v1/telemetry", json=[session, bad], headers=auth)
        assert r.status_code == 422 and r.json()["detail"][0]["field"].startswith("[1].")
        r = httpx.post(f"{base}/v1/telemetry", json=[session], headers=auth)
        assert r.status_code == 202, r.text

        def charging() -> list[float]:
            return [
                kw
                for b in list(sink.batches)
                for evse, kw in zip(b.evse_ids, b.power_kw, strict=True)
                if evse == "evse-1" and kw > 0
            ]

        powers = wait_until(charging, 90, "a setpoint batch charging evse-1")
        assert all(0 < kw <= 11.0 + 1e-9 for kw in powers)
        assert all(b.csms_id == "c1" for b in sink.batches)
        assert not any("evse-2" in b.evse_ids for b in sink.batches)  # nothing of a 422
    finally:
        stop.set()
        thread.join(60)
    assert code == [0]


def test_serve_refuses_an_audit_log_tampered_in_the_middle(tmp_path: Path) -> None:
    """Regression (issue 15.6): serve appended to a chain edited in the middle."""
    from adapters.dso.audit import AuditLog, fallback_taken

    log_path = tmp_path / "audit.jsonl"
    with AuditLog(log_path, fsync=False) as log:
        for i in range(3):
            fallback_taken(log, f"r{i}", datetime(2026, 1, 1, i, tzinfo=UTC))
    lines = log_path.read_text().splitlines()
    entry = json.loads(lines[1])
    entry["payload"]["reason"] = "edited"
    lines[1] = json.dumps(entry)
    log_path.write_text("\n".join(lines) + "\n")
    before = log_path.read_bytes()
    topo = tmp_path / "topology.yaml"
    topo.write_text(TOPOLOGY)
    settings = ServeSettings(
        topology=topo, kafka=None, audit_log=log_path, http_port=free_port(), log_format="json"
    )
    assert serve(settings, threading.Event()) == 2
    assert log_path.read_bytes() == before
