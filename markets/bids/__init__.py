"""Reserve bids: delivery days and gates, chance-constrained sizing, awards → reserve.

:mod:`~markets.bids.calendar` (blocks and gates in UTC), :mod:`~markets.bids.sizing`
(FCR and aFRR bid documents from a flexibility forecast), :mod:`~markets.bids.award`
(awarded volumes → the per-block reserve the plan holds), :mod:`~markets.bids.reservoir`
(whether a plan can sustain its reserve for the energy-reservoir time).
"""

from markets.bids.award import Award, awards_of, reserve_schedule
from markets.bids.calendar import MARKET_TZ, QUARTER_S, DeliveryDay, delivery_day
from markets.bids.reservoir import ReservoirCheck, reservoir_check
from markets.bids.sizing import (
    AFRR_RULES,
    FCR_RULES,
    BidDocument,
    BidPrices,
    BidRules,
    EnergyBid,
    Offer,
    make_bids,
)

__all__ = [
    "AFRR_RULES",
    "FCR_RULES",
    "MARKET_TZ",
    "QUARTER_S",
    "Award",
    "BidDocument",
    "BidPrices",
    "BidRules",
    "DeliveryDay",
    "EnergyBid",
    "Offer",
    "ReservoirCheck",
    "awards_of",
    "delivery_day",
    "make_bids",
    "reserve_schedule",
    "reservoir_check",
]
