"""Setpoints to OCPP limits: units, the 6 A rounding, profile shapes, send policy, quirks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.csms.ocpp.profiles import (
    Electrical,
    SendPolicy,
    freq_watt_curve,
    kw_from_limit,
    profile_id,
    station_max_profile,
    to_limit,
    tx_default_profile,
    tx_profile,
)
from adapters.csms.ocpp.quirks import DEFAULT, quirks_for

T = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
AC3 = Electrical("A", 3, 230.0, 6.0, 0.1)


def test_amperes_per_phase_and_watts() -> None:
    assert to_limit(11.04, AC3).value == pytest.approx(16.0)
    assert to_limit(7.4, Electrical("A", 1, 230.0)).value == pytest.approx(32.1)
    w = to_limit(7.4, Electrical("W", 3, 230.0, 6.0, 10.0))
    assert (w.value, w.unit, w.rounded) == (7400.0, "W", None)


def test_below_six_amperes_rounds_down_to_zero_and_says_so() -> None:
    lim = to_limit(3.0, AC3)  # 4.3 A on three phases
    assert (lim.value, lim.applied_kw, lim.rounded) == (0.0, 0.0, "min_current")
    assert to_limit(4.2, AC3).value == pytest.approx(6.0)  # §14a floor: 6.08 A → 6.0 A


def test_export_only_with_v2x() -> None:
    assert to_limit(-5.0, AC3).rounded == "no_export"
    v2g = to_limit(-5.0, AC3, export_allowed=True)
    assert v2g.value < 0 and v2g.rounded is None
    prof = tx_profile(1, "t", v2g, 3, start=T, duration_s=900, v2x=True)
    period = prof["charging_schedule"][0]["charging_schedule_period"][0]
    assert period["operation_mode"] == "CentralSetpoint" and period["setpoint"] == v2g.value


@given(
    st.floats(min_value=-50.0, max_value=400.0),
    st.sampled_from([1, 3]),
    st.sampled_from(["A", "W"]),
)
def test_limit_never_allows_more_than_asked(kw: float, phases: int, unit: str) -> None:
    elec = Electrical(unit, phases, 230.0, 6.0, 0.1 if unit == "A" else 1.0)  # type: ignore[arg-type]
    lim = to_limit(kw, elec)
    assert lim.applied_kw == pytest.approx(kw_from_limit(lim.value, elec))
    assert 0.0 <= lim.applied_kw <= max(kw, 0.0) + 1e-9
    assert lim.applied_kw == 0.0 or lim.applied_kw >= elec.min_power_kw() - 0.1


def test_profile_shapes() -> None:
    lim = to_limit(7.0, AC3)
    tx = tx_profile(2, "tx-9", lim, 3, start=T, duration_s=900)
    assert (
        tx["charging_profile_purpose"] == "TxProfile" and tx["charging_profile_kind"] == "Absolute"
    )
    assert tx["id"] == profile_id("tx", 2) and tx["transaction_id"] == "tx-9"
    sched = tx["charging_schedule"][0]
    assert sched["start_schedule"] == "2026-03-02T06:00:00Z" and sched["duration"] == 900
    dyn = tx_profile(2, "tx-9", lim, 3, start=T, duration_s=900, dynamic=True, max_offline_s=120)
    assert dyn["charging_profile_kind"] == "Dynamic" and dyn["max_offline_duration"] == 120
    assert "start_schedule" not in dyn["charging_schedule"][0]
    default = tx_default_profile(0, lim, 3)
    assert default["charging_profile_purpose"] == "TxDefaultProfile"
    assert "duration" not in default["charging_schedule"][0]  # persistent
    mx = station_max_profile(lim, 3, T)
    assert mx["charging_profile_purpose"] == "ChargingStationMaxProfile" and mx["id"] == 1


def test_freq_watt_curve_is_the_fcr_droop() -> None:
    pts = freq_watt_curve(5000.0, 2000.0, nominal_hz=50.0, deadband_hz=0.01, full_hz=0.2)
    assert [p["frequency"] for p in pts] == [49.8, 49.99, 50.01, 50.2]
    assert [p["power"] for p in pts] == [3000.0, 5000.0, 5000.0, 7000.0]


def test_send_policy_tightens_at_once_loosens_beyond_deadband_at_a_bounded_rate() -> None:
    pol = SendPolicy(deadband_kw=0.5, min_interval_s=10.0, refresh_margin_s=300.0)
    assert pol.decide(1, 7.0, T) == "new"
    pol.accepted(1, 7.0, T + timedelta(seconds=900), "new", T)
    assert pol.decide(1, 7.3, T) is None  # inside the deadband
    assert pol.decide(1, 6.9, T) == "tighten"  # any decrease, at once
    assert pol.decide(1, 9.0, T) == "loosen"
    pol.accepted(1, 9.0, T + timedelta(seconds=900), "loosen", T)
    assert pol.decide(1, 11.0, T + timedelta(seconds=5)) is None  # rate-limited
    assert pol.decide(1, 11.0, T + timedelta(seconds=10)) == "loosen"
    assert pol.decide(1, 9.0, T + timedelta(seconds=601)) == "refresh"
    pol.forget(1)
    assert pol.decide(1, 9.0, T) == "new"


def test_quirks_come_from_one_table() -> None:
    assert quirks_for("Unknown", "X") is DEFAULT
    assert quirks_for("examplevendor", "AC-W22").rate_unit == "W"
    assert quirks_for("ExampleVendor", "DC-50").dynamic_profiles is False
    assert quirks_for("ExampleVendor", "DC-50").tx_default_per_evse is True
    assert DEFAULT.tx_default_per_evse is False  # one TxDefaultProfile on EVSE 0
    assert quirks_for("gridflex-sim", "reject-1").composite_check is False
