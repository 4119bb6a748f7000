"""Wire models: round trips, rejection of bad input with every issue, exported schemas."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from aggregator import messages as m
from aggregator.errors import InvalidInput
from aggregator.limits import DsoLimit, TargetType

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def session_started(**kw: Any) -> m.SessionStarted:
    fields: dict[str, Any] = dict(
        ts=T0,
        feeder_id="F1",
        site_id="S1",
        evse_id="E1",
        csms_id="C1",
        session_id="X1",
        departure=T0 + timedelta(hours=8),
        energy_requested_kwh=30.0,
        max_power_kw=11.0,
        min_power_kw=-11.0,
    )
    fields.update(kw)
    return m.SessionStarted(**fields)


def every_model() -> list[tuple[BaseModel, Any]]:
    """One instance of every wire model, with the decoder for its topic."""
    return [
        (session_started(), m.decode_telemetry),
        (session_started(min_power_kw=0.0, energy_kwh=1.5), m.decode_telemetry),
        (
            m.MeterValue(
                ts=T0, feeder_id="F1", evse_id="E1", session_id="X1", energy_kwh=-2.5, power_kw=-7
            ),
            m.decode_telemetry,
        ),
        (
            m.SessionEnded(ts=T0, feeder_id="F1", evse_id="E1", session_id="X1", energy_kwh=12.25),
            m.decode_telemetry,
        ),
        (m.EvseHeartbeat(ts=T0, feeder_id="F1", evse_id="E1", csms_id="C1"), m.decode_telemetry),
        (
            m.DsoLimitMessage(
                ts=T0,
                event_id="ev-1",
                target_type="feeder",
                target_id="F1",
                start=T0,
                end=T0 + timedelta(hours=1),
                limit_kw=0.0,
                priority=2,
                source="openadr",
            ),
            m.decode_grid_signal,
        ),
        (m.DsoLimitCancel(ts=T0, event_id="ev-1"), m.decode_grid_signal),
        (m.FrequencySample(ts=T0, hz=49.95), m.decode_frequency),
        (m.AfrrRequest(ts=T0, setpoint_kw=-1500.0), m.decode_frequency),
        (
            m.SetpointBatch(
                csms_id="C1",
                seq=7,
                issued_at=T0,
                valid_until=T0 + timedelta(seconds=120),
                source_ts=T0 - timedelta(milliseconds=30),
                evse_ids=["E1", "E2", "E3"],
                power_kw=[11.0, -3.5, 0.0],
                failsafe_kw=[4.2, 4.2, 4.2],
            ),
            m.decode_setpoints,
        ),
        (
            m.SetpointBatch(
                csms_id="C2",
                seq=0,
                issued_at=T0,
                valid_until=T0 + timedelta(seconds=1),
                evse_ids=[],
                power_kw=[],
                failsafe_kw=[],
            ),
            m.decode_setpoints,
        ),
    ]


def as_dict(msg: BaseModel) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(m.encode(msg))
    return out


def raw(d: dict[str, Any]) -> bytes:
    return json.dumps(d).encode()


def fields_of(exc: pytest.ExceptionInfo[InvalidInput]) -> list[str]:
    return sorted(i.field for i in exc.value.issues)


@pytest.mark.parametrize(("msg", "decode"), every_model(), ids=lambda x: getattr(x, "type", ""))
def test_round_trip(msg: BaseModel, decode: Any) -> None:
    data = m.encode(msg)
    assert isinstance(data, bytes)
    assert b" " not in data  # compact
    back = decode(data)
    assert back == msg
    assert type(back) is type(msg)
    assert decode(data.decode()) == msg  # str input too
    assert m.encode(back) == data


def test_every_model_is_exported_and_covered() -> None:
    covered = {type(msg).__name__ for msg, _ in every_model()}
    models = {
        name
        for name in m.__all__
        if isinstance(getattr(m, name), type) and issubclass(getattr(m, name), BaseModel)
    }
    assert models == covered


def test_datetimes_are_normalised_to_utc() -> None:
    plus2 = timezone(timedelta(hours=2))
    msg = m.FrequencySample(ts=datetime(2025, 3, 1, 14, 0, tzinfo=plus2), hz=50.0)
    assert msg.ts == T0
    assert msg.ts.utcoffset() == timedelta(0)
    decoded = m.decode_frequency(b'{"type":"frequency","ts":"2025-03-01T13:00:00+01:00","hz":50}')
    assert decoded.ts == T0
    assert decoded.ts.tzinfo is UTC
    assert b'"2025-03-01T12:00:00Z"' in m.encode(decoded)


def test_naive_datetime_rejected() -> None:
    d = as_dict(m.FrequencySample(ts=T0, hz=50.0))
    d["ts"] = "2025-03-01T12:00:00"
    with pytest.raises(InvalidInput) as exc:
        m.decode_frequency(raw(d))
    assert [(i.field, i.code) for i in exc.value.issues] == [("ts", "datetime_iso")]
    with pytest.raises(ValidationError) as naive:
        m.FrequencySample(ts=datetime(2025, 3, 1, 12), hz=50.0)  # noqa: DTZ001
    assert [e["type"] for e in naive.value.errors()] == ["timezone_aware"]


@pytest.mark.parametrize(("msg", "decode"), every_model()[::3])
def test_other_version_rejected(msg: BaseModel, decode: Any) -> None:
    d = as_dict(msg)
    d["v"] = 2
    with pytest.raises(InvalidInput) as exc:
        decode(raw(d))
    assert fields_of(exc) == ["v"]


@pytest.mark.parametrize(("msg", "decode"), every_model()[1::3])
def test_extra_field_rejected(msg: BaseModel, decode: Any) -> None:
    d = as_dict(msg)
    d["power_w"] = 11000
    with pytest.raises(InvalidInput) as exc:
        decode(raw(d))
    assert fields_of(exc) == ["power_w"]


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_rejected(token: str) -> None:
    text = (
        '{"type":"meter_value","ts":"2025-03-01T12:00:00Z","feeder_id":"F1","evse_id":"E1",'
        f'"session_id":"X1","energy_kwh":1.0,"power_kw":{token}}}'
    )
    with pytest.raises(InvalidInput) as exc:
        m.decode_telemetry(text)
    assert fields_of(exc) == ["power_kw"]
    setpoints = as_dict(every_model()[-2][0])
    with pytest.raises(InvalidInput) as exc:
        m.decode_setpoints(json.dumps(setpoints).replace("-3.5", token))
    assert fields_of(exc) == ["power_kw.1"]


def test_every_issue_is_reported() -> None:
    d = as_dict(session_started())
    d["ts"] = "2025-03-01T12:00:00"  # naive
    d["evse_id"] = ""  # empty id
    d["max_power_kw"] = -3  # must be > 0
    with pytest.raises(InvalidInput) as exc:
        m.decode_telemetry(raw(d))
    assert fields_of(exc) == ["evse_id", "max_power_kw", "ts"]
    assert len(exc.value.issues) == 3
    assert all(i.message for i in exc.value.issues)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("energy_requested_kwh", -1.0),
        ("energy_requested_kwh", 1000.5),
        ("max_power_kw", 0.0),
        ("max_power_kw", 5000.1),
        ("min_power_kw", 0.1),
        ("min_power_kw", -5000.1),
        ("session_id", "x" * 129),
        ("site_id", 7),
        ("departure", "2025-03-01T12:00:00Z"),  # == ts
        ("departure", "2025-03-01T11:00:00Z"),  # before ts
    ],
)
def test_session_started_bounds(field: str, value: Any) -> None:
    d = as_dict(session_started())
    d[field] = value
    with pytest.raises(InvalidInput) as exc:
        m.decode_telemetry(raw(d))
    assert fields_of(exc) == [field]


@pytest.mark.parametrize(
    ("decode", "text", "field"),
    [
        (m.decode_telemetry, b'{"type": "meter_value", ', "json"),
        (m.decode_telemetry, b"\xff\xfe", "json"),
        (m.decode_telemetry, "", "json"),
        (m.decode_grid_signal, "not json", "json"),
        (m.decode_setpoints, "[1, 2", "json"),
        (m.decode_telemetry, '{"type": "session_paused"}', "type"),
        (m.decode_frequency, '{"hz": 50}', "type"),
        (m.decode_frequency, "[1, 2]", "input"),
        (m.decode_setpoints, '"setpoints"', "input"),
    ],
)
def test_malformed(decode: Any, text: bytes | str, field: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        decode(text)
    assert fields_of(exc) == [field]


def test_frequency_and_dso_bounds() -> None:
    with pytest.raises(InvalidInput) as exc:
        m.decode_frequency('{"type":"frequency","ts":"2025-03-01T12:00:00Z","hz":60}')
    assert fields_of(exc) == ["hz"]
    d = as_dict(every_model()[5][0])
    d.update(end=d["start"], limit_kw=-6000, target_type="transformer")
    with pytest.raises(InvalidInput) as exc:
        m.decode_grid_signal(raw(d))
    assert fields_of(exc) == ["end", "limit_kw", "target_type"]


def test_dso_limit_to_domain() -> None:
    msg = every_model()[5][0]
    assert isinstance(msg, m.DsoLimitMessage)
    lim = msg.to_domain()
    assert lim == DsoLimit(
        event_id="ev-1",
        target_type=TargetType.FEEDER,
        target_id="F1",
        start=T0,
        end=T0 + timedelta(hours=1),
        limit_kw=0.0,
        priority=2,
        source="openadr",
    )
    assert lim.validate() == []


def test_setpoint_batch_length_mismatch_and_duplicates() -> None:
    good = as_dict(every_model()[-2][0])
    with pytest.raises(InvalidInput) as exc:
        m.decode_setpoints(raw(good | {"power_kw": [1.0, 2.0]}))
    assert fields_of(exc) == ["power_kw"]
    with pytest.raises(InvalidInput) as exc:
        m.decode_setpoints(raw(good | {"power_kw": [1.0], "failsafe_kw": [1.0, 2.0, 3.0, 4.0]}))
    assert fields_of(exc) == ["failsafe_kw", "power_kw"]
    with pytest.raises(InvalidInput) as exc:
        m.decode_setpoints(raw(good | {"failsafe_kw": [4.2, -1.0, 4.2]}))
    assert fields_of(exc) == ["failsafe_kw.1"]
    with pytest.raises(InvalidInput) as exc:
        m.decode_setpoints(raw(good | {"evse_ids": ["E1", "E2", "E1"]}))
    assert fields_of(exc) == ["evse_ids"]
    assert exc.value.issues[0].code == "duplicate_id"
    with pytest.raises(InvalidInput) as exc:
        m.decode_setpoints(raw(good | {"valid_until": good["issued_at"], "seq": -1}))
    assert fields_of(exc) == ["seq", "valid_until"]
    with pytest.raises(ValidationError):
        m.SetpointBatch(
            csms_id="C1",
            seq=1,
            issued_at=T0,
            valid_until=T0 + timedelta(seconds=5),
            evse_ids=["E1"],
            power_kw=[1.0, 2.0],
            failsafe_kw=[4.2],
        )


def test_models_are_frozen() -> None:
    msg = m.FrequencySample(ts=T0, hz=50.0)
    with pytest.raises(ValidationError):
        msg.hz = 49.0  # type: ignore[misc]


def test_export_schemas(tmp_path: Path) -> None:
    paths = m.export_schemas(tmp_path / "schemas")
    assert [p.name for p in paths] == [
        "telemetry.schema.json",
        "grid-signals.schema.json",
        "frequency.schema.json",
        "setpoints.schema.json",
    ]
    samples: dict[str, list[BaseModel]] = {name: [] for name in m.SCHEMAS}
    by_decoder = {
        m.decode_telemetry: "telemetry",
        m.decode_grid_signal: "grid-signals",
        m.decode_frequency: "frequency",
        m.decode_setpoints: "setpoints",
    }
    for msg, decode in every_model():
        samples[by_decoder[decode]].append(msg)
    import jsonschema  # a dev dependency: the exported schemas must validate real messages

    for path in paths:
        schema = json.loads(path.read_text(encoding="utf-8"))
        name = path.name.removesuffix(".schema.json")
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"]
        assert name in schema["title"]
        # A union's properties live in its $defs, one per message type.
        bodies = [schema] if "properties" in schema else list(schema["$defs"].values())
        for body in bodies:
            if body.get("type") == "object":
                assert {"v", "type"} <= set(body["properties"])
        assert any("properties" in b for b in bodies)
        jsonschema.Draft202012Validator.check_schema(schema)
        validator = jsonschema.Draft202012Validator(schema)
        for msg in samples[name]:
            validator.validate(as_dict(msg))
        assert not validator.is_valid({"v": 1, "type": "nope"})


def test_all_is_the_public_surface() -> None:
    assert sorted(m.__all__) == sorted(
        [
            "JSON_SCHEMA_DIALECT",
            "MAX_ENERGY_KWH",
            "MAX_FLEET_POWER_KW",
            "MAX_POWER_KW",
            "SCHEMAS",
            "SCHEMA_VERSION",
            "AfrrRequest",
            "DsoLimitCancel",
            "DsoLimitMessage",
            "EvseHeartbeat",
            "FrequencySample",
            "FrequencySignal",
            "GridSignal",
            "MeterValue",
            "SessionEnded",
            "SessionStarted",
            "SetpointBatch",
            "Telemetry",
            "decode_frequency",
            "decode_grid_signal",
            "decode_setpoints",
            "decode_telemetry",
            "encode",
            "export_schemas",
        ]
    )
    for name in m.__all__:
        assert hasattr(m, name)


# --- strict types at the wire boundary (issue 15 item 11) ---------------------------------


def _wire_fields(kind: str) -> list[tuple[str, str, Any]]:
    """(type, field, decoder) for every numeric or time field of every message family."""
    out: list[tuple[str, str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for msg, decode in every_model():
        tag = msg.type  # type: ignore[attr-defined]
        values = as_dict(msg)
        for name, info in type(msg).model_fields.items():
            value = values.get(name)
            first = value[0] if isinstance(value, list) and value else value
            is_time = "datetime" in str(info.annotation)
            is_number = (
                name != "v" and isinstance(first, int | float) and not isinstance(first, bool)
            )
            if ((kind == "time" and is_time) or (kind == "number" and is_number)) and (
                tag,
                name,
            ) not in seen:
                seen.add((tag, name))
                out.append((tag, name, decode))
    return out


NUMBER_FIELDS = _wire_fields("number")
TIME_FIELDS = _wire_fields("time")


def test_strict_fields_cover_every_family() -> None:
    assert sorted((t, f) for t, f, _ in NUMBER_FIELDS) == [
        ("afrr_request", "setpoint_kw"),
        ("dso_limit", "limit_kw"),
        ("dso_limit", "priority"),
        ("frequency", "hz"),
        ("meter_value", "energy_kwh"),
        ("meter_value", "power_kw"),
        ("session_ended", "energy_kwh"),
        ("session_started", "energy_kwh"),
        ("session_started", "energy_requested_kwh"),
        ("session_started", "max_power_kw"),
        ("session_started", "min_current_a"),
        ("session_started", "min_power_kw"),
        ("session_started", "phases"),
        ("setpoints", "failsafe_kw"),
        ("setpoints", "power_kw"),
        ("setpoints", "seq"),
    ]
    assert sorted((t, f) for t, f, _ in TIME_FIELDS) == [
        ("afrr_request", "ts"),
        ("dso_limit", "end"),
        ("dso_limit", "start"),
        ("dso_limit", "ts"),
        ("dso_limit_cancel", "ts"),
        ("evse_heartbeat", "ts"),
        ("frequency", "ts"),
        ("meter_value", "ts"),
        ("session_ended", "ts"),
        ("session_started", "departure"),
        ("session_started", "ts"),
        ("setpoints", "issued_at"),
        ("setpoints", "source_ts"),
        ("setpoints", "valid_until"),
    ]


def _sample(tag: str) -> dict[str, Any]:
    msg = next(msg for msg, _ in every_model() if msg.type == tag)  # type: ignore[attr-defined]
    return as_dict(msg)


def _issues_for(decode: Any, d: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(InvalidInput) as exc:
        decode(raw(d))
    return [(i.field, i.code) for i in exc.value.issues]


@pytest.mark.parametrize(("tag", "name", "decode"), NUMBER_FIELDS, ids=lambda x: str(x))
@pytest.mark.parametrize("bad", [True, False, "1.0", "7"])
def test_numbers_must_be_json_numbers(tag: str, name: str, decode: Any, bad: Any) -> None:
    d = _sample(tag)
    is_list = isinstance(d[name], list)
    d[name] = [bad, *d[name][1:]] if is_list else bad
    want = "int_type" if name in ("seq", "priority", "phases") else "float_type"
    assert _issues_for(decode, d) == [(f"{name}.0" if is_list else name, want)]


@pytest.mark.parametrize("name", ["seq", "priority"])
def test_integers_must_be_json_integers(name: str) -> None:
    d = _sample("setpoints" if name == "seq" else "dso_limit")
    d[name] = 7.0
    decode = m.decode_setpoints if name == "seq" else m.decode_grid_signal
    assert _issues_for(decode, d) == [(name, "int_type")]


@pytest.mark.parametrize(("tag", "name", "decode"), TIME_FIELDS, ids=lambda x: str(x))
@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (12345, "datetime_type"),
        (1.7e9, "datetime_type"),
        (True, "datetime_type"),
        ("12345", "datetime_iso"),
        ("1740830400", "datetime_iso"),
        ("2025-03-01T12:00:00", "datetime_iso"),  # no offset
        ("2025-03-01", "datetime_iso"),  # no time
    ],
)
def test_times_must_be_iso_8601_text_with_an_offset(
    tag: str, name: str, decode: Any, bad: Any, code: str
) -> None:
    d = _sample(tag)
    d[name] = bad
    # a later time field may also fail its order check against the now-invalid one; the
    # bad field itself is always reported with its own code
    assert (name, code) in _issues_for(decode, d)


def test_valid_meter_values_still_decode_after_the_strict_check() -> None:
    text = (
        '{"type":"meter_value","ts":"2025-03-01T13:00:00.250+01:00","feeder_id":"F1",'
        '"evse_id":"E1","session_id":"X1","energy_kwh":1,"power_kw":-7}'
    )
    msg = m.decode_telemetry(text)
    assert isinstance(msg, m.MeterValue)
    assert (msg.ts, msg.energy_kwh, msg.power_kw) == (
        T0 + timedelta(milliseconds=250),
        1.0,
        -7.0,
    )


def test_issues_name_the_records_ids() -> None:
    d = as_dict(session_started())
    d["power_kw"] = 1.0
    d["max_power_kw"] = True
    with pytest.raises(InvalidInput) as exc:
        m.decode_telemetry(raw(d))
    assert sorted((i.field, i.code, i.ids) for i in exc.value.issues) == [
        ("max_power_kw", "float_type", ("E1", "X1", "C1")),
        ("power_kw", "extra_forbidden", ("E1", "X1", "C1")),
    ]
    with pytest.raises(InvalidInput) as bad_json:
        m.decode_telemetry(b"{")
    assert [(i.field, i.code, i.ids) for i in bad_json.value.issues] == [
        ("json", "json_invalid", ())
    ]


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("9999-12-31T23:00:00-05:00", "datetime_range"),  # past year 9999 once in UTC
        ("0001-01-01T00:30:00+01:00", "datetime_range"),  # before year 1 once in UTC
        ("2025-02-30T06:00:00Z", "datetime_parsing"),  # the shape is right, the date is not
        ("2025-03-01T25:00:00Z", "datetime_parsing"),
    ],
)
def test_times_that_cannot_be_read_get_a_code_not_a_crash(text: str, code: str) -> None:
    d = as_dict(m.FrequencySample(ts=T0, hz=50.0))
    d["ts"] = text
    assert _issues_for(m.decode_frequency, d) == [("ts", code)]


# --- AC charging: phases and minimum current (issue 11) -----------------------------------


def test_session_phases_default_three_and_six_amps() -> None:
    d = _sample("session_started")
    for key in ("phases", "phase", "min_current_a"):
        d.pop(key, None)
    msg = m.decode_telemetry(raw(d))
    assert isinstance(msg, m.SessionStarted)
    assert (msg.phases, msg.phase, msg.min_current_a) == (3, None, 6.0)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"phases": 2}, "phases"),
        ({"phases": 7.0}, "phases"),
        ({"phases": 3, "phase": "L1"}, "phase"),
        ({"phases": 1, "phase": "L4"}, "phase"),
        ({"min_current_a": -1.0}, "min_current_a"),
    ],
)
def test_session_phases_are_checked(extra: dict[str, Any], field: str) -> None:
    d = {**_sample("session_started"), **extra}
    assert [f for f, _ in _issues_for(m.decode_telemetry, d)] == [field]


def test_single_phase_car_on_a_known_phase() -> None:
    d = {**_sample("session_started"), "phases": 1, "phase": "L2", "min_current_a": 8.0}
    msg = m.decode_telemetry(raw(d))
    assert isinstance(msg, m.SessionStarted)
    assert (msg.phases, msg.phase, msg.min_current_a) == (1, "L2", 8.0)
