"""REST hardening (issue 15.2–15.4): every odd input is a clear 4xx before anything is
applied, the answer tells the truth, and the list shows limits from every source."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from adapters.dso.intake import EVENT_ID_PATTERN
from aggregator.limits import DsoLimit, TargetType
from tests.adapters.api.test_app import T0, Api, limit, make_api, problems

HEADERS = {"Authorization": "Bearer a-rw", "Content-Type": "application/json"}


@pytest.fixture
def api() -> Api:
    return make_api()


def codes(r: Any) -> list[tuple[str, str]]:
    assert r.status_code == 422, r.text
    return [(p["field"], p["code"]) for p in r.json()["detail"]]


@pytest.mark.parametrize(
    "event_id",
    ["a/b", "nul\x00id", "line\nbreak", "   ", "\t", "caf\u00e9", "\u2603", "x" * 129, "-lead"],
)
def test_bad_event_ids_are_422_and_nothing_is_applied(api: Api, event_id: str) -> None:
    """Regression (15.2, 15.3): a non-Latin-1 id was a 500 after the limit was applied, NUL,
    newline or blank ids dropped the connection, a '/' made it unreachable."""
    r = api.post("a-rw", limit(event_id=event_id))
    assert codes(r) == [("event_id", "string_pattern_mismatch")], r.text
    assert EVENT_ID_PATTERN in api.client.get("/openapi.json").text.replace("\\\\", "\\")
    assert api.published == [] and len(api.intake.book) == 0


def test_every_accepted_id_can_be_read_and_cancelled(api: Api) -> None:
    for event_id in ("a.b_c:d@e+f=g~h-1", "X" * 128):
        r = api.post("a-rw", limit(event_id=event_id))
        assert r.status_code == 201, r.text
        assert r.headers["Location"] == f"/v1/limits/{event_id}"
        assert api.get("a-rw", f"/v1/limits/{event_id}").status_code == 200
        assert api.delete("a-rw", event_id).status_code == 204


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("0001-01-01T00:00:00+01:00", "2026-01-14T20:00:00Z"),
        ("2026-01-14T17:00:00Z", "9999-12-31T23:59:59-01:00"),
        ("1999-12-31T23:00:00Z", "2026-01-14T20:00:00Z"),
    ],
)
def test_times_out_of_range_are_422_not_500(api: Api, start: str, end: str) -> None:
    """Regression (15.3): years 1 and 9999 with an offset were a 500."""
    found = codes(api.post("a-rw", limit(start=start, end=end)))
    assert "time_out_of_range" in {c for _, c in found}, found
    assert api.published == []


@pytest.mark.parametrize("value", [1768410000, 1768410000.0, True])
def test_numbers_are_not_times(api: Api, value: object) -> None:
    """Regression (15.3): Unix-epoch numbers passed as times."""
    assert codes(api.post("a-rw", limit(start=value))) == [("start", "time_not_a_string")]
    assert api.published == []


def test_a_window_already_over_is_422(api: Api) -> None:
    """Regression (15.3): got 201, then vanished."""
    past = {"start": "2026-01-14T09:00:00Z", "end": "2026-01-14T11:00:00Z"}  # now is 12:00
    assert codes(api.post("a-rw", limit(**past))) == [("end", "window_over")]
    assert api.published == []
    ongoing = api.post("a-rw", limit(start="2026-01-14T11:00:00Z"))
    assert ongoing.status_code == 201  # already started but not over: accepted


def test_a_fleet_limit_with_a_target_id_is_422(api: Api) -> None:
    """Regression (15.3): a fleet limit accepted a target_id."""
    r = make_api().post("a-all", limit(target_type="fleet", target_id="f1"))
    assert codes(r) == [("target_id", "fleet_has_no_target")]


def test_duplicate_json_keys_are_422(api: Api) -> None:
    """Regression (15.3): duplicate keys passed, the last one winning."""
    raw = json.dumps(limit()).replace('"limit_kw": 220.0', '"limit_kw": 10.0, "limit_kw": 900.0')
    assert raw.count("limit_kw") == 2
    r = api.client.post("/v1/limits", content=raw, headers=HEADERS | {"Idempotency-Key": "k"})
    assert problems(r) == [("body", "not valid JSON: duplicate key 'limit_kw'")]
    assert api.published == []


def test_a_body_over_64_kib_is_413(api: Api) -> None:
    """Regression (15.3): no body-size limit (a 100 MB body was parsed)."""
    body = limit(event_id="big")
    raw = json.dumps(body)[:-1] + ', "pad": "' + "x" * (64 * 1024) + '"}'
    r = api.client.post("/v1/limits", content=raw, headers=HEADERS | {"Idempotency-Key": "k"})
    assert r.status_code == 413
    assert api.published == []


def test_a_failed_publish_is_503_and_nothing_is_listed() -> None:
    def broken(_msg: object) -> None:
        raise ConnectionError("broker down")

    api = make_api(publish=broken)
    r = api.post("a-rw", limit(event_id="e1"))
    assert r.status_code == 503 and "nothing was applied" in r.json()["detail"]
    assert api.ids("a-rw") == []


def test_the_list_shows_limits_from_every_source_with_their_source(api: Api) -> None:
    """Regression (15.4): GET /v1/limits never listed limits from OpenADR."""
    oadr = DsoLimit(
        event_id="oadr:ev1:s0:i0:feeder:f1",
        target_type=TargetType.FEEDER,
        target_id="f1",
        start=T0,
        end=T0 + timedelta(hours=1),
        limit_kw=30.0,
        source="openadr",
    )
    api.intake.submit(oadr)
    assert api.post("a-rw", limit(event_id="mine")).status_code == 201
    listed = {x["event_id"]: (x["source"], x["dso"]) for x in api.get("a-rw", "/v1/limits").json()}
    assert listed == {
        "oadr:ev1:s0:i0:feeder:f1": ("openadr", None),
        "mine": ("rest:dso-a", "dso-a"),
    }
    assert api.get("b-rw", "/v1/limits").json() == []  # f1 is not an area of dso-b
    got = api.get("a-rw", "/v1/limits/oadr:ev1:s0:i0:feeder:f1")
    assert got.status_code == 200 and got.json()["source"] == "openadr"
    # a DSO cannot cancel or overwrite what OpenADR sent
    assert api.delete("a-rw", "oadr:ev1:s0:i0:feeder:f1").status_code == 403
    assert api.post("a-rw", limit(event_id="oadr:ev1:s0:i0:feeder:f1")).status_code == 409
    assert len(api.intake.book) == 2


def test_a_body_without_a_length_is_cut_at_64_kib(api: Api) -> None:
    def chunks() -> Any:
        yield b'{"pad": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    headers = HEADERS | {"Idempotency-Key": "k"}
    r = api.client.post("/v1/limits", content=chunks(), headers=headers)
    assert r.status_code == 413 and r.headers["content-type"] == "application/json"
    assert api.published == []


def test_a_body_that_is_not_utf8_is_422(api: Api) -> None:
    headers = HEADERS | {"Idempotency-Key": "k"}
    r = api.client.post("/v1/limits", content=b'{"a": "\xff"}', headers=headers)
    assert problems(r) == [("body", "not valid JSON: not UTF-8")]


def test_a_405_names_every_method_of_the_path(api: Api) -> None:
    r = api.client.put("/v1/limits", headers=HEADERS)
    assert r.status_code == 405 and r.headers["Allow"] == "GET, POST"
