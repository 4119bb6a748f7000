"""The OSCP 2.0 flexibility provider against an independent Capacity Provider: pyoscp 0.1.0
(Flask-RESTX endpoints, models and token checks) in its own venv, driven by
``scripts/oscp/cp_server.py`` (``scripts/oscp-cp.sh install`` first: cached, idempotent).

The FP (:class:`adapters.oscp.OscpProvider` on its real uvicorn server) feeds a real
:class:`~adapters.dso.intake.LimitIntake` whose ``publish`` queues grid signals for the
test thread, which hands them to a real single-threaded Service (as ``gridflex serve`` does).

Done when: the CP registers (tokens exchanged both ways), handshakes and heartbeats; a
CONSUMPTION forecast is a limit the published setpoints respect; the CP receives the group's
measurements and an AdjustGroupCapacityForecast for what the sessions need; wrong or missing
tokens are refused both ways; bad bodies answer 400 and apply nothing; the CP going silent
publishes the fallback (first in the batches' failsafe values, then as the cap in force) and
its next heartbeat withdraws it.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.ops.webserver import stop_api
from adapters.oscp import CpClient, CpRefused, FleetReadings, OscpConfig, OscpGroup, OscpProvider
from adapters.oscp.server import serve_fp
from aggregator.messages import DsoLimitCancel, DsoLimitMessage
from tests.conftest import wait_until
from tests.integration.dso_fleet import DsoRig

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "oscp-cp.sh"
LIMIT_KW, FALLBACK_KW = 12.0, 8.0
GROUP = "area-f1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Cp:
    """The pyoscp CP process and its control API."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.url}/oscp/cp/2.0"
        self.http = httpx.Client(timeout=15)

    def control(self, path: str, body: Any) -> dict[str, Any]:
        r = self.http.post(f"{self.url}/control/{path}", json=body)
        r.raise_for_status()
        out: dict[str, Any] = r.json()
        return out

    def received(self, kind: str) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = self.http.get(f"{self.url}/control/received").json()[kind]
        return got


