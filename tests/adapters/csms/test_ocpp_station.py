"""OCPP station messages to gridflex telemetry (StationLink, no network)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from adapters.csms.ocpp.quirks import DEFAULT
from adapters.csms.ocpp.station import StationLink, StationPlace, evse_key, parse_evse_key
from aggregator.messages import DsoLimitMessage, MeterValue, SessionEnded, SessionStarted

T = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


def _link(now: list[datetime]) -> tuple[StationLink, list[tuple[str, str, BaseModel]]]:
    out: list[tuple[str, str, BaseModel]] = []
    place = StationPlace(
        station_id="cs", site_id="s1", feeder_id="f1", csms_id="c1", max_power_kw=22.0
    )
    link = StationLink(
        place,
        lambda k, key, m: out.append((k, key, m)),
        ocpp_version="ocpp2.0.1",
        needs_wait_s=10.0,
        clock=lambda: now[0],
    )
    link.on_boot({"vendor_name": "v", "model": "m"}, DEFAULT)
    return link, out


def _mv(wh: float, w: float, t: datetime) -> list[dict[str, Any]]:
    return [
        {
            "timestamp": t.isoformat(),
            "sampled_value": [
                {"value": wh, "measurand": "Energy.Active.Import.Register"},
                {
                    "value": w / 1000,
                    "measurand": "Power.Active.Import",
                    "unit_of_measure": {"unit": "kW"},
                },
            ],
        }
    ]


def test_start_is_held_for_the_ev_needs_and_meter_values_wait_in_order() -> None:
    now = [T]
    link, out = _link(now)
    tx = {
        "transaction_info": {"transaction_id": "t1"},
        "evse": {"id": 2},
        "meter_value": _mv(1000, 0, T),
    }
    link.on_transaction("Started", T.isoformat(), tx)
    link.on_transaction(
        "Updated",
        T.isoformat(),
        {"transaction_info": {"transaction_id": "t1"}, "meter_value": _mv(1500, 7000, T)},
    )
    assert out == []  # held
    dep = T + timedelta(hours=3)
    link.on_charging_needs(
        2,
        {
            "departure_time": dep.isoformat(),
            "ac_charging_parameters": {
                "energy_amount": 30000,
                "ev_min_current": 8,
                "ev_max_current": 16,
                "ev_max_voltage": 400,
            },
        },
    )
    start, meter = out[0][2], out[1][2]
    assert isinstance(start, SessionStarted) and isinstance(meter, MeterValue)
    assert start.evse_id == "cs/2" and start.departure == dep and start.energy_requested_kwh == 30.0
    assert start.max_power_kw == 16 * 230 * 3 / 1000
    assert (start.phases, start.min_current_a) == (3, 8.0)  # the EV's minimum (issue 11)
    assert (meter.energy_kwh, meter.power_kw) == (0.5, 7.0)
    assert {k for k, _key, _m in out} == {"telemetry"} and {key for _k, key, _m in out} == {"f1"}
    link.on_transaction(
        "Ended",
        T.isoformat(),
        {"transaction_info": {"transaction_id": "t1"}, "meter_value": _mv(4000, 0, T)},
    )
    end = out[-1][2]
    assert isinstance(end, SessionEnded) and end.energy_kwh == 3.0 and not link.sessions


def test_without_needs_the_start_goes_after_the_wait_with_defaults() -> None:
    now = [T]
    link, out = _link(now)
    link.on_transaction(
        "Started", T.isoformat(), {"transaction_info": {"transaction_id": "t"}, "evse": {"id": 1}}
    )
    link.release_due(T + timedelta(seconds=9))
    assert out == []
    link.release_due(T + timedelta(seconds=10))
    start = out[0][2]
    assert isinstance(start, SessionStarted)
    assert start.departure == T + timedelta(hours=8) and start.energy_requested_kwh == 20.0


def test_charging_limit_becomes_a_site_limit_in_kw() -> None:
    link, out = _link([T])
    link.on_charging_limit(
        "SO",
        [
            {
                "id": 3,
                "charging_rate_unit": "A",
                "start_schedule": T.isoformat(),
                "duration": 3600,
                "charging_schedule_period": [
                    {"start_period": 0, "limit": 16},
                    {"start_period": 600, "limit": 10},
                ],
            }
        ],
        T,
    )
    kind, key, msg = out[0]
    assert (kind, key) == ("grid_signals", "f1") and isinstance(msg, DsoLimitMessage)
    assert msg.target_type == "site" and msg.target_id == "s1" and msg.source == "ocpp:SO"
    assert msg.limit_kw == 10 * 230 * 3 / 1000 and msg.end == T + timedelta(hours=1)


def test_device_model_and_evse_keys() -> None:
    link, _ = _link([T])
    link.on_device_model(
        {
            "SmartChargingCtrlr.RateUnit": "W",
            "EVSE.SupplyPhases": "1",
            "SmartChargingCtrlr.SupportsDynamicProfiles": "true",
        }
    )
    e = link.electrical()
    assert (e.unit, e.phases) == ("W", 1)
    assert link.dynamic_profiles is False  # a 2.0.1 connection never uses 2.1 features
    assert parse_evse_key(evse_key("a/b", 3)) == ("a/b", 3) and parse_evse_key("x") is None
