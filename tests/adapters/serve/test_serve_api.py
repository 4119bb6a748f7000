"""``gridflex serve`` (embedded) with the REST API: limits, hosting capacity from the model."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

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
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/v1/sites", headers=auth).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
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
        time.sleep(2)  # the loop applies it; the service's audit entry shows it arrived
        kinds = [json.loads(x)["kind"] for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
        assert kinds.count("limit.received") == 2  # the API's (who) and the service's (applied)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        log.close()