@pytest.fixture
def cp() -> Iterator[Cp]:
    """``scripts/oscp-cp.sh install`` (cached) and a fresh CP on a free port."""
    done = subprocess.run([SCRIPT, "install"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"scripts/oscp-cp.sh install failed:\n{done.stderr[-3000:]}"
    python = subprocess.run([SCRIPT, "python"], capture_output=True, text=True).stdout.strip()
    port = free_port()
    proc = subprocess.Popen(
        [python, REPO / "scripts" / "oscp" / "cp_server.py", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    peer = Cp(port)

    def up() -> bool:
        assert proc.poll() is None, "the CP exited"
        try:
            return peer.http.get(f"{peer.url}/control/health").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, 60, "the pyoscp CP answers")
        yield peer
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclass
class Rig(DsoRig):
    readings: FleetReadings = field(default_factory=FleetReadings)

    def f1(self, at: datetime) -> tuple[float, float]:
        """Σ setpoint and Σ failsafe of f1's EVSEs after a dispatch at ``at``."""
        kw = self.dispatch(at)["f1"]
        return kw, self.feeder_kw("failsafe_kw")["f1"]


@pytest.fixture
def link(cp: Cp) -> Iterator[tuple[Rig, OscpProvider]]:
    """A charging fleet, the FP serving, registered and handshaken with ``cp``, heartbeats
    flowing both ways."""
    now = datetime.now(UTC)
    rig = Rig.charging(now)
    svc, intake = rig.service, rig.intake
    rig.readings.refresh(svc)
    cfg = OscpConfig(
        registration_token="token-a-out-of-band",
        cp_name="dso1",
        heartbeat_interval_s=1,
        # late and silent only after a few missed beats: a busy CI machine delays some
        offline_after_s=6.0,
        degraded_after_s=3.0,
        measurement_interval_s=1.0,
        groups={GROUP: OscpGroup(type="feeder", id="f1")},
    )
    fp = OscpProvider(cfg, intake.relay, rig.readings, tick_s=0.1)
    server, thread, _ = serve_fp(fp)
    fp.start()
    try:
        assert fp.base_url is not None
        answer = cp.control(
            "register", {"fp_url": fp.base_url, "token": cfg.registration_token.get_secret_value()}
        )
        assert answer["status"] == 204, answer
        wait_until(lambda: cp.received("registers"), 20, "the FP's Register at the CP")
        (reg,) = cp.received("registers")
        assert reg["headers"]["X-Correlation-Id"] and reg["payload"]["token"]
        assert reg["payload"]["version_url"] == [{"version": "2.0", "base_url": fp.base_url}]
        assert fp.status().registered
        assert cp.control("handshake", {"heartbeat_interval": 1})["status"] == 204
        wait_until(lambda: cp.received("acks"), 20, "the FP's HandshakeAcknowledgement")
        assert cp.received("acks")[0]["payload"]["required_behaviour"]["heartbeat_interval"] == 1
        wait_until(lambda: cp.received("heartbeats"), 20, "the FP's heartbeat at the CP")
        cp.control("heartbeats", {"interval_s": 0.5, "offline_after_s": 4.0, "running": True})
        wait_until(
            lambda: fp.status().counts.get("heartbeat_received", 0) >= 2, 20, "CP heartbeats"
        )
        assert fp.status().link == "up"
        yield rig, fp
    finally:
        fp.stop()
        stop_api(server, thread)


def forecast(kind: str, kw: float, start: datetime, end: datetime) -> dict[str, Any]:
    block = {
        "capacity": kw,
        "phase": "ALL",
        "unit": "KW",
        "start_time": iso(start),
        "end_time": iso(end),
    }
    return {"group_id": GROUP, "type": kind, "forecasted_blocks": [block]}


def test_forecast_limits_setpoints_and_the_cp_gets_measurements_and_an_adjust_request(
    cp: Cp, link: tuple[Rig, OscpProvider]
) -> None:
    rig, fp = link
    begin = datetime.now(UTC)
    end = begin + timedelta(minutes=10)
    assert rig.f1(begin)[0] > 3 * LIMIT_KW  # unconstrained, f1 would draw far more
    answer = cp.control("forecast", forecast("CONSUMPTION", LIMIT_KW, begin, end))
    assert answer["status"] == 204, answer
    msg = rig.next_signal()
    assert isinstance(msg, DsoLimitMessage)
    (lim,) = rig.service.limits.limits
    assert (lim.target_type, lim.target_id, lim.source) == ("feeder", "f1", "oscp:dso1")
    assert lim.limit_kw == LIMIT_KW
    assert abs(lim.start - begin) < timedelta(seconds=1) and abs(lim.end - end) < timedelta(
        seconds=1
    )
    for k in range(0, 600, 60):  # the setpoints of f1 stay under it over the window
        kw, fs = rig.f1(begin + timedelta(seconds=k))
        assert kw <= LIMIT_KW + 1e-6 and fs <= LIMIT_KW + 1e-6, (k, kw, fs)

    # measurements: the group's measured import, an accumulating kWh register
    rig.readings.refresh(rig.service)
    wait_until(lambda: cp.received("measurements"), 20, "UpdateGroupMeasurements at the CP")
    m = cp.received("measurements")[-1]["payload"]
    assert m["group_id"] == GROUP
    assert (m["measurements"][0]["unit"], m["measurements"][0]["direction"]) == ("KWH", "NET")
    assert m["measurements"][0]["value"] >= 0.0
    # four cars on f1 need 4 × 11 kW > 12 kW: the FP asks the CP for more, once
    wait_until(lambda: cp.received("adjust"), 20, "AdjustGroupCapacityForecast at the CP")
    (adj,) = cp.received("adjust")
    (blk,) = adj["payload"]["forecasted_blocks"]
    assert (adj["payload"]["group_id"], adj["payload"]["type"]) == (GROUP, "CONSUMPTION")
    assert (blk["unit"], blk["capacity"]) == ("KW", pytest.approx(44.0))
    assert fp.status().counts["adjust_sent"] == 1


def test_wrong_tokens_are_refused_both_ways_and_bad_bodies_apply_nothing(
    cp: Cp, link: tuple[Rig, OscpProvider]
) -> None:
    rig, fp = link
    now = datetime.now(UTC)
    good = forecast("CONSUMPTION", LIMIT_KW, now, now + timedelta(minutes=5))
    path = "update_group_capacity_forecast"
    for token in ["forged", "", "token-a-out-of-band"]:  # the registration token is spent here
        r = cp.control("raw", {"path": path, "body": json.dumps(good), "token": token})
        assert r["status"] == 401, (token, r)
    bad = json.loads(json.dumps(good))
    bad["forecasted_blocks"][0]["unit"] = "EUR"
    bad["forecasted_blocks"][0]["colour"] = "red"
    bad["group_id"] = "elsewhere"
    r = cp.control("raw", {"path": path, "body": json.dumps(bad)})
    assert r["status"] == 400
    fields = sorted(i["field"] for i in json.loads(r["body"])["issues"])
    assert fields == ["forecasted_blocks.0.colour", "forecasted_blocks.0.unit"]
    r = cp.control("raw", {"path": path, "body": json.dumps({**good, "group_id": "elsewhere"})})
    assert r["status"] == 400 and "unknown_group" in r["body"]
    r = cp.control("raw", {"path": path, "body": "{not json"})
    assert r["status"] == 400
    assert rig.signals.empty() and rig.intake.book.entries() == []
    counts = fp.status().counts
    assert counts["refused_token"] == 3 and counts["bad_request"] == 3
    # the CP refuses a token it never issued (pyoscp: 401 without, 403 for an unknown one)
    with httpx.Client(timeout=10) as http, pytest.raises(CpRefused) as refused:
        CpClient(http).post(cp.base_url, "heartbeat", {"offline_mode_at": iso(now)}, "forged")
    assert refused.value.status in (401, 403)


def test_a_silent_cp_brings_the_fallback_and_its_next_heartbeat_withdraws_it(
    cp: Cp, link: tuple[Rig, OscpProvider]
) -> None:
    rig, fp = link
    now = datetime.now(UTC)
    answer = cp.control(
        "forecast", forecast("FALLBACK_CONSUMPTION", FALLBACK_KW, now, now + timedelta(hours=4))
    )
    assert answer["status"] == 204
    assert rig.signals.empty() and fp.status().recorded == (f"{GROUP}/FALLBACK_CONSUMPTION",)
    assert rig.f1(datetime.now(UTC))[1] > FALLBACK_KW  # failsafe: 4 × 4.2 kW

    cp.control("heartbeats", {"running": False})  # the CP goes silent
    msg = rig.next_signal(timeout_s=20)
    assert isinstance(msg, DsoLimitMessage) and msg.limit_kw == FALLBACK_KW
    assert fp.status().fallback_active
    offline_at = msg.start
    # published from offline mode on; meanwhile every batch's failsafe respects it
    kw, fs = rig.f1(min(datetime.now(UTC), offline_at - timedelta(milliseconds=1)))
    assert fs <= FALLBACK_KW + 1e-6, fs
    kw, fs = rig.f1(offline_at + timedelta(seconds=1))
    assert kw <= FALLBACK_KW + 1e-6 and fs <= FALLBACK_KW + 1e-6
    wait_until(lambda: fp.status().link == "offline", 20, "offline")

    cp.control("heartbeats", {"running": True})  # back: the fallback goes
    cancel = rig.next_signal(timeout_s=20)
    assert isinstance(cancel, DsoLimitCancel) and cancel.event_id == msg.event_id
    assert rig.service.limits.limits == () and not fp.status().fallback_active
    assert rig.f1(datetime.now(UTC) + timedelta(seconds=2))[0] > 3 * LIMIT_KW
