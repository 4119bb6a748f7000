"""Prequalification: the test profiles, and pass/fail on fleets that can and cannot carry
the reserve (small fleets, short holds: each run takes about a second)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.stream.inprocess import InProcessBus
from aggregator.errors import InvalidInput
from aggregator.messages import AfrrRequest, FrequencySample
from aggregator.sim.scenario import Scenario, SessionSpec
from aggregator.topology import Feeder, Site, Topology
from markets.prequalify import afrr_profile, fcr_profile, prequalify

T0 = datetime(2026, 1, 14, 18, tzinfo=UTC)


def fleet(evses: int, reserve_kw: float = 40.0, energy_kwh: float = 60.0) -> Scenario:
    """``evses`` cars of 11 kW plugged in for 8 h, each wanting ``energy_kwh``."""
    topo = Topology(feeders=(Feeder("f1", 500.0),), sites=(Site("s1", "f1", 400.0, csms_id="c1"),))
    sessions = tuple(
        SessionSpec(
            f"e{i:02d}", "s1", T0 - timedelta(minutes=5), T0 + timedelta(hours=8), energy_kwh, 11.0
        )
        for i in range(evses)
    )
    return Scenario(
        name=f"pool-{evses}",
        feeder="f1",
        topology=topo,
        start=T0,
        end=T0 + timedelta(hours=8),
        step_s=900.0,
        sessions=sessions,
        reserve_kw=reserve_kw,
    )


def test_fcr_profile_hand_checked() -> None:
    p = fcr_profile(T0, 40.0, hold_s=120, settle_s=60)
    assert p.duration_s == 60 + 120 + 60 + 120 + 60 and p.end == T0 + timedelta(seconds=420)
    sig = p.signal_at(T0 + timedelta(seconds=61))
    assert isinstance(sig, FrequencySample) and sig.hz == 49.8
    assert p.signal_at(T0 + timedelta(seconds=59)).hz == 50.0  # type: ignore[union-attr]
    assert p.signal_at(T0 + timedelta(seconds=300)).hz == 50.2  # type: ignore[union-attr]
    assert p.frac_at(T0 + timedelta(seconds=1000)) == 0.0  # after the profile


def test_afrr_profile_orders_every_4_s() -> None:
    p = afrr_profile(T0, 40.0, hold_s=100, settle_s=20, ramp_s=100)
    ramp0 = T0 + timedelta(seconds=20 + 100 + 20 + 100 + 20)  # start of "ramp 0 → +reserve"
    a = p.signal_at(ramp0 + timedelta(seconds=9))
    assert isinstance(a, AfrrRequest)
    assert a.setpoint_kw == pytest.approx(40.0 * 8 / 100)  # held from the cycle at 8 s
    assert p.signal_at(ramp0 + timedelta(seconds=11)).setpoint_kw == pytest.approx(  # type: ignore[union-attr]
        40.0 * 8 / 100
    )
    assert p.signal_at(T0 + timedelta(seconds=25)).setpoint_kw == 40.0  # type: ignore[union-attr]


@settings(max_examples=40, deadline=None)
@given(st.floats(1.0, 5000.0), st.integers(0, 4000))
def test_property_orders_stay_within_the_reserve(reserve: float, offset: int) -> None:
    for p in (fcr_profile(T0, reserve), afrr_profile(T0, reserve)):
        assert -1.0 <= p.frac_at(T0 + timedelta(seconds=offset)) <= 1.0
        sig = p.signal_at(T0 + timedelta(seconds=offset))
        if isinstance(sig, AfrrRequest):
            assert abs(sig.setpoint_kw) <= reserve + 1e-9
        else:
            assert 49.8 - 1e-9 <= sig.hz <= 50.2 + 1e-9


@pytest.mark.parametrize("product", ["fcr", "afrr"])
def test_a_fleet_that_can_carry_the_reserve_passes(product: str) -> None:
    # 12 × 11 kW charging for 8 h: ≥ 40 kW up and down all along
    r = prequalify(
        fleet(12), product, bus_factory=InProcessBus, hold_s=360, settle_s=60, ramp_s=120
    )
    assert r.passed, r.reasons
    assert r.reasons == () and r.settlement.gaps == ()
    assert r.record.seconds == r.profile.duration_s and r.record.gaps() == []
    full = [s for s in r.segments if "reserve" in s.label or "mHz" in s.label]
    held = [s for s in full if s.ordered_kw and "ramp" not in s.label]
    assert len(held) == 2
    for s in held:  # at the end of each hold the order is delivered within ±5 % (2 kW)
        assert abs(s.delivered_kw - s.ordered_kw) <= 2.0 + 1e-9
    assert any("±5 %" in t or "±5%" in t for t in r.tolerances)


@pytest.mark.parametrize("product", ["fcr", "afrr"])
def test_a_fleet_that_cannot_carry_it_fails_with_the_reason(product: str) -> None:
    # 3 × 11 kW already charging at full power: nothing up, 33 kW down of the 40 kW asked
    r = prequalify(fleet(3), product, bus_factory=InProcessBus, hold_s=360, settle_s=60)
    assert not r.passed
    up = next(s for s in r.segments if s.ordered_kw > 0 and "ramp" not in s.label)
    down = next(s for s in r.segments if s.ordered_kw < 0 and "ramp" not in s.label)
    assert up.delivered_kw == pytest.approx(0.0, abs=1e-6) and not up.ok
    assert down.delivered_kw == pytest.approx(-33.0, abs=0.5) and not down.ok
    joined = "\n".join(r.reasons)
    assert up.label in joined and down.label in joined
    assert "ordered +40.0 kW, delivered +0.0 kW" in joined


def test_start_moves_the_test_into_the_scenario() -> None:
    # from 19:00 the cars plugged in since 17:55 count as arriving at 19:00 (40 kWh each,
    # 7 h left: ~69 kW on average of 132 kW, room both ways); the test runs then
    start = T0 + timedelta(hours=1)
    sc = fleet(12, energy_kwh=40.0)
    r = prequalify(sc, "fcr", bus_factory=InProcessBus, hold_s=120, settle_s=60, start=start)
    assert r.profile.start == start and r.record.start == start
    assert r.passed, r.reasons
    with pytest.raises(InvalidInput) as exc:
        prequalify(fleet(12), "fcr", bus_factory=InProcessBus, start=T0 + timedelta(days=1))
    assert [i.code for i in exc.value.issues] == ["outside_scenario"]


def test_prequalify_rejects_a_test_without_reserve() -> None:
    with pytest.raises(InvalidInput) as exc:
        prequalify(fleet(3, reserve_kw=0.0), "fcr", bus_factory=InProcessBus, hold_s=0)
    assert {i.code for i in exc.value.issues} == {"no_reserve", "bad_duration"}
