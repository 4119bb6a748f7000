"""The FP's endpoints and link logic, with the CP played by an httpx MockTransport: tokens
both ways, 400 with every problem and nothing applied, forecasts revised by id, the fallback
published when the CP is late and withdrawn on its next heartbeat."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from adapters.oscp.config import FP_PATH, OscpConfig, OscpGroup
from adapters.oscp.provider import OscpProvider
from adapters.oscp.server import create_fp_app
from aggregator.messages import DsoLimitCancel, DsoLimitMessage

T0 = datetime(2030, 5, 1, 12, tzinfo=UTC)
CP_URL = "http://cp.test/oscp/cp/2.0"


class Rig:
    def __init__(self, state_file: Path | None = None) -> None:
        self.now = T0
        self.signals: list[DsoLimitMessage | DsoLimitCancel] = []
        self.cp_calls: list[tuple[str, dict[str, str], Any]] = []
        cfg = OscpConfig(
            registration_token="token-a",
            cp_name="dso",
            heartbeat_interval_s=10,
            offline_after_s=30,
            groups={"g1": OscpGroup(type="feeder", id="f1"), "g2": OscpGroup(type="site", id="s1")},
            state_file=state_file,
        )
        self.fp = OscpProvider(
            cfg, self.publish, clock=lambda: self.now, transport=httpx.MockTransport(self.cp)
        )
        self.fp.base_url = "http://fp.test" + FP_PATH
        self.http = TestClient(create_fp_app(self.fp))

    def publish(self, msg: DsoLimitMessage | DsoLimitCancel) -> str | None:
        self.signals.append(msg)
        return None

    def cp(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.rsplit("/", 1)[-1]
        self.cp_calls.append((path, dict(request.headers), json.loads(request.content)))
        return httpx.Response(204)

    def post(self, path: str, body: Any, token: str | None, **headers: str) -> httpx.Response:
        h = {"X-Request-ID": "r1", **headers}
        if token is not None:
            h["Authorization"] = f"Token {token}"
        if isinstance(body, bytes):
            return self.http.post(f"{FP_PATH}/{path}", content=body, headers=h)
        return self.http.post(f"{FP_PATH}/{path}", json=body, headers=h)

    def register(self) -> str:
        body = {"token": "token-b", "version_url": [{"version": "2.0", "base_url": CP_URL}]}
        assert self.post("register", body, "token-a").status_code == 204
        self.fp._run_jobs()
        path, headers, sent = self.cp_calls[-1]
        assert (path, headers["authorization"], headers["x-correlation-id"]) == (
            "register",
            "Token token-b",
            "r1",
        )
        assert sent["version_url"] == [{"version": "2.0", "base_url": self.fp.base_url}]
        return str(sent["token"])


def blocks(*kw: float, start: datetime = T0, minutes: int = 30) -> list[dict[str, Any]]:
    return [
        {
            "capacity": v,
            "phase": "ALL",
            "unit": "KW",
            "start_time": (start + timedelta(minutes=minutes * i)).isoformat(),
            "end_time": (start + timedelta(minutes=minutes * (i + 1))).isoformat(),
        }
        for i, v in enumerate(kw)
    ]


@pytest.fixture
def rig() -> Rig:
    return Rig()


def test_tokens_are_checked_before_anything_else(rig: Rig) -> None:
    hb = {"offline_mode_at": "2030-05-01T12:05:00Z"}
    assert rig.post("heartbeat", hb, None).status_code == 401
    assert rig.post("heartbeat", hb, "token-a").status_code == 401  # registration only
    assert rig.post("heartbeat", {"junk": 1}, "wrong").status_code == 401
    token = rig.register()
    assert token != "token-a"
    assert rig.post("heartbeat", hb, token).status_code == 204
    st = rig.fp.status()
    assert st.counts["refused_token"] == 3 and st.counts["heartbeat_received"] == 1
    assert st.last_heartbeat == T0 and st.offline_mode_at == T0 + timedelta(minutes=5)


def test_a_bad_forecast_answers_every_problem_and_applies_nothing(rig: Rig) -> None:
    token = rig.register()
    bad_blocks = blocks(10.0, 5.0)
    bad_blocks[0]["unit"] = "EUR"
    bad_blocks[1]["colour"] = "red"
    r = rig.post(
        "update_group_capacity_forecast",
        {"group_id": "g1", "type": "CONSUMPTION", "forecasted_blocks": bad_blocks},
        token,
    )
    assert r.status_code == 400
    fields = sorted(i["field"] for i in r.json()["issues"])
    assert fields == ["forecasted_blocks.0.unit", "forecasted_blocks.1.colour"]
    r = rig.post(
        "update_group_capacity_forecast",
        {"group_id": "g9", "type": "CONSUMPTION", "forecasted_blocks": blocks(-1.0)},
        token,
    )
    assert r.status_code == 400
    assert sorted(i["code"] for i in r.json()["issues"]) == ["negative_capacity", "unknown_group"]
    assert rig.post("update_group_capacity_forecast", b"{", token).status_code == 400
    assert rig.signals == [] and rig.fp.status().counts["bad_request"] == 3


def test_a_new_forecast_revises_the_groups_limits_by_id(rig: Rig) -> None:
    token = rig.register()
    body = {"group_id": "g1", "type": "CONSUMPTION", "forecasted_blocks": blocks(40.0, 30.0)}
    assert rig.post("update_group_capacity_forecast", body, token).status_code == 204
    assert [(m.event_id, m.limit_kw) for m in rig.signals] == [  # type: ignore[union-attr]
        ("oscp:dso:g1:consumption:0", 40.0),
        ("oscp:dso:g1:consumption:1", 30.0),
    ]
    rig.signals.clear()
    body["forecasted_blocks"] = blocks(25.0)
    assert rig.post("update_group_capacity_forecast", body, token).status_code == 204
    assert isinstance(rig.signals[0], DsoLimitMessage) and rig.signals[0].limit_kw == 25.0
    assert isinstance(rig.signals[1], DsoLimitCancel)
    assert rig.signals[1].event_id == "oscp:dso:g1:consumption:1"
    assert rig.fp.status().limits == 1


def test_generation_of_a_feeder_group_is_recorded_not_applied(rig: Rig) -> None:
    token = rig.register()
    body = {"group_id": "g1", "type": "GENERATION", "forecasted_blocks": blocks(-20.0)}
    assert rig.post("update_group_capacity_forecast", body, token).status_code == 204
    assert rig.signals == [] and rig.fp.status().recorded == ("g1/GENERATION",)


def test_generation_of_a_site_group_becomes_export_caps_revised_by_id(rig: Rig) -> None:
    token = rig.register()
    body = {"group_id": "g2", "type": "GENERATION", "forecasted_blocks": blocks(-20.0, 15.0)}
    assert rig.post("update_group_capacity_forecast", body, token).status_code == 204
    got = [(m.event_id, m.target_id, m.direction, m.limit_kw) for m in rig.signals]  # type: ignore[union-attr]
    assert got == [
        ("oscp:dso:g2:generation:0", "s1", "export", 20.0),
        ("oscp:dso:g2:generation:1", "s1", "export", 15.0),
    ]
    consumption = {"group_id": "g2", "type": "CONSUMPTION", "forecasted_blocks": blocks(30.0)}
    assert rig.post("update_group_capacity_forecast", consumption, token).status_code == 204
    assert [(m.direction, m.limit_kw) for m in rig.signals[2:]] == [("import", 30.0)]  # type: ignore[union-attr]
    rig.signals.clear()
    body["forecasted_blocks"] = blocks(10.0)  # revises block 0, cancels block 1 only
    assert rig.post("update_group_capacity_forecast", body, token).status_code == 204
    assert isinstance(rig.signals[0], DsoLimitMessage) and rig.signals[0].limit_kw == 10.0
    assert [m.event_id for m in rig.signals[1:]] == ["oscp:dso:g2:generation:1"]
    assert isinstance(rig.signals[1], DsoLimitCancel)
    assert rig.fp.status().limits == 2 and rig.fp.status().recorded == ()


def test_fallback_starts_at_offline_mode_when_late_and_goes_on_the_next_heartbeat(
    rig: Rig,
) -> None:
    token = rig.register()
    hs = {"required_behaviour": {"heartbeat_interval": 10}}
    assert rig.post("handshake", hs, token, **{"X-Request-ID": "h1"}).status_code == 204
    rig.fp._run_jobs()
    path, headers, sent = rig.cp_calls[-1]
    assert path == "handshake_acknowledgement" and headers["x-correlation-id"] == "h1"
    assert sent["required_behaviour"]["heartbeat_interval"] == 10
    fb = {
        "group_id": "g1",
        "type": "FALLBACK_CONSUMPTION",
        "forecasted_blocks": blocks(8.0, start=T0, minutes=240),
    }
    assert rig.post("update_group_capacity_forecast", fb, token).status_code == 204
    offline_at = T0 + timedelta(seconds=30)
    assert (
        rig.post("heartbeat", {"offline_mode_at": offline_at.isoformat()}, token).status_code == 204
    )
    assert rig.fp.check_link() == "up" and rig.signals == []
    rig.now = T0 + timedelta(seconds=16)  # a heartbeat missed: degraded
    assert rig.fp.check_link() == "degraded"
    (lim,) = rig.signals
    assert isinstance(lim, DsoLimitMessage)
    assert (lim.event_id, lim.limit_kw, lim.start) == ("oscp:dso:g1:fallback:0", 8.0, offline_at)
    rig.now = T0 + timedelta(seconds=31)
    assert rig.fp.check_link() == "offline" and len(rig.signals) == 1  # already in the book
    assert (
        rig.post("heartbeat", {"offline_mode_at": "2030-05-01 12:01:30"}, token).status_code == 204
    )
    assert isinstance(rig.signals[-1], DsoLimitCancel)
    assert rig.signals[-1].event_id == lim.event_id
    st = rig.fp.status()
    assert st.link == "up" and not st.fallback_active
    assert st.offline_mode_at == T0 + timedelta(seconds=90)  # pyoscp's naive time, read as UTC


def test_the_link_survives_a_restart_with_a_state_file(tmp_path: Path) -> None:
    """Tokens, the CP's URL and the fallback forecast are kept in ``state_file``: a
    restarted FP accepts the token it issued and still has the fallback to apply."""
    path = tmp_path / "oscp-link.json"
    first = Rig(state_file=path)
    token = first.register()
    body = {"group_id": "g1", "type": "FALLBACK_CONSUMPTION", "forecasted_blocks": blocks(9.0)}
    assert first.post("update_group_capacity_forecast", body, token).status_code == 204
    first.fp._link_file.keep(first.fp._s)  # what the worker does every tick
    saved = json.loads(path.read_text())
    assert (saved["issued"], saved["cp_url"]) == (token, CP_URL)
    again = Rig(state_file=path)
    assert again.fp.authenticate(f"Token {token}")
    assert not again.fp.authenticate("Token someone-else")
    status = again.fp.status()
    assert status.registered and status.recorded == ("g1/FALLBACK_CONSUMPTION",)
    assert Rig(state_file=tmp_path / "none.json").fp.status().registered is False
    path.write_text("{not json")
    assert Rig(state_file=path).fp.status().registered is False  # ignored, with a warning
