"""The DSO REST API against the real app: tokens and scopes, areas, validation listing every
problem, idempotent writes, publication and audit, OpenAPI export, and mutual TLS on a real
server."""

from __future__ import annotations

import json
import ssl
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.api.app import ApiContext, create_app
from adapters.api.auth import Principal, TokenRegistry, hash_token
from adapters.api.server import api_port, export_openapi, openapi_document, serve_api, stop_api
from adapters.dso.audit import LIMIT_CANCELLED, LIMIT_RECEIVED, AuditLog, verify
from adapters.dso.intake import LimitIntake
from aggregator.errors import ConfigError
from aggregator.messages import DsoLimitCancel, DsoLimitMessage
from aggregator.topology import Feeder, Site, Topology

REPO = Path(__file__).resolve().parents[3]
T0 = datetime(2026, 1, 14, 12, 0, tzinfo=UTC)
ALL = frozenset({"limits:read", "limits:write", "grid:read"})
TOPOLOGY = Topology(
    (Feeder("f1", 600.0), Feeder("f2", 400.0, "Nordstadt"), Feeder("f3", 500.0)),
    (
        Site("s1", "f1", 150.0, csms_id="csms-a"),
        Site("s2", "f1", 100.0),
        Site("s3", "f2", 120.0),
        Site("s4", "f3", 80.0),
    ),
)
TOKENS = {
    "a-rw": Principal("dso-a", frozenset({"f1", "f2"}), ALL),
    "a-read": Principal("dso-a", frozenset({"f1", "f2"}), frozenset({"limits:read"})),
    "a-f1": Principal("dso-a", frozenset({"f1"}), ALL),
    "a-all": Principal("dso-a", frozenset({"*"}), ALL),
    "b-rw": Principal("dso-b", frozenset({"f3"}), ALL),
    "t-w": Principal("csms-feed", frozenset({"*"}), frozenset({"telemetry:write"})),
}


@dataclass
class Api:
    app: FastAPI
    client: TestClient
    published: list[DsoLimitMessage | DsoLimitCancel]
    intake: LimitIntake
    now: list[datetime] = field(default_factory=lambda: [T0])
    keys: list[str] = field(default_factory=list)

    def post(
        self, token: str | None, body: Mapping[str, Any], key: str | None = "auto"
    ) -> httpx.Response:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        if key is not None:
            headers["Idempotency-Key"] = uuid.uuid4().hex if key == "auto" else key
        r: httpx.Response = self.client.post("/v1/limits", json=dict(body), headers=headers)
        return r

    def get(self, token: str | None, path: str) -> httpx.Response:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        r: httpx.Response = self.client.get(path, headers=headers)
        return r

    def delete(self, token: str, event_id: str, key: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        r: httpx.Response = self.client.delete(f"/v1/limits/{event_id}", headers=headers)
        return r

    def ids(self, token: str) -> list[str]:
        r = self.get(token, "/v1/limits")
        assert r.status_code == 200, r.text
        return [lim["event_id"] for lim in r.json()]


def make_api(
    *,
    audit: AuditLog | None = None,
    publish: Callable[[DsoLimitMessage | DsoLimitCancel], None] | None = None,
    **extra: Any,
) -> Api:
    published: list[DsoLimitMessage | DsoLimitCancel] = []
    keys: list[str] = []
    now = [T0]

    def record(key: str, msg: DsoLimitMessage | DsoLimitCancel) -> None:
        (publish or published.append)(msg)
        keys.append(key)

    intake = LimitIntake(TOPOLOGY, record, audit=audit, clock=lambda: now[0])
    ctx = ApiContext(
        TOPOLOGY, intake, TokenRegistry.from_tokens(TOKENS), clock=lambda: now[0], **extra
    )
    app = create_app(ctx)
    return Api(app, TestClient(app), published, intake, now, keys)


@pytest.fixture
def api() -> Api:
    return make_api()


def limit(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "target_type": "feeder",
        "target_id": "f1",
        "start": "2026-01-14T17:00:00Z",
        "end": "2026-01-14T20:00:00Z",
        "limit_kw": 220.0,
        "priority": 5,
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def problems(r: httpx.Response) -> list[tuple[str, str]]:
    assert r.status_code == 422, r.text
    return [(p["field"], p["message"]) for p in r.json()["detail"]]


# --------------------------------------------------------------------- authentication


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/limits"),
        ("POST", "/v1/limits"),
        ("GET", "/v1/limits/e1"),
        ("DELETE", "/v1/limits/e1"),
        ("GET", "/v1/sites"),
        ("GET", "/v1/feeders/f1"),
        ("GET", "/v1/flexibility"),
    ],
)
@pytest.mark.parametrize("auth", [None, "Bearer nope", "Basic YTpi", "Bearer "])
def test_missing_or_invalid_token_is_401(
    api: Api, method: str, path: str, auth: str | None
) -> None:
    headers = {"Idempotency-Key": "k"} | ({} if auth is None else {"Authorization": auth})
    body = limit() if method == "POST" else None
    r = api.client.request(method, path, json=body, headers=headers)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert api.published == []


