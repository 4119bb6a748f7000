"""OSCP mapping: units to kW once, forecasts to limits by id, every problem of a forecast."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters.dso.intake import event_id_issues
from adapters.oscp.config import OscpConfig, OscpGroup
from adapters.oscp.mapping import (
    adjust_request,
    block_kw,
    forecast_issues,
    forecast_limits,
    group_key,
    kw_in_unit,
    measurement,
)
from adapters.oscp.wire import ForecastedBlock, ForecastType, GroupCapacityForecast, dump

T0 = datetime(2030, 5, 1, 12, tzinfo=UTC)
GROUP = OscpGroup(type="feeder", id="f1", voltage_v=230.0, phases=3)
CFG = OscpConfig(registration_token="a", cp_name="dso", groups={"g1": GROUP})


def block(capacity: float, unit: str = "KW", start: int = 0, minutes: int = 30) -> ForecastedBlock:
    return ForecastedBlock(
        capacity=capacity,
        phase="ALL",
        unit=unit,
        start_time=T0 + timedelta(minutes=start),
        end_time=T0 + timedelta(minutes=start + minutes),
    )


@pytest.mark.parametrize(
    ("capacity", "unit", "kw"),
    [
        (40.0, "KW", 40.0),
        (40_000.0, "W", 40.0),
        (16.0, "A", 16 * 230 * 3 / 1000),
        (20.0, "KWH", 40.0),
        (20_000.0, "WH", 40.0),
    ],
)
def test_block_kw_converts_each_unit_and_back(capacity: float, unit: str, kw: float) -> None:
    b = block(capacity, unit)
    assert block_kw(b, GROUP) == pytest.approx(kw)
    assert kw_in_unit(kw, b, GROUP) == pytest.approx(capacity)


def test_amperes_use_the_groups_phases_and_voltage() -> None:
    single = OscpGroup(type="site", id="s1", voltage_v=240.0, phases=1)
    assert block_kw(block(32.0, "A"), single) == pytest.approx(32 * 240 / 1000)


def test_forecast_issues_lists_every_problem() -> None:
    bad = GroupCapacityForecast(
        group_id="nope",
        type=ForecastType.CONSUMPTION,
        forecasted_blocks=[
            block(-1.0),
            ForecastedBlock(capacity=5, phase="ALL", unit="KW", start_time=T0, end_time=T0),
        ],
    )
    codes = sorted((i.field, i.code) for i in forecast_issues(bad, CFG))
    assert codes == [
        ("forecasted_blocks.0.capacity", "negative_capacity"),
        ("forecasted_blocks.1.end_time", "end_before_start"),
        ("group_id", "unknown_group"),
    ]


def test_negative_generation_capacity_is_not_a_problem() -> None:
    fc = GroupCapacityForecast(group_id="g1", type="GENERATION", forecasted_blocks=[block(-5)])
    assert forecast_issues(fc, CFG) == []


def test_forecast_limits_skip_blocks_over_and_clip_to_not_before() -> None:
    fc = GroupCapacityForecast(
        group_id="g1",
        type=ForecastType.CONSUMPTION,
        forecasted_blocks=[block(10.0, start=0), block(16.0, "A", start=30), block(7.0, start=60)],
    )
    now = T0 + timedelta(minutes=31)
    limits = forecast_limits(fc, CFG, now, kind="consumption")
    assert [m.event_id for m in limits] == [
        "oscp:dso:g1:consumption:1",
        "oscp:dso:g1:consumption:2",
    ]
    assert [(m.target_type, m.target_id, m.source) for m in limits] == [
        ("feeder", "f1", "oscp:dso")
    ] * 2
    assert limits[0].limit_kw == pytest.approx(11.04)
    clipped = forecast_limits(fc, CFG, now, kind="fallback", not_before=T0 + timedelta(minutes=70))
    assert [(m.event_id, m.start) for m in clipped] == [
        ("oscp:dso:g1:fallback:2", T0 + timedelta(minutes=70))
    ]


def test_group_keys_make_valid_event_ids() -> None:
    for gid in ["g1", "grid area/7 ü", "x" * 500]:
        cfg = OscpConfig(registration_token="a", groups={gid: GROUP})
        assert event_id_issues(f"oscp:{cfg.cp_name}:{group_key(gid)}:consumption:99") == []
    assert group_key("a/b") != group_key("a/c")


def test_adjust_request_asks_in_the_blocks_unit_from_now() -> None:
    fc = GroupCapacityForecast(
        group_id="g1", type="CONSUMPTION", forecasted_blocks=[block(16.0, "A")]
    )
    now = T0 + timedelta(minutes=10, microseconds=5)
    ask = adjust_request(fc, 0, 22.08, GROUP, now)
    (b,) = ask.forecasted_blocks
    assert (b.unit, b.capacity, b.start_time, b.end_time) == (
        "A",
        32.0,
        T0 + timedelta(minutes=10),
        T0 + timedelta(minutes=30),
    )


def test_measurement_body_is_an_accumulating_kwh_register() -> None:
    body = dump(measurement("g1", 1.25, T0, T0 + timedelta(hours=1)))
    assert body == {
        "group_id": "g1",
        "measurements": [
            {
                "value": 1.25,
                "phase": "ALL",
                "unit": "KWH",
                "direction": "NET",
                "energy_type": "TOTAL",
                "measure_time": "2030-05-01T13:00:00Z",
                "initial_measure_time": "2030-05-01T12:00:00Z",
            }
        ],
    }
