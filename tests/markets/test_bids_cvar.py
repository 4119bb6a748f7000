"""CVaR sizing: the tail mean of the worst scenarios, never above the quantile volume."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from markets.bids import AFRR_RULES, FCR_RULES, delivery_day, make_bids
from markets.bids.cvar import cvar_volume_kw
from markets.forecast import Direction, FlexForecast
from markets.forecast.forecast import lower_quantile

DAY = delivery_day(date(2026, 1, 14))
MADE = datetime(2026, 1, 13, 6, 0, tzinfo=UTC)


def test_hand_computed_tail_means() -> None:
    f = np.array([[5.0, 1.0], [1.0, 2.0], [3.0, 3.0], [2.0, 4.0], [4.0, 5.0]])
    # α = 0.4 of 5 scenarios: the two worst, (1 + 2) / 2 in both columns
    assert cvar_volume_kw(f, 0.4) == pytest.approx([1.5, 1.5], abs=1e-7)
    # α = 0.3: 1.5 scenarios — the worst in full, the next with half a weight
    assert cvar_volume_kw(f, 0.3) == pytest.approx([(1 + 0.5 * 2) / 1.5] * 2, abs=1e-7)
    # a tail below zero offers nothing; α = 1 is the mean
    assert cvar_volume_kw(f - 10.0, 0.4) == pytest.approx([0.0, 0.0], abs=1e-9)
    assert cvar_volume_kw(f, 1.0) == pytest.approx([3.0, 3.0], abs=1e-7)
    with pytest.raises(ValueError):
        cvar_volume_kw(f, 0.0)


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float64, (200, 6), elements=st.floats(0.0, 5000.0)),
    st.sampled_from([0.9, 0.93, 0.95, 0.97]),
)
def test_cvar_is_never_above_the_quantile_on_the_same_scenarios(
    samples: np.ndarray, reached_with: float
) -> None:
    """200 scenarios (the CLI's default) and the chance levels one bids at: the tail
    ``(1 − reached_with)·200`` is a whole number of scenarios."""
    alpha = 1.0 - reached_with
    cvar = cvar_volume_kw(samples, alpha)
    quantile = lower_quantile(samples, alpha)
    tol = 1e-6 * max(1.0, float(samples.max()))
    assert np.all(cvar <= quantile + tol)
    assert np.all(cvar >= samples.min(axis=0) - tol)
    k = round(alpha * 200)  # and it is the mean of the k worst
    assert cvar == pytest.approx(np.sort(samples, axis=0)[:k].mean(axis=0), abs=tol)


def test_a_cvar_bid_offers_no_more_than_the_quantile_bid() -> None:
    rng = np.random.default_rng(5)
    day_profile = 1500.0 + 1000.0 * np.sin(np.linspace(0.0, np.pi, 96))
    up = np.maximum(day_profile * rng.gamma(8.0, 1 / 8.0, (200, 1)), 0.0)
    down = np.maximum(0.8 * day_profile * rng.gamma(6.0, 1 / 6.0, (200, 1)), 0.0)
    fc = FlexForecast(DAY.start, 900.0, DAY.blocks, 900.0, np.zeros_like(up), up, down, 0)
    for rules in (FCR_RULES, AFRR_RULES):
        q = make_bids(fc, DAY, rules, created_at=MADE)
        c = make_bids(fc, DAY, rules, created_at=MADE, method="cvar")
        assert q.method == "quantile" and c.method == "cvar"
        for name in q.firm_kw:
            assert np.all(c.firm_kw[name] <= q.firm_kw[name] + 1e-6)
            for b in range(DAY.blocks.n):
                assert c.volume_mw(name, b) <= q.volume_mw(name, b)
        # the CVaR volume is strictly lower somewhere: the tail has spread
        assert any(np.any(c.firm_kw[n] < q.firm_kw[n] - 1.0) for n in q.firm_kw)
    assert fc.widened_block_kw(Direction.UP, 0.93).shape == (200, DAY.blocks.n)
    with pytest.raises(ValueError):
        make_bids(fc, DAY, FCR_RULES, created_at=MADE, method="median")