def test_401_comes_before_a_body_that_is_not_json(api: Api) -> None:
    headers = {"Content-Type": "application/json", "Idempotency-Key": "k"}
    r = api.client.post("/v1/limits", content=b"{not json", headers=headers)
    assert r.status_code == 401
    r = api.client.post(
        "/v1/limits", content=b"{not json", headers=headers | {"Authorization": "Bearer a-read"}
    )
    assert r.status_code == 403
    r = api.client.post(
        "/v1/limits", content=b"{not json", headers=headers | {"Authorization": "Bearer a-rw"}
    )
    assert problems(r)[0][0] == "body"


def test_a_token_without_the_scope_is_403(api: Api) -> None:
    r = api.post("a-read", limit())
    assert r.status_code == 403
    assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
    assert "limits:write" in r.json()["detail"]
    assert api.get("a-read", "/v1/sites").status_code == 403
    assert api.get("a-read", "/v1/limits").status_code == 200
    created = api.post("a-rw", limit(event_id="e1"))
    assert created.status_code == 201
    assert api.delete("a-read", "e1").status_code == 403
    assert api.ids("a-rw") == ["e1"]


def test_a_target_outside_the_callers_areas_is_403(api: Api) -> None:
    assert api.post("a-f1", limit(target_id="f2")).status_code == 403
    assert api.post("a-f1", limit(target_type="transformer", target_id="f3")).status_code == 403
    assert api.post("a-rw", limit(target_id="zz")).status_code == 403  # not an area of a-rw
    fleet = api.post("a-rw", limit(target_type="fleet", target_id=None))
    assert fleet.status_code == 403
    assert "'*'" in fleet.json()["detail"]
    assert api.get("a-f1", "/v1/feeders/f2").status_code == 403
    assert api.published == []
    # a site outside the areas is as unknown as a site that does not exist (no leak)
    outside = api.post("a-f1", limit(target_type="site", target_id="s3"))
    missing = api.post("a-f1", limit(target_type="site", target_id="s9"))
    assert problems(outside) == [("target_id", "unknown site 's3' in your areas")]
    assert problems(missing) == [("target_id", "unknown site 's9' in your areas")]


def test_a_limit_in_an_area_the_token_lacks_is_403_for_a_token_of_the_same_dso(api: Api) -> None:
    assert api.post("a-rw", limit(event_id="e2", target_id="f2")).status_code == 201
    assert api.get("a-f1", "/v1/limits/e2").status_code == 403
    assert api.delete("a-f1", "e2").status_code == 403
    assert api.post("a-f1", limit(event_id="e2", target_id="f1")).status_code == 403
    assert api.ids("a-f1") == []
    assert api.ids("a-rw") == ["e2"]


def test_fleet_limits_need_every_area(api: Api) -> None:
    r = api.post("a-all", limit(target_type="fleet", target_id=None, event_id="fl"))
    assert r.status_code == 201
    assert r.json()["target_id"] == "fleet"
    assert api.ids("a-all") == ["fl"]
    assert api.ids("a-rw") == []  # a fleet limit is not inside f1 or f2


# -------------------------------------------------------------------- another DSO


