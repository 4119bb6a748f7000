"""Flexibility forecast with uncertainty: scenarios → per-block distribution → P50/P90.

:func:`forecast_flexibility` draws ``n_scenarios`` fleets for a delivery window from the
session history (:func:`~markets.forecast.history.draw_scenarios`), computes each one's
planned power and up/down flexibility per step (:func:`~markets.forecast.flex.
fleet_flexibility`) and keeps them all in a :class:`FlexForecast`. A block's flexibility in
one scenario is its *minimum* over the block's steps (a reserve is held through the whole
block); the distribution over scenarios gives the quantiles. ``P90`` is the volume the
fleet reaches with 90 % probability: the 10 % quantile over scenarios (order statistic,
rounded down, never interpolated upwards); ``P50`` the median.

Small-sample correction: the scenarios resample ``n`` past days, so their spread is that
of ``n`` observations around *their* mean, while a new day deviates from that mean by the
spread plus the mean's own error, and the spread itself is estimated. Block values are
therefore widened around the scenario mean by the normal prediction-interval factor
``t(n-1, q) / z(q) · sqrt((n + 1) / (n - 1))`` for a quantile ``q`` (1.39 at P90 for 6
past days, 1.11 for 16; 1 for the median) before the quantiles are read.
:func:`spread_factor` computes it; ``FlexForecast.past_days = 0`` turns it off.

:func:`backtest` checks the P90 on held-out days: for each day it forecasts from the
sessions that arrived *before* that day only, and compares each block's P90 with the
flexibility the day's real sessions had (same flexibility model). The share of
(day, block) pairs where the realised flexibility fell below the P90 should be ≤ 10 %.

Directions: *up* = the fleet consumes more (FCR and aFRR NEG, the grid has too much
power), *down* = consumes less (FCR and aFRR POS); *symmetric* = min(up, down) per step.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from markets.forecast.flex import Blocks, StepGrid, fleet_flexibility
from markets.forecast.history import SessionHistory, draw_scenarios, site_coupling

__all__ = [
    "Backtest",
    "Direction",
    "FlexForecast",
    "backtest",
    "forecast_flexibility",
    "lower_quantile",
    "spread_factor",
]


class Direction(StrEnum):
    UP = "up"  # consume more
    DOWN = "down"  # consume less
    SYMMETRIC = "symmetric"


def spread_factor(past_days: int, q: float) -> float:
    """Widening of the scenario spread for quantile ``q`` from ``past_days`` past days
    (see module doc); 1 for the median and below 3 past days (no spread to widen)."""
    if past_days < 3 or q == 0.5:
        return 1.0
    n = past_days
    ratio = float(stats.t.ppf(q, n - 1) / stats.norm.ppf(q))
    return ratio * float(np.sqrt((n + 1) / (n - 1)))


def lower_quantile(samples: NDArray[np.float64], q: float) -> NDArray[np.float64]:
    """The ``q`` quantile over axis 0, as the order statistic at or below it (no
    interpolation upwards: a chance constraint must not be met by interpolation)."""
    return np.asarray(np.quantile(samples, q, axis=0, method="lower"), dtype=np.float64)


@dataclass(frozen=True)
class FlexForecast:
    """Scenarios × steps of planned power and flexibility (kW) on a grid with blocks."""

    start: datetime
    step_s: float
    blocks: Blocks
    reservoir_s: float
    base_kw: NDArray[np.float64]  # (scenarios, steps)
    up_kw: NDArray[np.float64]
    down_kw: NDArray[np.float64]
    past_days: int = 0  # distinct past days drawn from; 0 = no small-sample correction

    @property
    def n_scenarios(self) -> int:
        return int(self.base_kw.shape[0])

    @property
    def steps(self) -> int:
        return int(self.base_kw.shape[1])

    def per_step(self, direction: Direction) -> NDArray[np.float64]:
        if direction is Direction.UP:
            return self.up_kw
        if direction is Direction.DOWN:
            return self.down_kw
        return np.minimum(self.up_kw, self.down_kw)

    def block_kw(self, direction: Direction) -> NDArray[np.float64]:
        """(scenarios, blocks): each scenario's minimum flexibility over each block."""
        return self.blocks.minimum(self.per_step(direction))

    def widened_block_kw(self, direction: Direction, reached_with: float) -> NDArray[np.float64]:
        """(scenarios, blocks): :meth:`block_kw` with its spread around the mean widened by
        the small-sample factor for the tail ``1 − reached_with``."""
        raw = self.block_kw(direction)
        mean = raw.mean(axis=0)
        wide = mean + spread_factor(self.past_days, 1.0 - reached_with) * (raw - mean)
        return np.asarray(wide, dtype=np.float64)

    def quantile_kw(self, direction: Direction, reached_with: float) -> NDArray[np.float64]:
        """Per block, the volume reached with probability ``reached_with`` (0.9 → P90),
        after the small-sample widening (never below 0)."""
        wide = self.widened_block_kw(direction, reached_with)
        return np.maximum(lower_quantile(wide, 1.0 - reached_with), 0.0)

    def p50_kw(self, direction: Direction) -> NDArray[np.float64]:
        return self.quantile_kw(direction, 0.5)

    def p90_kw(self, direction: Direction) -> NDArray[np.float64]:
        return self.quantile_kw(direction, 0.9)

    def baseline_kw(self) -> NDArray[np.float64]:
        """The planned fleet power per step: the median over scenarios."""
        return np.asarray(np.median(self.base_kw, axis=0), dtype=np.float64)

    def less(self, up_kw: NDArray[np.float64], down_kw: NDArray[np.float64]) -> FlexForecast:
        """The same forecast with per-block volumes already committed taken off."""
        up_t = np.zeros(self.steps)
        down_t = np.zeros(self.steps)
        for b, (a, z) in enumerate(zip(self.blocks.first, self.blocks.last, strict=True)):
            up_t[a:z], down_t[a:z] = up_kw[b], down_kw[b]
        return dataclasses.replace(
            self,
            up_kw=np.maximum(self.up_kw - up_t, 0.0),
            down_kw=np.maximum(self.down_kw - down_t, 0.0),
        )


