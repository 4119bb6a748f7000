"""aFRR ramp-limited answer (stateful, the core's protocol) and the droop tables."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.dispatch import Activation, Dispatcher
from aggregator.messages import AfrrRequest, FrequencySample
from markets.activation import (
    AfrrRamp,
    DroopCurve,
    ReserveActivation,
    droop_tables,
    fcr_activation,
    tables_json,
)
from markets.activation.droop import droop_tables_from_frame
from markets.products import FCR

T0 = datetime(2026, 1, 14, 17, 0, tzinfo=UTC)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def test_ramp_hand_computed() -> None:
    ramp = AfrrRamp(ramp_s=100.0)  # 100 kW reserve → 1 kW/s
    assert ramp.deviation_kw(80.0, 100.0, at(0)) == pytest.approx(4.0)  # first: one 4 s cycle
    assert ramp.deviation_kw(80.0, 100.0, at(4)) == pytest.approx(8.0)
    assert ramp.deviation_kw(80.0, 100.0, at(80)) == pytest.approx(80.0)  # reached, held
    assert ramp.deviation_kw(500.0, 100.0, at(84)) == pytest.approx(84.0)  # target clipped
    assert ramp.deviation_kw(500.0, 100.0, at(200)) == pytest.approx(100.0)
    assert ramp.deviation_kw(-100.0, 100.0, at(204)) == pytest.approx(96.0)
    assert ramp.deviation_kw(-100.0, 100.0, at(100)) == pytest.approx(96.0)  # stale: no time
    assert ramp.deviation_kw(float("nan"), 100.0, at(208)) == pytest.approx(92.0)  # toward 0


def test_ramp_must_be_within_the_full_activation_time() -> None:
    with pytest.raises(ValueError, match="full activation"):
        AfrrRamp(ramp_s=151.0)


def test_reserve_activation_with_ramp_is_the_cores_protocol() -> None:
    rule = ReserveActivation(afrr=AfrrRamp(ramp_s=150.0))
    assert isinstance(rule, Activation)
    assert rule.deviation_kw(AfrrRequest(ts=at(0), setpoint_kw=-150.0), 150.0) == -4.0
    assert rule.deviation_kw(AfrrRequest(ts=at(4), setpoint_kw=-150.0), 150.0) == -8.0
    # FCR samples are untouched by the aFRR state
    assert rule.deviation_kw(FrequencySample(ts=at(5), hz=49.8), 150.0) == pytest.approx(-150.0)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-300.0, 300.0), st.floats(0.0, 20.0)), min_size=1, max_size=40),
    st.floats(1.0, 500.0),
    st.floats(10.0, 150.0),
)
def test_property_ramp_bounded_rate_limited_and_reaches(
    steps: list[tuple[float, float]], reserve: float, ramp_s: float
) -> None:
    ramp = AfrrRamp(ramp_s=ramp_s)
    t, prev = 0.0, 0.0
    for k, (sp, dt) in enumerate(steps):
        dt_s = (at(t + dt) - at(t)).total_seconds()  # what the clock can tell
        t += dt
        out = ramp.deviation_kw(sp, reserve, at(t))
        allowed = reserve * (4.0 if k == 0 else dt_s) / ramp_s
        assert abs(out) <= reserve + 1e-9
        assert abs(out - prev) <= allowed + 1e-6
        prev = out
    target = min(max(steps[-1][0], -reserve), reserve)
    assert ramp.deviation_kw(steps[-1][0], reserve, at(t + 2 * ramp_s)) == pytest.approx(
        target, abs=1e-6
    )


# --- droop tables ---------------------------------------------------------------------


def test_droop_tables_hand_computed_and_json() -> None:
    curve = DroopCurve.of(FCR)
    (t,) = droop_tables(["e1"], np.array([7.0]), np.array([4.0]), np.array([3.0]), curve)
    assert t.points == ((49.8, 4.0), (49.99, 7.0), (50.01, 7.0), (50.2, 11.0))
    assert t.power_kw(50.0) == 7.0
    assert t.power_kw(49.895) == pytest.approx(5.5)  # halfway down
    assert t.power_kw(51.0) == 11.0
    # the table answers like the FCR characteristic scaled by the EVSE's share
    for hz in (49.7, 49.85, 49.995, 50.1, 50.3):
        a = fcr_activation(hz)
        assert t.power_kw(hz) == pytest.approx(7.0 + (4.0 if a > 0 else 3.0) * a)
    doc = json.loads(tables_json([t], curve, T0, at(900)))
    assert doc["v"] == 1 and doc["unit"] == "kW" and doc["product"] == "FCR"
    assert doc["evses"][0]["points"][3] == {"hz": 50.2, "power_kw": 11.0}
    assert doc["valid_until"] == "2026-01-14T17:15:00+00:00"
    with pytest.raises(ValueError, match="UTC"):
        tables_json([t], curve, datetime(2026, 1, 1), at(1))  # noqa: DTZ001


def test_droop_tables_from_a_dispatch_frame_stay_in_the_envelope() -> None:
    n = 3
    frame = Dispatcher().prepare(
        base_kw=np.array([5.0, 0.0, 10.0]),
        lo_kw=np.array([0.0, -4.0, 0.0]),
        hi_kw=np.array([11.0, 11.0, 11.0]),
        slot_site=np.zeros(n, dtype=np.intp),
        site_feeder=np.zeros(1, dtype=np.intp),
        site_cap_kw=np.array([100.0]),
        site_export_kw=np.array([100.0]),
        feeder_cap_kw=np.array([100.0]),
        fleet_cap_kw=100.0,
    )
    tables = droop_tables_from_frame(["a", "b", "c"], frame, 12.0, DroopCurve.of(FCR))
    ups = [t.points[3][1] - t.points[2][1] for t in tables]
    downs = [t.points[1][1] - t.points[0][1] for t in tables]
    assert sum(ups) <= 12.0 + 1e-9 and sum(downs) <= 12.0 + 1e-9
    for t, lo, hi in zip(tables, frame.lo_kw, frame.hi_kw, strict=True):
        ys = [p[1] for p in t.points]
        assert all(lo - 1e-9 <= y <= hi + 1e-9 for y in ys)
        assert ys == sorted(ys)