def test_another_dsos_limits_and_areas_are_invisible(api: Api) -> None:
    assert api.post("a-rw", limit(event_id="evt-a")).status_code == 201
    assert api.ids("b-rw") == []
    assert api.get("b-rw", "/v1/limits/evt-a").status_code == 404
    assert api.get("b-rw", "/v1/limits/never").status_code == 404
    assert api.get("b-rw", "/v1/limits/evt-a").json() == {"detail": "no limit 'evt-a'"}
    assert api.delete("b-rw", "evt-a").status_code == 404
    taken = api.post("b-rw", limit(event_id="evt-a", target_id="f3"))
    assert taken.status_code == 409
    assert api.ids("a-rw") == ["evt-a"]
    assert len(api.published) == 1
    sites = api.get("b-rw", "/v1/sites").json()
    assert sites == [{"id": "s4", "feeder": "f3", "connection_limit_kw": 80.0, "csms": "csms"}]
    assert [s["id"] for s in api.get("a-rw", "/v1/sites").json()] == ["s1", "s2", "s3"]
    assert api.get("b-rw", "/v1/feeders/f1").status_code == 403


# --------------------------------------------------------------------- validation


def test_a_malformed_body_lists_every_problem(api: Api) -> None:
    body = limit(start="2026-01-14T17:00:00", end="2026-01-14T16:00:00Z", limit_kw=-5.0)
    body["colour"] = "red"
    found = problems(api.post("a-rw", body))
    assert len(found) == 4, found
    assert {f for f, _ in found} == {"start", "end", "limit_kw", "colour"}
    messages = dict(found)
    assert "naive" in messages["start"]
    assert messages["end"] == "must be after start"
    assert "greater than or equal to 0" in messages["limit_kw"]
    assert messages["colour"].startswith("unknown field")
    assert api.published == []


def test_shape_problems_are_listed_with_the_missing_idempotency_key(api: Api) -> None:
    body = {"target_type": "substation", "start": "soon", "limit_kw": 2e6, "priority": 101}
    found = problems(api.post("a-rw", body, key=None))
    assert {f for f, _ in found} == {
        "target_type",
        "start",
        "end",
        "limit_kw",
        "priority",
        "header.Idempotency-Key",
    }
    assert dict(found)["end"] == "required"


@pytest.mark.parametrize(
    "changes",
    [{"limit_kw": "220"}, {"limit_kw": True}, {"priority": "5"}, {"priority": 5.0}],
)
def test_numbers_must_be_json_numbers(api: Api, changes: dict[str, Any]) -> None:
    assert [f for f, _ in problems(api.post("a-rw", limit(**changes)))] == list(changes)


def test_non_finite_power_is_rejected(api: Api) -> None:
    raw = json.dumps(limit()).replace("220.0", "NaN").encode()
    headers = {
        "Authorization": "Bearer a-rw",
        "Idempotency-Key": "k",
        "Content-Type": "application/json",
    }
    r = api.client.post("/v1/limits", content=raw, headers=headers)
    assert [f for f, _ in problems(r)] == ["limit_kw"]


def test_zero_is_a_valid_limit_and_offsets_are_normalised_to_utc(api: Api) -> None:
    r = api.post("a-rw", limit(limit_kw=0, start="2026-01-14T18:00:00+01:00"))
    assert r.status_code == 201, r.text
    assert r.json()["start"] == "2026-01-14T17:00:00Z"
    assert r.json()["limit_kw"] == 0.0


def test_an_export_cap_is_posted_published_and_listed_with_its_direction(api: Api) -> None:
    body = limit(target_type="site", target_id="s1", limit_kw=5.0, direction="export")
    r = api.post("a-all", body)
    assert r.status_code == 201, r.text
    assert r.json()["direction"] == "export" and r.json()["limit_kw"] == 5.0
    (msg,) = api.published
    assert isinstance(msg, DsoLimitMessage) and msg.direction == "export"
    listed = api.get("a-all", "/v1/limits").json()
    assert [x["direction"] for x in listed] == ["export"]
    # a feeder has no export cap of its own: refused with the reason, nothing published
    r = api.post("a-all", limit(direction="export", event_id="x2"))
    assert r.status_code == 422 and "sites only" in r.text
    assert problems(api.post("a-all", limit(direction="both"))) == [
        ("direction", "Input should be 'import' or 'export'")
    ]
    assert len(api.published) == 1


def test_unknown_targets_are_422(api: Api) -> None:
    assert problems(api.post("a-all", limit(target_type="site", target_id="nope"))) == [
        ("target_id", "unknown site 'nope'")
    ]
    assert problems(api.post("a-all", limit(target_id="f9"))) == [
        ("target_id", "unknown feeder 'f9'")
    ]
    assert problems(api.post("a-rw", limit(target_type="site", target_id=None))) == [
        ("target_id", "required for target_type 'site'")
    ]
    assert api.published == []


