"""Flexibility forecast: one car by hand, caps as properties, scenarios, P90 back-test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.files.history import generate_history
from aggregator.limits import Caps
from aggregator.sim.scenario import SessionSpec
from markets.forecast import (
    Blocks,
    Direction,
    Fleet,
    SessionHistory,
    StepGrid,
    backtest,
    draw_scenarios,
    fleet_flexibility,
    forecast_flexibility,
    site_coupling,
    spread_factor,
)

T0 = datetime(2026, 1, 14, tzinfo=UTC)
BLOCKS = Blocks(np.arange(0, 96, 16), np.arange(16, 97, 16))


def _grid(n_sites: int, site_kw: float, feeder_kw: float, steps: int = 96) -> StepGrid:
    caps = Caps(
        np.full((n_sites, steps), site_kw),
        np.full((1, steps), feeder_kw),
        np.full(steps, np.inf),
        np.full((n_sites, steps), site_kw),
    )
    return StepGrid(T0.timestamp(), 900.0, steps, caps, np.zeros(n_sites, np.intp))


def _one(arr_h: float, dep_h: float, kwh: float, pmax: float) -> Fleet:
    s = T0.timestamp()
    return Fleet(
        np.zeros(1, np.intp),
        np.array([s + 3600 * arr_h]),
        np.array([s + 3600 * dep_h]),
        np.array([kwh]),
        np.array([pmax]),
        np.zeros(1),
    )


def test_one_car_by_hand() -> None:
    # 11 kW, 10 kWh over 4 h from 01:00: flat 2.5 kW; reservoir 15 min
    f = fleet_flexibility(_one(1.0, 5.0, 10.0, 11.0), _grid(1, 100.0, 100.0), 900.0)
    assert f.base_kw[4] == pytest.approx(2.5) and f.base_kw[3] == 0.0
    # step 04:15–04:30 leaves 0.5 h: up ≤ 2.5·0.5/0.25 = 5, down ≤ min(2.5, 8.5·0.5/0.25)
    assert f.up_kw[17] == pytest.approx(5.0) and f.down_kw[17] == pytest.approx(2.5)
    # the last step leaves nothing after it: no up (no energy to give back), no down
    assert f.up_kw[19] == 0.0 and f.down_kw[19] == 0.0
    assert f.up_kw[4] == pytest.approx(8.5)  # early: the power range binds
    # a 30 min reservoir halves what the energy allows
    g = fleet_flexibility(_one(1.0, 5.0, 10.0, 11.0), _grid(1, 100.0, 100.0), 1800.0)
    assert g.up_kw[17] == pytest.approx(2.5)
    # a car arriving mid-step holds no reserve in that step
    h = fleet_flexibility(_one(1.1, 5.0, 10.0, 11.0), _grid(1, 100.0, 100.0), 900.0)
    assert h.up_kw[4] == 0.0 and h.base_kw[4] > 0.0 and h.up_kw[5] > 0.0


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 60),
    st.floats(5.0, 80.0),
    st.floats(20.0, 400.0),
    st.integers(0, 2**31),
)
def test_flexibility_stays_within_every_cap(
    n: int, site_kw: float, feeder_kw: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    s = T0.timestamp()
    arr = s + rng.uniform(-6, 22, n) * 3600
    fleet = Fleet(
        rng.integers(0, 4, n).astype(np.intp),
        arr,
        arr + rng.uniform(0.5, 14, n) * 3600,
        rng.uniform(0, 40, n),
        rng.choice([3.7, 11.0, 22.0], n),
        np.zeros(n),
    )
    grid = _grid(4, site_kw, feeder_kw)
    f = fleet_flexibility(fleet, grid, 900.0)
    assert np.all(f.up_kw >= 0) and np.all(f.down_kw >= 0) and np.all(f.base_kw >= 0)
    assert np.all(f.base_kw <= 4 * site_kw + 1e-6)
    assert np.all(f.down_kw <= f.base_kw + 1e-6)  # no V2G here: shed at most the base
    room = np.maximum(feeder_kw - f.base_kw, 0.0)
    assert np.all(f.up_kw <= room + 1e-6)


def test_scenarios_keep_time_of_day_and_weekday() -> None:
    sites = ["a", "b"]
    specs = [
        SessionSpec(
            "e1",
            "a",
            T0 + timedelta(days=d, hours=8),
            T0 + timedelta(days=d, hours=9 + d),
            5.0,
            11.0,
        )
        for d in range(14)
    ]
    h = SessionHistory.from_specs(specs, sites)
    assert h.validate() == []
    target = T0 + timedelta(days=21)  # same weekday as T0 (+0 and +7 in the history)
    fleets, days = draw_scenarios(h, target, 30, np.random.default_rng(0))
    assert days == 2
    for f in fleets:
        assert f.size == 1 and f.arrival_s[0] == (target + timedelta(hours=8)).timestamp()
        assert f.departure_s[0] - f.arrival_s[0] in (3600.0, 8 * 3600.0)  # days 0 and 7
    bad = SessionHistory.from_specs([SessionSpec("x", "zz", T0, T0, -1.0, 11.0)], sites)
    assert {i.code for i in bad.validate()} == {
        "unknown_site",
        "not_after_arrival",
        "negative_energy",
    }


def test_p90_back_test_on_held_out_days() -> None:
    """20 sites, 400 EVSEs, 20 weeks of synthetic history (the demo's patterns); the last
    4 weeks are held out: each day is forecast (200 scenarios) from the days before it
    only. Sample: 28 days × 6 blocks × 2 directions (up = aFRR NEG, down = aFRR POS) = 336
    block bids; the firm (P90 + 3 points) volume may fall short in at most 10 % of them.
    Measured with generator seeds 0–3: 26, 15, 25, 19 shortfalls of 336 (this test: seed
    2; session 4, sites drawn with the history's co-movement, here ≈ 0); in session 3, a
    plain P90 without the small-sample widening and margin gave 35, 27, 35, 43."""
    sites = [f"s{i:02d}" for i in range(20)]
    first = datetime(2025, 8, 1, tzinfo=UTC)
    h = SessionHistory.from_specs(
        generate_history(sites, evses=400, first_day=first, days=140, seed=2), sites
    )
    held_out = [first + timedelta(days=d) for d in range(112, 140)]
    grid = _grid(20, 60.0, 600.0)
    short = 0
    n = 0
    for direction in (Direction.UP, Direction.DOWN):
        bt = backtest(h, grid, BLOCKS, held_out, direction=direction, reached_with=0.93, seed=2)
        assert np.all(bt.bid_kw > 0)  # the pool does bid
        short += bt.shortfalls
        n += bt.sample_size
    assert n == 336
    assert short / n <= 0.10, f"{short} of {n} blocks fell short"


def test_a_common_factor_in_the_history_is_drawn_with_it() -> None:
    """The same pool, with a day-to-day factor common to every site (log-normal, spread
    0.3: holidays, weather). Drawing sites independently understates the fleet's spread:
    the firm volume fell short in 93 of 336 block bids (28 %). Drawing them with the
    co-movement the history shows (ρ̄ ≈ 0.74 measured, q = √ρ̄ ≈ 0.86) keeps it within
    10 % (27 of 336, 8 %). Without a common factor ρ̄ ≈ 0 and nothing changes."""
    sites = [f"s{i:02d}" for i in range(20)]
    first = datetime(2025, 8, 1, tzinfo=UTC)
    specs = generate_history(
        sites, evses=400, first_day=first, days=140, seed=2, common_factor_sd=0.3
    )
    h = SessionHistory.from_specs(specs, sites)
    assert 0.6 < site_coupling(h) < 0.9
    held_out = [first + timedelta(days=d) for d in range(112, 140)]
    grid = _grid(20, 60.0, 600.0)

    def short_share(common_share: float | None) -> float:
        short = n = 0
        for direction in (Direction.UP, Direction.DOWN):
            bt = backtest(
                h, grid, BLOCKS, held_out, direction=direction, reached_with=0.93, seed=2,
                common_share=common_share,
            )  # fmt: skip
            short, n = short + bt.shortfalls, n + bt.sample_size
        assert n == 336
        return short / n

    assert short_share(0.0) > 0.2  # sites drawn independently
    assert short_share(None) <= 0.10  # drawn with the history's co-movement
    independent = SessionHistory.from_specs(
        generate_history(sites, evses=400, first_day=first, days=140, seed=2), sites
    )
    assert site_coupling(independent) < 0.05


def test_forecast_quantiles_and_spread_factor() -> None:
    sites = ["s0", "s1", "s2"]
    h = SessionHistory.from_specs(
        generate_history(sites, evses=60, first_day=T0 - timedelta(days=70), days=70, seed=1),
        sites,
    )
    fc = forecast_flexibility(h, _grid(3, 50.0, 120.0), BLOCKS, n_scenarios=50, seed=4)
    assert fc.n_scenarios == 50 and fc.past_days == 10
    for d in Direction:
        assert np.all(fc.p90_kw(d) <= fc.p50_kw(d) + 1e-9)
    assert fc.baseline_kw().shape == (96,)
    assert spread_factor(10, 0.1) == pytest.approx(1.193, abs=1e-3)
    assert spread_factor(10, 0.5) == 1.0 and spread_factor(0, 0.1) == 1.0


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 40), st.floats(0.0, 23.75))
def test_drawn_sessions_overlap_the_window_and_keep_their_shape(
    seed: int, n: int, start_h: float
) -> None:
    rng = np.random.default_rng(seed)
    sites = ["a", "b", "c"]
    specs = []
    for i in range(n):
        arr = T0 - timedelta(days=int(rng.integers(1, 30)), hours=float(rng.uniform(0, 24)))
        stay = timedelta(hours=float(rng.uniform(0.2, 30)))
        specs.append(SessionSpec(f"e{i}", sites[i % 3], arr, arr + stay, 5.0, 11.0))
    h = SessionHistory.from_specs(specs, sites)
    start = T0 + timedelta(hours=round(start_h * 4) / 4)
    fleets, _ = draw_scenarios(h, start, 5, rng)
    s, e = start.timestamp(), start.timestamp() + 86_400
    stays = {round(x.departure.timestamp() - x.arrival.timestamp(), 3) for x in specs}
    tods = {round(x.arrival.timestamp() % 86_400, 3) for x in specs}
    for f in fleets:
        assert np.all(f.arrival_s < e) and np.all(f.departure_s > s)
        assert {round(float(x), 3) for x in f.departure_s - f.arrival_s} <= stays
        # moved by whole days only: the time of day is kept
        assert {round(float(x) % 86_400, 3) for x in f.arrival_s} <= tods