def forecast_flexibility(
    history: SessionHistory,
    grid: StepGrid,
    blocks: Blocks,
    *,
    n_scenarios: int = 200,
    reservoir_s: float = 900.0,
    seed: int = 0,
    common_share: float | None = None,
) -> FlexForecast:
    """Draw ``n_scenarios`` fleets for ``grid``'s window and their flexibility per step.

    ``common_share`` (see :func:`~markets.forecast.history.draw_scenarios`): ``None``
    matches the history's own co-movement of sites, √ :func:`site_coupling`."""
    if n_scenarios < 1:
        raise ValueError("n_scenarios must be ≥ 1")
    start = datetime.fromtimestamp(grid.start_s, tz=UTC)
    q = math.sqrt(site_coupling(history)) if common_share is None else common_share
    fleets, past_days = draw_scenarios(
        history,
        start,
        n_scenarios,
        np.random.default_rng(seed),
        length_s=grid.steps * grid.step_s,
        common_share=q,
    )
    base = np.zeros((n_scenarios, grid.steps))
    up = np.zeros_like(base)
    down = np.zeros_like(base)
    for i, fleet in enumerate(fleets):
        flex = fleet_flexibility(fleet, grid, reservoir_s)
        base[i], up[i], down[i] = flex.base_kw, flex.up_kw, flex.down_kw
    return FlexForecast(start, grid.step_s, blocks, reservoir_s, base, up, down, past_days)


@dataclass(frozen=True)
class Backtest:
    """Per held-out day and block: the P90 bid and the realised flexibility (kW)."""

    days: tuple[datetime, ...]
    direction: Direction
    bid_kw: NDArray[np.float64]  # (days, blocks)
    realised_kw: NDArray[np.float64]

    @property
    def sample_size(self) -> int:
        return int(self.bid_kw.size)

    @property
    def shortfalls(self) -> int:
        return int(np.count_nonzero(self.realised_kw < self.bid_kw - 1e-9))

    @property
    def shortfall_share(self) -> float:
        return self.shortfalls / self.sample_size if self.sample_size else 0.0


def backtest(
    history: SessionHistory,
    grid: StepGrid,
    blocks: Blocks,
    days: list[datetime],
    *,
    direction: Direction = Direction.SYMMETRIC,
    reached_with: float = 0.9,
    n_scenarios: int = 200,
    reservoir_s: float = 900.0,
    seed: int = 0,
    common_share: float | None = None,
) -> Backtest:
    """Forecast each held-out day from the sessions before it; compare with the day."""
    bids = np.zeros((len(days), blocks.n))
    real = np.zeros_like(bids)
    for i, day in enumerate(days):
        g = dataclasses.replace(grid, start_s=day.timestamp())
        fc = forecast_flexibility(
            history.before(day),
            g,
            blocks,
            n_scenarios=n_scenarios,
            reservoir_s=reservoir_s,
            seed=seed + i,
            common_share=common_share,
        )
        bids[i] = fc.quantile_kw(direction, reached_with)
        seen = fleet_flexibility(history.on_day(day, g.steps * g.step_s), g, reservoir_s)
        per_step = {
            Direction.UP: seen.up_kw,
            Direction.DOWN: seen.down_kw,
            Direction.SYMMETRIC: np.minimum(seen.up_kw, seen.down_kw),
        }[direction]
        real[i] = blocks.minimum(per_step)
    return Backtest(tuple(days), direction, bids, real)