def test_a_missing_idempotency_key_is_422_as_the_openapi_document_says(api: Api) -> None:
    """Regression (issue 15.3): the document said optional while the API answered 400."""
    found = problems(api.post("a-rw", limit(), key=None))
    assert found == [("header.Idempotency-Key", "required")]
    assert problems(api.post("a-all", limit(target_id="f9"), key=None)) == [
        ("header.Idempotency-Key", "required"),
        ("target_id", "unknown feeder 'f9'"),
    ]
    assert api.published == []
    post = api.client.get("/openapi.json").json()["paths"]["/v1/limits"]["post"]
    header = [p for p in post["parameters"] if p["name"] == "Idempotency-Key"]
    assert header[0]["required"] is True


def test_a_naive_active_at_is_422(api: Api) -> None:
    r = api.get("a-rw", "/v1/limits?active_at=2026-01-14T18:00:00")
    assert problems(r) == [
        ("query.active_at", "must be timezone-aware (ISO 8601 with 'Z' or an offset), not naive")
    ]


# ------------------------------------------------------------- writes and idempotency


def test_an_idempotent_retry_creates_one_limit_and_one_message(api: Api) -> None:
    body = limit()  # no event id: one is generated, and the retry must not make another
    first = api.post("a-rw", body, key="key-1")
    again = api.post("a-rw", body, key="key-1")
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert api.ids("a-rw") == [first.json()["event_id"]]
    assert len(api.published) == 1
    msg = api.published[0]
    assert isinstance(msg, DsoLimitMessage)
    assert (msg.event_id, msg.target_type, msg.target_id, msg.limit_kw, msg.source) == (
        first.json()["event_id"],
        "feeder",
        "f1",
        220.0,
        "rest:dso-a",
    )


def test_concurrent_retries_with_one_key_create_one_limit(api: Api) -> None:
    def attempt(_: int) -> httpx.Response:
        client = TestClient(api.app)
        headers = {"Authorization": "Bearer a-rw", "Idempotency-Key": "same"}
        r: httpx.Response = client.post("/v1/limits", json=limit(), headers=headers)
        return r

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(attempt, range(8)))
    assert {r.status_code for r in answers} == {201}
    assert len({r.text for r in answers}) == 1
    assert sum("Idempotent-Replayed" in r.headers for r in answers) == 7
    assert len(api.published) == 1
    assert len(api.ids("a-rw")) == 1


def test_the_same_key_with_another_body_is_409(api: Api) -> None:
    assert api.post("a-rw", limit(), key="k").status_code == 201
    r = api.post("a-rw", limit(limit_kw=100.0), key="k")
    assert r.status_code == 409
    assert len(api.published) == 1
    # keys belong to one DSO: another DSO may use the same key
    assert api.post("b-rw", limit(target_id="f3"), key="k").status_code == 201


def test_idempotency_keys_expire_after_a_day(api: Api) -> None:
    body = limit(end="2026-01-20T00:00:00Z")
    assert api.post("a-rw", body, key="k").status_code == 201
    api.now[0] = T0 + timedelta(hours=25)
    r = api.post("a-rw", body, key="k")
    assert r.status_code == 201
    assert "Idempotent-Replayed" not in r.headers
    assert len(api.ids("a-rw")) == 2


def test_the_same_event_id_revises_the_limit(api: Api) -> None:
    assert api.post("a-rw", limit(event_id="e1")).status_code == 201
    r = api.post("a-rw", limit(event_id="e1", limit_kw=150.0, target_id="f2"))
    assert r.status_code == 200
    [only] = api.get("a-rw", "/v1/limits").json()
    assert (only["event_id"], only["limit_kw"], only["target_id"]) == ("e1", 150.0, "f2")
    assert len(api.published) == 2


def test_transformer_targets_are_feeders(api: Api) -> None:
    r = api.post("a-rw", limit(target_type="transformer", target_id="f2"))
    assert r.status_code == 201
    assert (r.json()["target_type"], r.json()["target_id"]) == ("feeder", "f2")
    assert api.published[0].model_dump()["target_type"] == "feeder"


