"""Activation rules: FCR droop from the product's numbers, aFRR clip, the core's protocol."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.dispatch import Activation
from aggregator.messages import AfrrRequest, FrequencySample
from markets.activation import NOMINAL_HZ, AfrrClip, FcrDroop, ReserveActivation, fcr_activation
from markets.products import FCR

T0 = datetime(2026, 1, 14, 17, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("hz", "expected"),
    [
        (50.0, 0.0),
        (50.01, 0.0),
        (49.99, 0.0),
        (50.2, 1.0),
        (49.8, -1.0),
        (50.5, 1.0),
        (49.5, -1.0),
        (50.105, 0.5),
        (49.895, -0.5),
    ],
)
def test_fcr_characteristic(hz: float, expected: float) -> None:
    assert fcr_activation(hz) == pytest.approx(expected, abs=1e-9)


@given(st.floats(49.0, 51.0), st.floats(49.0, 51.0))
def test_fcr_is_monotone_bounded_and_odd(a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert fcr_activation(lo) <= fcr_activation(hi)
    assert -1.0 <= fcr_activation(a) <= 1.0
    mirrored = fcr_activation(2 * NOMINAL_HZ - a)
    assert mirrored == pytest.approx(-fcr_activation(a), abs=1e-9)


def test_fcr_numbers_come_from_the_product() -> None:
    wide = dataclasses.replace(FCR, deadband_hz=0.05, full_activation_hz=0.25)
    assert fcr_activation(50.04, product=wide) == 0.0
    assert fcr_activation(50.15, product=wide) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="deadband"):
        fcr_activation(50.1, product=dataclasses.replace(FCR, full_activation_hz=0.01))


@given(st.floats(-1e6, 1e6), st.floats(0.0, 1e4))
def test_afrr_is_clipped_to_the_reserve(setpoint_kw: float, reserve_kw: float) -> None:
    got = AfrrClip().deviation_kw(setpoint_kw, reserve_kw)
    assert -reserve_kw <= got <= reserve_kw
    if abs(setpoint_kw) <= reserve_kw:
        assert got == setpoint_kw


def test_reserve_activation_is_the_cores_protocol_and_routes_by_signal() -> None:
    rule = ReserveActivation()
    assert isinstance(rule, Activation)
    assert rule.deviation_kw(FrequencySample(ts=T0, hz=49.8), 100.0) == pytest.approx(-100.0)
    assert rule.deviation_kw(FrequencySample(ts=T0, hz=50.105), 100.0) == pytest.approx(50.0)
    clip = ReserveActivation(afrr=AfrrClip())
    assert clip.deviation_kw(AfrrRequest(ts=T0, setpoint_kw=-500.0), 100.0) == -100.0
    assert clip.deviation_kw(AfrrRequest(ts=T0, setpoint_kw=30.0), 100.0) == 30.0
    # the default aFRR answer is ramp-limited: 100 kW over 120 s, 4 s per request
    ramp = [
        rule.deviation_kw(AfrrRequest(ts=T0 + timedelta(seconds=4 * k), setpoint_kw=-500.0), 100.0)
        for k in range(40)
    ]
    assert ramp[0] == pytest.approx(-100.0 * 4 / 120)
    assert all(b <= a for a, b in itertools.pairwise(ramp))
    assert ramp[29] == pytest.approx(-100.0) and ramp[-1] == pytest.approx(-100.0)
    assert FcrDroop().deviation_kw(50.0, 100.0) == 0.0
