"""Settlement: the acceptance band and the shortfall rule, against hand-computed cases.

Every case uses a 100 kW reserve, so the ±5 % tolerance is ±5 kW; the aFRR band reacts
within 30 s and is full at 300 s, so after a step at ``t₀`` its slow edge is
``Δ · (t − t₀ − 30) / 270`` between ``t₀ + 30`` and ``t₀ + 300``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from markets.record import PoolRecord
from markets.settlement import (
    AFRR_BAND,
    FCR_BAND,
    AcceptanceBand,
    acceptance_band,
    fcr_availability,
    settle,
)

T0 = datetime(2026, 1, 14, 17, 0, tzinfo=UTC)
RESERVE = 100.0


def record(
    requested: np.ndarray,
    delivered: np.ndarray,
    *,
    baseline: float = 50.0,
    reserve: np.ndarray | float = RESERVE,
    start: datetime = T0,
) -> PoolRecord:
    n = requested.size
    base = np.full(n, baseline)
    measured = base + delivered  # NaN in delivered → a gap
    res = np.broadcast_to(np.asarray(reserve, dtype=np.float64), (n,)).copy()
    return PoolRecord("pool-1", start, base, requested, base + requested, measured, res)


def step(n: int, at: int, value: float, before: float = 0.0) -> np.ndarray:
    r = np.full(n, before)
    r[at:] = value
    return r


# --- the band -------------------------------------------------------------------------


def test_afrr_band_after_a_step_hand_computed() -> None:
    r = step(400, 10, 100.0)  # 0 → +100 kW at t = 10 s
    lo, hi = acceptance_band(r, np.full(400, RESERVE), AFRR_BAND)
    assert (lo[9], hi[9]) == (-5.0, 5.0)  # before the step: 0 ± 5
    assert (lo[10], hi[10]) == (-5.0, 105.0)  # fast edge at once, slow edge still at 0
    assert lo[40] == pytest.approx(-5.0)  # t₀ + 30 s: no reaction required yet
    assert lo[41] == pytest.approx(100 / 270 - 5)  # one second into the ramp
    assert lo[175] == pytest.approx(45.0)  # halfway: 100·135/270 − 5
    assert lo[310] == pytest.approx(95.0)  # t₀ + 300 s: full, minus the tolerance
    assert lo[399] == pytest.approx(95.0)
    np.testing.assert_allclose(hi[10:], 105.0)


def test_band_of_a_negative_step_mirrors() -> None:
    r = step(400, 10, -100.0)
    lo, hi = acceptance_band(r, np.full(400, RESERVE), AFRR_BAND)
    assert hi[175] == pytest.approx(-45.0)
    assert lo[175] == pytest.approx(-105.0)
    assert hi[310] == pytest.approx(-95.0)


def test_band_superposes_changes_every_few_seconds() -> None:
    # +40 kW at t = 1 and +40 kW more at t = 101: at t = 201 the slow edge is
    # 40·(200 − 30)/270 + 40·(100 − 30)/270 = 40·240/270 = 35.555… kW
    r = np.zeros(400)
    r[1:] = 40.0
    r[101:] = 80.0
    lo, hi = acceptance_band(r, np.full(400, RESERVE), AFRR_BAND)
    assert lo[201] == pytest.approx(40 * 240 / 270 - 5)
    assert hi[201] == pytest.approx(85.0)


def test_fcr_band_is_full_after_30_s() -> None:
    r = step(100, 0, 0.0)
    r[10:] = -100.0  # 49.8 Hz from t = 10 s
    lo, hi = acceptance_band(r, np.full(100, RESERVE), FCR_BAND)
    assert hi[12] == pytest.approx(5.0)  # within the first 2 s nothing is required
    assert hi[26] == pytest.approx(-100 * 14 / 28 + 5)  # halfway between 2 s and 30 s
    assert hi[40] == pytest.approx(-95.0)
    assert lo[40] == pytest.approx(-105.0)


def test_band_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="reaction_s"):
        AcceptanceBand("x", reaction_s=30, full_s=30)


# --- the shortfall rule ---------------------------------------------------------------


def test_short_delivery_after_a_step_hand_computed() -> None:
    """The pool jumps to +90 kW at once and stays there; +100 kW was ordered.

    The band's lower edge is 100·(t − 40)/270 − 5: 89.815 kW at t = 296 (inside), 90.185 kW
    at t = 297 (outside). Outside: t = 297 … 399, 103 s. The window ending at t = 312 is
    the first with 16 > 15 outside seconds, so all 103 are penalised.
    Shortfall: t = 297 … 309, Σ (100·(t − 40)/270 − 95) = 100·3419/270 − 13·95 = 31.2963 kW·s;
    t = 310 … 399, 90 × (95 − 90) = 450 kW·s; total 481.2963 kW·s = 0.133693 kWh.
    """
    n = 400
    r = step(n, 10, 100.0)
    d = step(n, 10, 90.0)
    s = settle(record(r, d), AFRR_BAND)
    assert np.flatnonzero(s.outside).tolist() == list(range(297, 400))
    assert not s.failed_window[311] and s.failed_window[312]
    assert np.array_equal(s.penalised, s.outside)
    assert s.shortfall_kw[297] == pytest.approx(100 * 257 / 270 - 95)
    assert s.shortfall_kw[310] == pytest.approx(5.0)
    assert s.shortfall_kwh == pytest.approx((100 * 3419 / 270 - 13 * 95 + 450) / 3600)
    assert not s.compliant
    (f,) = s.findings()
    assert f.penalised_s == 103 and f.start == T0 + timedelta(seconds=297)
    assert f.ordered_kw == pytest.approx(100.0) and f.delivered_kw == pytest.approx(90.0)


def test_a_ramp_inside_the_band_is_compliant() -> None:
    # the pool ramps to the order in 150 s (twice as fast as required): never outside
    n = 600
    r = step(n, 10, 100.0)
    t = np.arange(n)
    d = np.clip((t - 10) / 150.0, 0.0, 1.0) * 100.0
    s = settle(record(r, d), AFRR_BAND)
    assert not s.outside.any() and s.compliant and s.shortfall_kwh == 0.0


@pytest.mark.parametrize(("outside_s", "penalised"), [(15, False), (16, True)])
def test_window_rule_boundary_is_more_than_5_percent(outside_s: int, penalised: bool) -> None:
    # nothing ordered (band ±5 kW); the pool wanders to +10 kW for 15 or 16 seconds:
    # 15 = 5 % of 300 s is allowed, 16 is not; an unordered deviation is no shortfall
    n = 400
    d = np.zeros(n)
    d[100 : 100 + outside_s] = 10.0
    s = settle(record(np.zeros(n), d), AFRR_BAND)
    assert int(s.outside.sum()) == outside_s
    assert int(s.penalised.sum()) == (outside_s if penalised else 0)
    assert s.compliant is (not penalised)
    assert s.shortfall_kwh == 0.0


def test_outside_seconds_spread_over_a_window_add_up() -> None:
    # 8 outside seconds at t = 0…7 and 8 more at t = 290…297: the window ending at
    # t = 297 holds all 16 (> 15) and fails; both runs are penalised. 8 more at t = 600…607
    # are alone in every window that holds them: not penalised.
    n = 900
    d = np.zeros(n)
    for a in (0, 290, 600):
        d[a : a + 8] = -10.0
    s = settle(record(np.zeros(n), d), AFRR_BAND)
    assert np.flatnonzero(s.failed_window).tolist() == [297, 298, 299]
    assert np.flatnonzero(s.penalised).tolist() == [*range(8), *range(290, 298)]


def test_shortfall_under_a_steady_negative_order() -> None:
    # −100 kW ordered since before the record: band [−105, −95]. The pool gives −80 kW for
    # 16 s: each second is 15 kW short (−80 − (−95)), 16 × 15 = 240 kW·s = 0.0667 kWh
    n = 300
    r = np.full(n, -100.0)
    d = np.full(n, -100.0)
    d[50:66] = -80.0
    s = settle(record(r, d), AFRR_BAND)
    assert int(s.penalised.sum()) == 16
    assert s.shortfall_kwh == pytest.approx(240 / 3600)
    assert s.totals()["shortfall_kwh"] == pytest.approx(240 / 3600)


# --- gaps -----------------------------------------------------------------------------


def test_a_gap_is_reported_and_counts_as_not_delivered() -> None:
    # +100 kW ordered and delivered throughout, but 16 s of the record are missing: the gap
    # is reported, its seconds are outside (delivered counts as 0: 95 kW short each), the
    # window fails, shortfall 16 × 95 kW·s. A 10 s gap is reported but not penalised.
    n = 300
    r = np.full(n, 100.0)
    for length, penalised in ((16, True), (10, False)):
        d = np.full(n, 100.0)
        d[100 : 100 + length] = np.nan
        s = settle(record(r, d), AFRR_BAND)
        (gap,) = s.gaps
        assert gap.start == T0 + timedelta(seconds=100) and gap.seconds == length
        assert int(s.outside.sum()) == length
        assert int(s.penalised.sum()) == (length if penalised else 0)
        assert s.shortfall_kwh == pytest.approx(16 * 95 / 3600 if penalised else 0.0)
        assert sum(q.missing_s for q in s.quarter_hours) == length
        assert np.isnan(s.delivered_kw[100])  # the gap stays a gap
        if penalised:
            (f,) = s.findings()
            assert f.gap_s == 16 and "no data" in str(f)  # a gap is not "0 kW delivered"


# --- per quarter-hour -----------------------------------------------------------------


def test_quarter_hours_are_utc_aligned_and_hand_computed() -> None:
    # 20 s from 17:14:50: 10 s in the quarter-hour from 17:00, 10 s in the one from 17:15.
    # Baseline 50 kW, ordered 36 kW, delivered 36 kW → actual 86 kW.
    start = T0 + timedelta(minutes=14, seconds=50)
    r = np.full(20, 36.0)
    s = settle(record(r, r.copy(), start=start), AFRR_BAND)
    a, b = s.quarter_hours
    assert a.start == T0 and b.start == T0 + timedelta(minutes=15)
    assert (a.seconds, b.seconds) == (10, 10)
    assert a.baseline_kwh == pytest.approx(50 * 10 / 3600)
    assert a.ordered_kwh == pytest.approx(36 * 10 / 3600) == b.delivered_kwh
    assert a.actual_kwh == pytest.approx(86 * 10 / 3600)
    assert a.shortfall_kwh == 0.0 and a.outside_s == 0


# --- FCR availability -----------------------------------------------------------------


def test_fcr_availability_hand_computed() -> None:
    # 100 s: 5 s missing, 10 s with only 60 kW of the 100 kW held → 85 s held, 0.85
    reserve = np.full(100, RESERVE)
    reserve[20:30] = 60.0
    d = np.zeros(100)
    d[50:55] = np.nan
    a = fcr_availability(record(np.zeros(100), d, reserve=reserve))
    assert (a.seconds, a.present_s, a.held_s) == (100, 95, 85)
    assert a.availability == pytest.approx(0.85)
    assert fcr_availability(record(np.zeros(100), d, reserve=reserve), 50.0).held_s == 95


# --- properties -----------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from([-100.0, -40.0, 0.0, 40.0, 100.0]), min_size=1, max_size=12),
    st.lists(st.floats(-150.0, 150.0), min_size=1, max_size=12),
    st.integers(0, 2**31 - 1),
)
def test_property_band_and_verdicts(orders: list[float], noise: list[float], seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 40 * len(orders)
    r = np.repeat(np.asarray(orders), 40)
    d = np.resize(np.repeat(np.asarray(noise), 37), n)
    d[rng.random(n) < 0.02] = np.nan
    s = settle(record(r, d), AFRR_BAND)
    assert np.all(s.lower_kw <= r + 1e-9) and np.all(r <= s.upper_kw + 1e-9)
    assert not np.any(s.penalised & ~s.outside)
    assert np.all(s.shortfall_kw >= 0) and np.all(s.shortfall_kw[~s.penalised] == 0)
    tot = s.totals()
    assert tot["penalised_s"] == sum(q.penalised_s for q in s.quarter_hours)
    assert tot["shortfall_kwh"] == pytest.approx(sum(q.shortfall_kwh for q in s.quarter_hours))
    # following the order exactly (no gaps) is always compliant
    exact = settle(record(r, r.copy()), AFRR_BAND)
    assert not exact.outside.any() and exact.compliant