def test_delete_publishes_a_cancel(api: Api) -> None:
    assert api.post("a-rw", limit(event_id="e1")).status_code == 201
    r = api.delete("a-rw", "e1", key="del-1")
    assert r.status_code == 204
    assert api.ids("a-rw") == []
    cancel = api.published[-1]
    assert isinstance(cancel, DsoLimitCancel)
    assert (cancel.event_id, cancel.source, cancel.ts) == ("e1", "rest:dso-a", T0)
    assert api.keys[-1] == api.keys[0] == "f1"  # the cancel goes where the limit went
    replay = api.delete("a-rw", "e1", key="del-1")
    assert replay.status_code == 204
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert api.delete("a-rw", "e1").status_code == 404
    assert len(api.published) == 2


def test_a_failed_publish_stores_nothing_and_the_retry_succeeds() -> None:
    sent: list[DsoLimitMessage | DsoLimitCancel] = []
    broken = [True]

    def publish(msg: DsoLimitMessage | DsoLimitCancel) -> None:
        if broken[0]:
            raise ConnectionError("broker down")
        sent.append(msg)

    api = make_api(publish=publish)
    assert api.post("a-rw", limit(), key="k").status_code == 503
    assert api.ids("a-rw") == []
    broken[0] = False
    assert api.post("a-rw", limit(), key="k").status_code == 201
    assert len(sent) == 1


def test_listing_filters_by_active_at_and_drops_ended_limits(api: Api) -> None:
    api.post("a-rw", limit(event_id="early", end="2026-01-14T18:00:00Z"))
    api.post("a-rw", limit(event_id="late", start="2026-01-14T19:00:00Z"))
    assert api.ids("a-rw") == ["early", "late"]
    at = api.get("a-rw", "/v1/limits?active_at=2026-01-14T17:30:00Z").json()
    assert [x["event_id"] for x in at] == ["early"]
    api.now[0] = datetime(2026, 1, 14, 18, 30, tzinfo=UTC)
    assert api.ids("a-rw") == ["late"]
    assert api.get("a-rw", "/v1/limits/early").status_code == 404


def test_every_limit_received_or_cancelled_is_audited(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, fsync=False) as log:
        api = make_api(audit=log)
        assert api.post("a-rw", limit(event_id="e1", target_type="transformer")).status_code == 201
        assert api.post("a-rw", limit(event_id="e1", limit_kw=100.0)).status_code == 200
        assert api.delete("a-rw", "e1").status_code == 204
        assert api.delete("b-rw", "e1").status_code == 404  # nothing happened: not audited
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["kind"] for e in entries] == [LIMIT_RECEIVED, LIMIT_RECEIVED, LIMIT_CANCELLED]
    assert {e["source"] for e in entries} == {"rest:dso-a"}
    assert entries[0]["payload"]["target_type"] == "feeder"
    assert entries[1]["payload"]["limit_kw"] == 100.0
    assert entries[2]["payload"] == {"event_id": "e1", "found": True}
    assert verify(path) == []


# ------------------------------------------------------------ sites, feeders, flexibility


def test_feeder_needs_a_grid_model(api: Api) -> None:
    r = api.get("a-rw", "/v1/feeders/f1")
    assert (r.status_code, r.json()["detail"]) == (404, "no grid model")


def test_feeder_with_hosting_capacity() -> None:
    asked: list[str] = []

    def hosting(feeder_id: str) -> dict[str, Any]:
        asked.append(feeder_id)
        if feeder_id == "f2":
            raise LookupError(feeder_id)
        return {"start": T0, "step_s": 900.0, "site_kw": {"s1": [40.0, 35.5], "s2": [12.0, 0.0]}}

    api = make_api(hosting=hosting)
    r = api.get("a-rw", "/v1/feeders/f1")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "id": "f1",
        "name": "",
        "limit_kw": 600.0,
        "sites": ["s1", "s2"],
        "hosting_capacity": {
            "start": "2026-01-14T12:00:00Z",
            "step_s": 900.0,
            "site_kw": {"s1": [40.0, 35.5], "s2": [12.0, 0.0]},
        },
    }
    assert api.get("a-rw", "/v1/feeders/f2").status_code == 404
    assert api.get("a-all", "/v1/feeders/f9").status_code == 404
    assert api.get("a-rw", "/v1/feeders/f3").status_code == 403
    assert asked == ["f1", "f2"]


