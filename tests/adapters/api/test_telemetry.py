"""``POST /v1/telemetry`` (embedded ingest): the topic's schema, every problem of every
message in one 422, all or nothing, its own scope."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from aggregator.messages import decode_telemetry
from tests.adapters.api.test_app import T0, Api, make_api

HEADERS = {"Authorization": "Bearer t-w"}


def started(evse: str = "e1", **changes: Any) -> dict[str, Any]:
    msg = {
        "v": 1,
        "type": "session_started",
        "ts": T0.isoformat(),
        "feeder_id": "f1",
        "site_id": "s1",
        "evse_id": evse,
        "csms_id": "csms-a",
        "session_id": f"x-{evse}",
        "departure": (T0 + timedelta(hours=4)).isoformat(),
        "energy_requested_kwh": 20.0,
        "max_power_kw": 11.0,
    }
    msg.update(changes)
    return msg


@pytest.fixture
def fed() -> tuple[Api, list[bytes]]:
    got: list[bytes] = []

    def take(records: Sequence[bytes]) -> None:
        got.extend(records)

    return make_api(telemetry=take), got


def test_good_messages_are_handed_over_in_order(fed: tuple[Api, list[bytes]]) -> None:
    api, got = fed
    r = api.client.post("/v1/telemetry", json=[started("e1"), started("e2")], headers=HEADERS)
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 2}
    assert [decode_telemetry(raw).evse_id for raw in got] == ["e1", "e2"]


def test_every_problem_of_every_message_and_nothing_handed_over(
    fed: tuple[Api, list[bytes]],
) -> None:
    api, got = fed
    body = [started("e1"), started("e2", max_power_kw=True, ts=12345), {"type": "nope"}]
    r = api.client.post("/v1/telemetry", json=body, headers=HEADERS)
    assert r.status_code == 422, r.text
    fields = {p["field"] for p in r.json()["detail"]}
    assert {f.split(".")[0] for f in fields} == {"[1]", "[2]"}
    assert any(f.startswith("[1].") and "max_power_kw" in f for f in fields), fields
    assert got == []


def test_the_scope_is_telemetry_write(fed: tuple[Api, list[bytes]]) -> None:
    api, got = fed
    r = api.client.post("/v1/telemetry", json=[started()], headers={"Authorization": "Bearer a-rw"})
    assert r.status_code == 403
    assert api.client.post("/v1/telemetry", json=[started()]).status_code == 401
    assert got == []


def test_without_an_ingest_the_route_says_to_use_kafka() -> None:
    r = make_api().client.post("/v1/telemetry", json=[started()], headers=HEADERS)
    assert r.status_code == 503 and "Kafka" in r.json()["detail"]


def test_empty_and_non_array_bodies_are_422(fed: tuple[Api, list[bytes]]) -> None:
    api, _ = fed
    assert api.client.post("/v1/telemetry", json=[], headers=HEADERS).status_code == 422
    assert api.client.post("/v1/telemetry", json=started(), headers=HEADERS).status_code == 422
    raw = json.dumps([started()]).replace('"v": 1', '"v": 1, "v": 1')
    r = api.client.post(
        "/v1/telemetry", content=raw, headers=HEADERS | {"Content-Type": "application/json"}
    )
    assert r.status_code == 422 and "duplicate key" in r.text
