"""A small OSCP 2.0 Capacity Provider built on pyoscp 0.1.0 (Flask-RESTX), for gridflex's
integration tests. Runs with the venv of ``scripts/oscp-cp.sh`` (never gridflex's).

The OSCP endpoints are pyoscp's own (``createBlueprint(..., 'cp')`` under
``/oscp/cp/2.0``: register, handshake, handshake_acknowledgment [sic], heartbeat,
update_group_measurements, adjust_group_capacity_forecast, group_capacity_compliance_error),
its token check (``RegistrationDictMan``: 401 without a token, 403 for an unknown one) and its
models (validated by flask-restx). Two deviations, both about pyoscp bugs: its heartbeat
handler only parses ``"%Y-%m-%d %H:%M:%S"`` (OSCP sends RFC 3339), so the heartbeat is
parsed with dateutil here; and its background job (which would send acks and naive-time
heartbeats) is not started — this CP's heartbeats are sent by the loop below.

A control API the test drives (not OSCP): ``POST /control/register`` {fp_url, token} (the
CP registers with the FP using the FP's out-of-band token), ``/control/handshake``
{heartbeat_interval}, ``/control/heartbeats`` {interval_s, offline_after_s, running},
``/control/forecast`` {group_id, type, forecasted_blocks} and ``/control/raw`` {path, body,
token} (send anything to the FP, answer's status and body returned), ``GET
/control/received`` (what the FP sent), ``GET /control/health``.
"""

from __future__ import annotations

import argparse
import json
import secrets
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from dateutil import parser as dateparser
from flask import Flask, jsonify, request
from oscp import createBlueprint
from oscp.RegistrationManager import RegistrationDictMan, createOscpHeader

LOCK = threading.Lock()
RECEIVED: dict[str, list] = {
    "measurements": [],
    "adjust": [],
    "compliance": [],
    "heartbeats": [],
    "acks": [],
    "registers": [],
}


def record(kind: str, payload: object) -> None:
    with LOCK:
        RECEIVED[kind].append({"payload": payload, "headers": dict(request.headers)})


class CapacityProvider:
    def handleUpdateGroupMeasurements(self, payload, token):  # noqa: N802 (pyoscp's names)
        record("measurements", payload)

    def handleAdjustGroupCapacityForecast(self, payload, token):  # noqa: N802
        record("adjust", payload)

    def handleGroupCapacityComplianceError(self, payload, token):  # noqa: N802
        record("compliance", payload)


class Registrations(RegistrationDictMan):
    def handleHeartbeat(self, payload):  # noqa: N802
        token = self._check_access_token()
        self._setOfflineAt(token, dateparser.isoparse(payload["offline_mode_at"]))
        record("heartbeats", payload)

    def handleHandshakeAck(self, payload):  # noqa: N802
        super().handleHandshakeAck(payload)
        record("acks", payload)

    def handleRegister(self, payload):  # noqa: N802
        super().handleRegister(payload)
        record("registers", payload)

    def fp(self) -> tuple[str, str]:
        """The FP's base URL and the token to call it (the one registered endpoint)."""
        (endpoint,) = self.readJson().values()
        return endpoint["register"]["base_url"], endpoint["register"]["token"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    base = f"http://127.0.0.1:{args.port}/oscp/cp/2.0"
    versions = [{"version": "2.0", "base_url": base}]
    state = tempfile.mkdtemp(prefix="gridflex-oscp-cp-")
    reg = Registrations(versions, filename=str(Path(state) / "endpoints.json"))
    app = Flask(__name__)
    app.register_blueprint(
        createBlueprint({"capacityprovider": CapacityProvider(), "registrationmanager": reg}, "cp")
    )
    beat = {"interval_s": 0.0, "offline_after_s": 0.0, "running": False}
    wake = threading.Event()

    def to_fp(path: str, body: object, token: str | None = None, raw: bool = False):
        url, fp_token = reg.fp()
        headers = createOscpHeader(token or fp_token)
        if token == "":
            headers.pop("Authorization")
        if raw and isinstance(body, str):
            headers["Content-Type"] = "application/json"
            return requests.post(f"{url}/{path}", data=body, headers=headers, timeout=10)
        return requests.post(f"{url}/{path}", json=body, headers=headers, timeout=10)

    def heartbeats() -> None:
        while True:
            wake.wait(beat["interval_s"] or 1.0)
            wake.clear()
            if not beat["running"]:
                continue
            at = datetime.now(UTC) + timedelta(seconds=beat["offline_after_s"])
            try:
                to_fp("heartbeat", {"offline_mode_at": at.isoformat().replace("+00:00", "Z")})
            except Exception as exc:  # the FP may be gone: keep beating
                print("heartbeat failed:", exc, flush=True)

    threading.Thread(target=heartbeats, daemon=True).start()

    @app.get("/control/health")
    def health():
        return jsonify(ok=True)

    @app.post("/control/register")
    def control_register():
        body = request.get_json()
        token_b = secrets.token_urlsafe(32)  # what the FP is to use towards this CP
        reg._updateService(token_b, body["token"], body["fp_url"], "2.0")
        r = requests.post(
            f"{body['fp_url']}/register",
            json={"token": token_b, "version_url": versions},
            headers=createOscpHeader(body["token"]),
            timeout=10,
        )
        return jsonify(status=r.status_code, body=r.text, token=token_b)

    @app.post("/control/handshake")
    def control_handshake():
        body = request.get_json()
        rb = {"required_behaviour": {"heartbeat_interval": body["heartbeat_interval"]}}
        r = to_fp("handshake", rb)
        return jsonify(status=r.status_code, body=r.text)

    @app.post("/control/heartbeats")
    def control_heartbeats():
        beat.update(request.get_json())
        wake.set()
        return jsonify(beat)

    @app.post("/control/forecast")
    def control_forecast():
        r = to_fp("update_group_capacity_forecast", request.get_json())
        return jsonify(status=r.status_code, body=r.text)

    @app.post("/control/raw")
    def control_raw():
        body = request.get_json()
        r = to_fp(body["path"], body["body"], token=body.get("token"), raw=True)
        return jsonify(status=r.status_code, body=r.text)

    @app.get("/control/received")
    def control_received():
        with LOCK:
            return app.response_class(json.dumps(RECEIVED), mimetype="application/json")

    app.run(host="127.0.0.1", port=args.port, threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()
