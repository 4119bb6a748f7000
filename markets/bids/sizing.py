"""Capacity bids sized by a chance constraint: FCR and aFRR per 4 h block, whole MW.

Rules (regelleistung.net, :data:`FCR_RULES`, :data:`AFRR_RULES`): FCR is symmetric, six
4 h blocks, whole MW, minimum 1 MW, gate 08:00 D-1, pay-as-cleared (the price is a limit
price); aFRR capacity is offered per block for POS and NEG separately, whole MW, minimum
1 MW, gate 09:00 D-1, pay-as-bid, and each awarded MW must be backed by energy bids for
every quarter-hour of the block (:class:`EnergyBid`).

Sizing (:func:`make_bids`): the firm rung of a block is its chance-constrained volume:
the volume the fleet reaches in the block's every step with probability ``reached_with``
(:meth:`~markets.forecast.FlexForecast.quantile_kw`, with the product's energy reservoir
held: the forecast's ``reservoir_s``), rounded *down* to whole MW. The default
``reached_with`` is 0.93, a 3-point margin over P90, because a calibrated P90 back-tests
at 10 % ± 3 points over four weeks (tests/markets/test_forecast.py) and the done-when
asks for ≤ 10 %. ``method="cvar"`` sizes the firm rung by the CVaR LP instead
(:mod:`markets.bids.cvar`: the mean of the worst ``1 − reached_with`` of the scenarios,
never above the quantile volume when that tail is a whole number of scenarios). On top,
a dearer increment up to the P50 volume (whole MW). A block
whose firm volume is under the minimum bid gets no offer and a reason; a pool with no
offer at all says so in ``reasons``.

Directions: *up* = the fleet consumes more. FCR needs both (symmetric: min of up and
down). aFRR POS (the TSO needs more power in the grid) = the fleet consumes *less* =
down; aFRR NEG = up.

Invariants of every offer: ``volume_mw`` is a whole number ≥ the minimum; an FCR offer is
``SYM``; the firm rung of a block ≤ its P90 volume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, time

import numpy as np
from numpy.typing import NDArray

from markets.baseline import Baseline
from markets.bids.calendar import DeliveryDay
from markets.bids.cvar import cvar_volume_kw
from markets.forecast.forecast import Direction, FlexForecast

__all__ = [
    "AFRR_RULES",
    "FCR_RULES",
    "SIZING_METHODS",
    "BidDocument",
    "BidPrices",
    "BidRules",
    "EnergyBid",
    "Offer",
    "make_bids",
]

SIZING_METHODS = ("quantile", "cvar")
"""How a firm volume is sized: the chance constraint's quantile, or the CVaR LP."""


@dataclass(frozen=True, slots=True)
class BidRules:
    """What one auction accepts."""

    product: str
    gate_local: time
    pricing: str  # "pay-as-cleared" or "pay-as-bid"
    symmetric: bool
    min_bid_mw: int = 1
    energy_bids: bool = False


FCR_RULES = BidRules("FCR", time(8, 0), "pay-as-cleared", symmetric=True)
AFRR_RULES = BidRules("aFRR", time(9, 0), "pay-as-bid", symmetric=False, energy_bids=True)


@dataclass(frozen=True, slots=True)
class BidPrices:
    """Capacity prices of the two rungs (EUR per MW and block) and the energy price."""

    firm_eur_per_mw: float = 8.0
    increment_eur_per_mw: float = 20.0
    energy_eur_per_mwh: float = 150.0


@dataclass(frozen=True, slots=True)
class Offer:
    """One capacity offer: ``volume_mw`` in ``direction`` for block ``block``."""

    block: int
    start: datetime
    end: datetime
    direction: str  # "SYM", "POS", "NEG"
    volume_mw: int
    price_eur_per_mw: float
    rung: str  # "firm" (chance-constrained) or "increment" (up to P50)


@dataclass(frozen=True, slots=True)
class EnergyBid:
    """aFRR energy bid for one quarter-hour, backing the capacity offered there."""

    start: datetime
    direction: str
    volume_mw: int
    price_eur_per_mwh: float