def test_flexibility_for_the_callers_areas() -> None:
    asked: list[frozenset[str]] = []

    def flexibility(feeders: frozenset[str]) -> dict[str, Any]:
        asked.append(feeders)
        return {"start": T0, "step_s": 900.0, "up_kw": [10.0, 20.0], "down_kw": [5.0, 0.0]}

    assert make_api().get("a-rw", "/v1/flexibility").status_code == 503
    api = make_api(flexibility=flexibility)
    r = api.get("a-rw", "/v1/flexibility")
    assert r.status_code == 200
    assert r.json() == {
        "feeders": ["f1", "f2"],
        "start": "2026-01-14T12:00:00Z",
        "step_s": 900.0,
        "up_kw": [10.0, 20.0],
        "down_kw": [5.0, 0.0],
    }
    api.get("b-rw", "/v1/flexibility")
    assert asked == [frozenset({"f1", "f2"}), frozenset({"f3"})]


# --------------------------------------------------------------------- property


OPS = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        st.sampled_from(["create", "delete", "retry"]),
        st.integers(0, 3),
        st.sampled_from([0.0, 50.0, 220.0]),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(OPS)
def test_each_dso_sees_exactly_its_own_live_limits(
    ops: list[tuple[str, str, int, float]],
) -> None:
    api = make_api()
    token = {"a": "a-rw", "b": "b-rw"}
    feeder = {"a": "f1", "b": "f3"}
    live: dict[str, tuple[str, float]] = {}  # event id → (owner, limit_kw)
    last: dict[str, tuple[dict[str, Any], str, int]] = {}  # dso → (body, key, status)
    sent = 0

    def create(dso: str, body: dict[str, Any], key: str) -> None:
        nonlocal sent
        r = api.post(token[dso], body, key=key)
        owner = live.get(body["event_id"], (dso, 0.0))[0]
        if owner != dso:
            assert r.status_code == 409
        else:
            assert r.status_code == (200 if body["event_id"] in live else 201)
            assert "Idempotent-Replayed" not in r.headers
            live[body["event_id"]] = (dso, body["limit_kw"])
            sent += 1
        last[dso] = (body, key, r.status_code)

    for n, (dso, op, i, kw) in enumerate(ops):
        event_id = f"e{i}"
        if op == "create" or (op == "retry" and dso not in last):
            create(dso, limit(event_id=event_id, target_id=feeder[dso], limit_kw=kw), f"k{n}")
        elif op == "retry":
            body, key, code = last[dso]
            if code in (200, 201):  # replayed: nothing changes, even if deleted since
                r = api.post(token[dso], body, key=key)
                assert (r.status_code, r.headers["Idempotent-Replayed"]) == (code, "true")
            else:  # a refused request is not remembered: the retry is a new attempt
                create(dso, body, key)
        else:
            r = api.delete(token[dso], event_id)
            if live.get(event_id, ("", 0.0))[0] == dso:
                assert r.status_code == 204
                del live[event_id]
                sent += 1
            else:
                assert r.status_code == 404
    for dso in ("a", "b"):
        seen = {x["event_id"]: x["limit_kw"] for x in api.get(token[dso], "/v1/limits").json()}
        assert seen == {e: kw for e, (owner, kw) in live.items() if owner == dso}
    assert len(api.published) == sent


# ----------------------------------------------------------------- tokens, OpenAPI


def test_the_registry_keeps_only_hashes() -> None:
    reg = TokenRegistry.from_tokens({"secret-token": TOKENS["a-rw"]})
    assert reg.resolve("secret-token") == TOKENS["a-rw"]
    assert reg.resolve("secret-tokeN") is None
    assert "secret-token" not in repr(vars(reg))
    assert hash_token("secret-token").encode() in repr(vars(reg)).encode()
    with pytest.raises(ConfigError) as bad:
        TokenRegistry({"not-hex": Principal("", frozenset(), frozenset({"root"}))})
    assert {i.field for i in bad.value.issues} == {
        "tokens",
        "tokens.dso",
        "tokens.areas",
        "tokens.scopes",
    }
    cfg = [{"sha256": hash_token("t"), "dso": "dso-a", "areas": ["f1"], "scopes": ["grid:read"]}]
    assert TokenRegistry.from_config(cfg).resolve("t") == Principal(
        "dso-a", frozenset({"f1"}), frozenset({"grid:read"})
    )
    with pytest.raises(ConfigError):
        TokenRegistry.from_config([{"sha256": hash_token("t"), "dso": "x", "areas": "f1"}])


