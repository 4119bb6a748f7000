"""Bids: whole MW, minimum 1 MW, symmetric FCR, POS/NEG aFRR, gates, no bid below 1 MW."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from markets.bids import (
    AFRR_RULES,
    FCR_RULES,
    awards_of,
    delivery_day,
    make_bids,
    reserve_schedule,
)
from markets.forecast import Direction, FlexForecast

DAY = delivery_day(date(2026, 1, 14))
MADE = datetime(2026, 1, 13, 6, 0, tzinfo=UTC)


def _forecast(up: np.ndarray, down: np.ndarray, past_days: int = 0) -> FlexForecast:
    return FlexForecast(DAY.start, 900.0, DAY.blocks, 900.0, np.zeros_like(up), up, down, past_days)


def test_delivery_day_blocks_and_gates() -> None:
    assert DAY.start == datetime(2026, 1, 13, 23, 0, tzinfo=UTC)  # 00:00 CET
    assert DAY.steps == 96 and DAY.blocks.n == 6
    assert list(DAY.blocks.first) == [0, 16, 32, 48, 64, 80]
    assert DAY.gate(FCR_RULES.gate_local) == datetime(2026, 1, 13, 7, 0, tzinfo=UTC)
    assert DAY.gate(AFRR_RULES.gate_local) == datetime(2026, 1, 13, 8, 0, tzinfo=UTC)
    summer = delivery_day(date(2026, 7, 1))
    assert summer.start == datetime(2026, 6, 30, 22, 0, tzinfo=UTC)  # CEST
    spring = delivery_day(date(2026, 3, 29))  # clocks go forward: a 23 h day
    assert spring.steps == 92
    assert list(spring.blocks.last - spring.blocks.first) == [12, 16, 16, 16, 16, 16]


flex = arrays(np.float64, (20, 96), elements=st.floats(0.0, 6000.0))


@settings(max_examples=60, deadline=None)
@given(flex, flex, st.integers(0, 30))
def test_offers_are_whole_mw_at_least_one_and_fcr_is_symmetric(
    up: np.ndarray, down: np.ndarray, past_days: int
) -> None:
    fc = _forecast(up, down, past_days)
    fcr = make_bids(fc, DAY, FCR_RULES, created_at=MADE)
    afrr = make_bids(fc, DAY, AFRR_RULES, created_at=MADE)
    for doc in (fcr, afrr):
        for o in doc.offers:
            assert isinstance(o.volume_mw, int) and o.volume_mw >= 1
        for b in range(6):  # the firm rung never exceeds the chance-constrained volume
            for name, kw in doc.firm_kw.items():
                firm = sum(
                    o.volume_mw
                    for o in doc.offers
                    if o.block == b and o.direction == name and o.rung == "firm"
                )
                assert 1000 * firm <= kw[b] + 1e-6
                total = doc.volume_mw(name, b)
                assert 1000 * total <= max(doc.p50_kw[name][b], kw[b]) + 1e-6
        assert doc.offers or any("no bid" in r for r in doc.reasons)
    assert {o.direction for o in fcr.offers} <= {"SYM"}
    assert {o.direction for o in afrr.offers} <= {"POS", "NEG"}
    sym = fc.quantile_kw(Direction.SYMMETRIC, 0.93)
    assert np.array_equal(fcr.firm_kw["SYM"], sym)
    # aFRR: POS is the fleet consuming less (down), NEG consuming more (up)
    assert np.array_equal(afrr.firm_kw["POS"], fc.quantile_kw(Direction.DOWN, 0.93))
    assert np.array_equal(afrr.firm_kw["NEG"], fc.quantile_kw(Direction.UP, 0.93))


def test_a_pool_below_one_mw_bids_nothing_and_says_why() -> None:
    small = np.full((50, 96), 700.0)  # 0.7 MW in every scenario and step
    doc = make_bids(_forecast(small, small), DAY, FCR_RULES, created_at=MADE, pool_id="demo")
    assert doc.offers == ()
    assert len(doc.reasons) == 7
    assert "0.70 MW" in doc.reasons[0] and "minimum 1 MW" in doc.reasons[0]
    assert doc.reasons[-1].startswith("pool demo: no block reaches 1 MW")


def test_ladder_firm_p90_cheap_increment_to_p50_dearer_and_energy_bids() -> None:
    # scenario levels 2.00 … 6.00 MW, flat over the day: P93 2.26 MW, P50 3.99 MW
    up = np.repeat(np.linspace(2000.0, 6000.0, 200)[:, None], 96, axis=1)
    doc = make_bids(_forecast(up, up.copy()), DAY, AFRR_RULES, created_at=MADE)
    firm = [o for o in doc.offers if o.rung == "firm"]
    inc = [o for o in doc.offers if o.rung == "increment"]
    assert len(firm) == 12 and len(inc) == 12  # 6 blocks × POS/NEG
    assert all(o.price_eur_per_mw < i.price_eur_per_mw for o, i in zip(firm, inc, strict=True))
    assert all(o.volume_mw == 2 for o in firm) and all(o.volume_mw == 1 for o in inc)
    # every quarter-hour backs the whole capacity offered in its block, per direction
    assert len(doc.energy_bids) == 96 * 2
    assert {e.volume_mw for e in doc.energy_bids} == {3}
    assert doc.energy_bids[0].start == DAY.start
    assert not doc.late and doc.gate == datetime(2026, 1, 13, 8, 0, tzinfo=UTC)
    assert make_bids(_forecast(up, up), DAY, AFRR_RULES, created_at=doc.gate).late


def test_awards_become_the_reserve_per_block() -> None:
    up = np.full((10, 96), 2500.0)
    down = np.full((10, 96), 1500.0)
    fc = _forecast(up, down)
    fcr = make_bids(fc, DAY, FCR_RULES, created_at=MADE)  # 1 MW SYM per block
    rest = fc.less(fcr.firm_kw["SYM"], fcr.firm_kw["SYM"])
    afrr = make_bids(rest, DAY, AFRR_RULES, created_at=MADE)  # NEG 1 MW, POS 0.5 → none
    assert [o.direction for o in afrr.offers] == ["NEG"] * 6
    sched = reserve_schedule(awards_of(fcr) + awards_of(afrr))
    assert sched.validate() == []
    up_kw, down_kw = sched.for_steps(DAY.start.timestamp(), 900.0, 96)
    assert np.all(up_kw == 2000.0) and np.all(down_kw == 1000.0)
    assert sched.at((DAY.start - timedelta(hours=1)).timestamp()) == (0.0, 0.0)
    with pytest.raises(ValueError, match="steps"):
        make_bids(_forecast(up[:, :90], down[:, :90]), DAY, FCR_RULES, created_at=MADE)