@dataclass(frozen=True)
class BidDocument:
    """The bids of one product and delivery day, with what they rest on."""

    product: str
    day: DeliveryDay
    gate: datetime
    pricing: str
    created_at: datetime
    reached_with: float
    reservoir_s: float
    n_scenarios: int
    firm_kw: dict[str, NDArray[np.float64]]  # per direction, per block
    p50_kw: dict[str, NDArray[np.float64]]
    offers: tuple[Offer, ...]
    energy_bids: tuple[EnergyBid, ...]
    baseline: Baseline
    reasons: tuple[str, ...] = field(default=())
    method: str = "quantile"  # how the firm volume was sized: "quantile" or "cvar"

    @property
    def late(self) -> bool:
        """Made after the gate closed (the auction would reject it)."""
        return self.created_at >= self.gate

    def volume_mw(self, direction: str, block: int) -> int:
        return sum(
            o.volume_mw for o in self.offers if o.direction == direction and o.block == block
        )


_DIRECTIONS = {
    "SYM": Direction.SYMMETRIC,
    "POS": Direction.DOWN,  # TSO needs power: the fleet consumes less
    "NEG": Direction.UP,
}


def make_bids(
    forecast: FlexForecast,
    day: DeliveryDay,
    rules: BidRules,
    *,
    created_at: datetime,
    pool_id: str = "pool",
    prices: BidPrices | None = None,
    reached_with: float = 0.93,
    method: str = "quantile",
) -> BidDocument:
    """The bid document of ``rules.product`` for ``day`` from ``forecast`` (module doc);
    ``method``: ``"quantile"`` (the chance constraint) or ``"cvar"`` (its convex stand-in,
    :mod:`markets.bids.cvar`)."""
    if forecast.steps != day.steps:
        raise ValueError(f"forecast has {forecast.steps} steps, the day {day.steps}")
    if method not in SIZING_METHODS:
        raise ValueError(f"method must be one of {SIZING_METHODS}")
    prices = prices or BidPrices()
    directions = ("SYM",) if rules.symmetric else ("POS", "NEG")
    offers: list[Offer] = []
    reasons: list[str] = []
    firm: dict[str, NDArray[np.float64]] = {}
    p50: dict[str, NDArray[np.float64]] = {}
    for name in directions:
        d = _DIRECTIONS[name]
        if method == "cvar":
            tail = forecast.widened_block_kw(d, reached_with)
            firm[name] = cvar_volume_kw(tail, 1.0 - reached_with)
        else:
            firm[name] = forecast.quantile_kw(d, reached_with)
        p50[name] = np.maximum(forecast.p50_kw(d), firm[name])
        for b in range(day.blocks.n):
            firm_mw = math.floor(firm[name][b] / 1000.0 + 1e-9)
            if firm_mw < rules.min_bid_mw:
                reasons.append(
                    f"block {b} {name}: {firm[name][b] / 1000:.2f} MW reached with "
                    f"{reached_with:.0%} < minimum {rules.min_bid_mw} MW, no bid"
                )
                continue
            s, e = day.block_starts[b], day.block_ends[b]
            offers.append(Offer(b, s, e, name, firm_mw, prices.firm_eur_per_mw, "firm"))
            more = math.floor(p50[name][b] / 1000.0 + 1e-9) - firm_mw
            if more >= 1:
                offers.append(Offer(b, s, e, name, more, prices.increment_eur_per_mw, "increment"))
    if not offers:
        reasons.append(
            f"pool {pool_id}: no block reaches {rules.min_bid_mw} MW with {reached_with:.0%}"
            f" (largest {max(float(v.max(initial=0.0)) for v in firm.values()) / 1000:.2f} MW)"
            " — no bid"
        )
    energy: list[EnergyBid] = []
    if rules.energy_bids:
        block_of = np.searchsorted(day.blocks.last, np.arange(day.steps), side="right")
        for q in range(day.steps):
            for name in directions:
                mw = sum(
                    o.volume_mw for o in offers if o.block == block_of[q] and o.direction == name
                )
                if mw:
                    energy.append(EnergyBid(day.quarter(q), name, mw, prices.energy_eur_per_mwh))
    baseline = Baseline(
        pool_id, 1, created_at, day.start, forecast.step_s, forecast.baseline_kw(), "forecast-p50"
    )
    return BidDocument(
        product=rules.product,
        day=day,
        gate=day.gate(rules.gate_local),
        pricing=rules.pricing,
        created_at=created_at,
        reached_with=reached_with,
        reservoir_s=forecast.reservoir_s,
        n_scenarios=forecast.n_scenarios,
        firm_kw=firm,
        p50_kw=p50,
        offers=tuple(offers),
        energy_bids=tuple(energy),
        baseline=baseline,
        reasons=tuple(reasons),
        method=method,
    )
