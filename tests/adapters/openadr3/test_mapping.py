"""OpenADR 3.1 events → DSO limits, safe-mode caps and report bodies (pure mapping)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.dso.intake import LATEST, event_id_issues, limit_issues
from adapters.openadr3 import (
    OpenAdr3Config,
    OpenAdr3Target,
    Readings,
    add_duration,
    event_to_limits,
    event_windows,
    limit_id,
    power_kw,
    report_body,
    safe_mode_caps,
    safe_mode_limits,
)
from adapters.openadr3.wire import Event, Notification
from aggregator.topology import Feeder, Site, Topology

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
F1 = OpenAdr3Target(type="feeder", id="f1")
S1 = OpenAdr3Target(type="site", id="s1")
CFG = OpenAdr3Config(
    vtn_url="http://127.0.0.1:1",
    client_id="ven",
    client_secret="secret",  # type: ignore[arg-type]
    ven_name="gridflex",
    targets={"feeder-f1": F1, "site-s1": S1},
)


def ev(**kw: Any) -> Event:
    body: dict[str, Any] = {
        "id": "42",
        "programID": "7",
        "eventName": "congestion",
        "targets": ["feeder-f1"],
        "payloadDescriptors": [{"payloadType": "IMPORT_CAPACITY_LIMIT", "units": "KW"}],
        "intervalPeriod": {"start": "2026-12-01T09:00:00Z", "duration": "PT15M"},
        "intervals": [
            {"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [40.0]}]},
            {"id": 1, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [30]}]},
        ],
    }
    body.update(kw)
    return Event.model_validate(body)


# --------------------------------------------------------------------------------- time


def test_iso_durations_are_calendar_exact_and_open_ended_is_capped() -> None:
    t = datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert add_duration(t, "PT15M") == t + timedelta(minutes=15)
    assert add_duration(t, "P1M") == datetime(2026, 2, 28, 12, tzinfo=UTC)
    assert add_duration(t, "P1Y2M3DT4H5M6.5S") == datetime(
        2027, 3, 31, 16, 5, 6, 500000, tzinfo=UTC
    ) + timedelta(days=3)
    assert add_duration(t, "P2W") == t + timedelta(days=14)
    assert add_duration(t, "P9999Y") == LATEST
    for bad in ("", "P", "PT", "15M", "-PT1H", "P1.5M", "PT1H30"):
        with pytest.raises(ValueError):
            add_duration(t, bad)


@given(st.integers(min_value=0, max_value=10**8))
def test_seconds_durations_add_exactly(seconds: int) -> None:
    assert add_duration(NOW, f"PT{seconds}S") == NOW + timedelta(seconds=seconds)


def test_intervals_follow_each_other_unless_they_have_their_own_period() -> None:
    e = ev(
        intervals=[
            {"id": 5, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [1.0]}]},
            {"id": 6, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [2.0]}]},
            {
                "id": 7,
                "intervalPeriod": {"start": "2026-12-01T12:00:00+01:00", "duration": "PT1H"},
                "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [3.0]}],
            },
        ]
    )
    windows, issues = event_windows(e, NOW)
    assert issues == []
    assert [(w.interval_id, w.start.hour, w.start.minute, w.end - w.start) for w in windows] == [
        (5, 9, 0, timedelta(minutes=15)),
        (6, 9, 15, timedelta(minutes=15)),
        (7, 11, 0, timedelta(hours=1)),
    ]


def test_start_0001_means_now_randomize_widens_and_past_windows_are_skipped() -> None:
    e = ev(
        intervalPeriod={
            "start": "0001-01-01T00:00:00Z",
            "duration": "PT10M",
            "randomizeStart": "PT5M",
        }
    )
    windows, _ = event_windows(e, NOW)
    assert (windows[0].start, windows[0].end) == (NOW, NOW + timedelta(minutes=15))
    past = ev(intervalPeriod={"start": "2026-12-01T07:00:00Z", "duration": "PT15M"})
    assert event_windows(past, NOW)[0] == []


def test_an_interval_without_period_or_duration_is_an_issue() -> None:
    e = ev(intervalPeriod=None)
    windows, issues = event_windows(e, NOW)
    assert windows == [] and {i.code for i in issues} == {"no_interval_period"}
    e = ev(intervalPeriod={"start": "2026-12-01T09:00:00Z"})
    assert {i.code for i in event_windows(e, NOW)[1]} == {"no_duration"}


# ------------------------------------------------------------------------------- limits


def test_capacity_limits_become_one_limit_per_interval_and_target() -> None:
    limits, issues = event_to_limits(ev(targets=["feeder-f1", "site-s1"]), CFG, NOW)
    assert issues == []
    got = [(m.target_type, m.target_id, m.limit_kw, m.start.minute, m.source) for m in limits]
    assert got == [
        ("feeder", "f1", 40.0, 0, "openadr3"),
        ("site", "s1", 40.0, 0, "openadr3"),
        ("feeder", "f1", 30.0, 15, "openadr3"),
        ("site", "s1", 30.0, 15, "openadr3"),
    ]
    assert len({m.event_id for m in limits}) == 4
    assert all(m.ts == NOW for m in limits)


def test_units_are_converted_and_the_lower_of_setpoint_and_limit_wins() -> None:
    e = ev(
        payloadDescriptors=[
            {"payloadType": "IMPORT_CAPACITY_LIMIT", "units": "W"},
            {"payloadType": "DISPATCH_SETPOINT", "units": "MW"},
        ],
        intervals=[
            {
                "id": 0,
                "payloads": [
                    {"type": "IMPORT_CAPACITY_LIMIT", "values": [25000]},
                    {"type": "DISPATCH_SETPOINT", "values": [0.02]},
                    {"type": "PRICE", "values": [0.3]},
                ],
            }
        ],
    )
    (lim,), issues = event_to_limits(e, CFG, NOW)
    assert issues == [] and lim.limit_kw == pytest.approx(20.0)
    assert power_kw(3, None) == 3.0
    for value, unit in [(True, "KW"), (float("nan"), "KW"), ("1", "KW"), (1.0, "KWH")]:
        with pytest.raises(ValueError):
            power_kw(value, unit)


def test_problems_are_issues_with_the_event_id_and_known_parts_still_apply() -> None:
    e = ev(
        targets=["feeder-f1", "nowhere"],
        intervals=[
            {
                "id": 0,
                "payloads": [
                    {"type": "IMPORT_CAPACITY_LIMIT", "values": [10.0]},
                    {"type": "EXPORT_CAPACITY_LIMIT", "values": [5.0]},
                ],
            },
            {"id": 1, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": ["x"]}]},
        ],
    )
    limits, issues = event_to_limits(e, CFG, NOW)
    assert [(m.target_id, m.limit_kw) for m in limits] == [("f1", 10.0)]
    assert sorted(i.code for i in issues) == [
        "bad_value",
        "export_needs_site",  # the export cap targets a feeder: export caps are per site
        "unknown_target",
    ]
    assert all("42" in i.ids for i in issues)


def test_an_export_capacity_limit_becomes_an_export_cap_on_each_site_target() -> None:
    e = ev(
        targets=["site-s1", "feeder-f1"],
        payloadDescriptors=[
            {"payloadType": "EXPORT_CAPACITY_LIMIT", "units": "W"},
            {"payloadType": "IMPORT_CAPACITY_LIMIT", "units": "W"},
        ],
        intervals=[
            {
                "id": 0,
                "payloads": [
                    {"type": "EXPORT_CAPACITY_LIMIT", "values": [7000]},
                    {"type": "IMPORT_CAPACITY_LIMIT", "values": [20000]},
                ],
            },
            {"id": 1, "payloads": [{"type": "EXPORT_CAPACITY_LIMIT", "values": [-1]}]},
        ],
    )
    limits, issues = event_to_limits(e, CFG, NOW)
    exports = [m for m in limits if m.direction == "export"]
    imports = [m for m in limits if m.direction == "import"]
    assert [(m.target_type, m.target_id, m.limit_kw) for m in exports] == [("site", "s1", 7.0)]
    assert {(m.target_id, m.limit_kw) for m in imports} == {("s1", 20.0), ("f1", 20.0)}
    assert exports[0].event_id != imports[0].event_id  # both in force side by side
    assert exports[0].to_domain().direction.value == "export"
    assert sorted(i.code for i in issues) == ["export_needs_site", "negative_export_cap"]
    assert limit_issues(exports[0].to_domain(), TOPO, NOW) == []


def test_an_untargeted_event_means_the_ven_target_and_priority_is_kept() -> None:
    limits, issues = event_to_limits(ev(targets=[]), CFG, NOW)
    assert limits == [] and [i.code for i in issues] == ["no_target"]
    cfg = CFG.model_copy(update={"ven_target": OpenAdr3Target(type="fleet", id="fleet")})
    limits, issues = event_to_limits(ev(targets=None, priority=3), cfg, NOW)
    assert issues == [] and {(m.target_type, m.target_id, m.priority) for m in limits} == {
        ("fleet", "fleet", 3)
    }


@given(st.text(min_size=1, max_size=300), st.integers(min_value=-5, max_value=10**9))
def test_limit_ids_are_valid_intake_ids_and_stable(event_id: str, interval: int) -> None:
    a = limit_id(event_id, interval, F1)
    assert event_id_issues(a) == []
    assert a == limit_id(event_id, interval, F1) != limit_id(event_id, interval, S1)


def test_targets_of_openadr_3_0_value_maps_are_read_too() -> None:
    e = ev(targets=[{"type": "RESOURCE_NAME", "values": ["feeder-f1"]}])
    assert e.targets == ("feeder-f1",)


# ---------------------------------------------------------------------------- safe mode


def test_safe_mode_caps_are_the_lowest_cap_of_any_interval() -> None:
    e = ev(eventName="SAFE_MODE", targets=["feeder-f1", "site-s1"])
    caps, issues = safe_mode_caps(e, CFG)
    assert issues == [] and caps == {F1: 30.0, S1: 30.0}
    limits = safe_mode_limits(caps, CFG, NOW, timedelta(hours=24))
    assert [(m.target_id, m.limit_kw, m.start, m.end) for m in limits] == [
        ("f1", 30.0, NOW, NOW + timedelta(hours=24)),
        ("s1", 30.0, NOW, NOW + timedelta(hours=24)),
    ]
    empty = ev(
        eventName="SAFE_MODE",
        intervals=[{"id": 0, "payloads": [{"type": "PRICE", "values": [1.0]}]}],
    )
    assert safe_mode_caps(empty, CFG)[0] == {}


# ------------------------------------------------------------------------------ reports


def test_report_body_carries_usage_baseline_and_regulation_in_kw() -> None:
    body = report_body(
        ev(),
        "gridflex",
        {"feeder-f1": Readings(usage_kw=12.5, baseline_kw=14.0, up_kw=3.0, down_kw=None)},
        NOW,
        60.0,
    )
    assert (body["objectType"], body["eventID"], body["programID"]) == ("REPORT", "42", "7")
    (res,) = body["resources"]
    assert res["resourceName"] == "feeder-f1"
    assert res["intervalPeriod"] == {"start": "2026-12-01T08:00:00Z", "duration": "PT60S"}
    assert res["intervals"][0]["payloads"] == [
        {"type": "USAGE", "values": [12.5]},
        {"type": "BASELINE", "values": [14.0]},
        {"type": "UP_REGULATION_AVAILABLE", "values": [3.0]},
    ]
    assert {d["payloadType"] for d in body["payloadDescriptors"]} == {
        "USAGE",
        "BASELINE",
        "UP_REGULATION_AVAILABLE",
        "DOWN_REGULATION_AVAILABLE",
    }


def test_notifications_parse_the_vtn_shape() -> None:
    note = Notification.model_validate(
        {"id": "n1", "operation": "CREATE", "objectType": "EVENT", "object": {"id": "1"}}
    )
    assert (note.operation, note.object_type, note.object["id"]) == ("CREATE", "EVENT", "1")


TOPO = Topology(feeders=(Feeder("f1", 60.0),), sites=(Site("s1", "f1", 40.0, csms_id="c"),))


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=-7200, max_value=10**7),  # start offset from now (s)
            st.sampled_from(["PT1S", "PT15M", "PT1H", "P1D", "P1M", "P1Y", "P9999Y"]),
            st.floats(min_value=0.0, max_value=1e5, allow_nan=False),
        ),
        min_size=1,
        max_size=6,
    ),
    st.text(min_size=1, max_size=200),
)
def test_every_limit_the_mapping_makes_is_one_the_intake_takes(
    intervals: list[tuple[int, str, float]], event_id: str
) -> None:
    """The invariant between the two: a limit published for an event never bounces off the
    intake for its id, window, target or value (within the intake's ±1 GW range)."""
    body = ev(
        id=event_id,
        targets=["feeder-f1", "site-s1"],
        payloadDescriptors=[],
        intervals=[
            {
                "id": k,
                "intervalPeriod": {
                    "start": (NOW + timedelta(seconds=off)).isoformat(),
                    "duration": d,
                },
                "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [v]}],
            }
            for k, (off, d, v) in enumerate(intervals)
        ],
    )
    limits, issues = event_to_limits(body, CFG, NOW)
    assert issues == []
    assert len({m.event_id for m in limits}) == len(limits)
    for m in limits:
        assert limit_issues(m.to_domain(), TOPO, NOW) == []
        assert m.start < m.end <= LATEST and m.end > NOW