def _surface(doc: Mapping[str, Any]) -> dict[str, Any]:
    """What a client relies on: operations with their responses, and the schemas' fields."""
    ops = {
        f"{method.upper()} {path}": sorted(op["responses"])
        for path, item in doc["paths"].items()
        for method, op in item.items()
    }
    schemas = {
        name: (sorted(s.get("properties", {})), sorted(s.get("required", [])))
        for name, s in doc["components"]["schemas"].items()
    }
    return {"operations": ops, "schemas": schemas, "security": doc["components"]["securitySchemes"]}


def test_openapi_is_served_and_the_exported_copy_is_current(api: Api, tmp_path: Path) -> None:
    served = api.client.get("/openapi.json").json()
    assert served == openapi_document()
    post = served["paths"]["/v1/limits"]["post"]
    assert set(post["responses"]) >= {"200", "201", "401", "403", "409", "413", "422", "503"}
    assert served["components"]["schemas"]["Problems"]["properties"]["detail"]["type"] == "array"
    written = export_openapi(tmp_path / "openapi.json")
    text = written.read_text()
    assert json.loads(text) == served
    assert text == json.dumps(served, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    exported = json.loads((REPO / "docs" / "openapi.json").read_text())
    assert _surface(exported) == _surface(served), (
        "docs/openapi.json is stale: re-export it (adapters.api.app.export_openapi)"
    )


# ------------------------------------------------------------------------ mutual TLS


def _pki(tmp: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1, a client certificate, and a stranger's."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        (tmp / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (tmp / f"{stem}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def issue(
        cn: str,
        signer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
        *,
        usage: x509.ObjectIdentifier | None = None,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        issuer, signing_key = signer or (name(cn), key)
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=signer is None, path_length=None), True)
        )
        if signer is None:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
            ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        else:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),
                False,
            )
        if usage is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), False)
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                False,
            )
        return builder.sign(signing_key, hashes.SHA256()), key

    ca, ca_key = issue("gridflex test CA", None)
    write("ca", ca, ca_key)
    server = issue("127.0.0.1", (ca.subject, ca_key), usage=ExtendedKeyUsageOID.SERVER_AUTH)
    write("server", *server)
    client = issue("dso-a", (ca.subject, ca_key), usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    write("client", *client)
    other_ca, other_key = issue("someone else's CA", None)
    stranger = issue("dso-x", (other_ca.subject, other_key), usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    write("stranger", *stranger)
    return {p.name: p for p in tmp.iterdir()}


def test_mutual_tls_on_a_real_server(tmp_path: Path) -> None:
    pki = _pki(tmp_path)
    server, thread = serve_api(
        make_api().app,
        "127.0.0.1",
        0,
        certfile=pki["server.pem"],
        keyfile=pki["server.key"],
        client_ca=pki["ca.pem"],
    )
    try:
        url = f"https://127.0.0.1:{api_port(server)}/v1/sites"
        headers = {"Authorization": "Bearer b-rw"}

        def tls(cert: str | None) -> ssl.SSLContext:
            ctx = ssl.create_default_context(cafile=str(pki["ca.pem"]))
            if cert is not None:
                ctx.load_cert_chain(pki[f"{cert}.pem"], pki[f"{cert}.key"])
            return ctx

        for refused in (None, "stranger"):
            with pytest.raises(httpx.TransportError), httpx.Client(verify=tls(refused)) as c:
                c.get(url, headers=headers, timeout=5)
        with httpx.Client(verify=tls("client")) as c:
            r = c.get(url, headers=headers, timeout=5)
            assert r.status_code == 200
            assert [s["id"] for s in r.json()] == ["s4"]
            assert c.get(url, timeout=5).status_code == 401  # TLS is not a substitute for a token
    finally:
        stop_api(server, thread)
    assert not thread.is_alive()


def test_serve_api_refuses_half_a_tls_configuration(tmp_path: Path) -> None:
    app = make_api().app
    with pytest.raises(ConfigError) as bad:
        serve_api(app, "127.0.0.1", 0, keyfile=tmp_path / "k.pem", client_ca=tmp_path / "ca")
    assert {i.field for i in bad.value.issues} == {"tls", "tls.client_ca"}
