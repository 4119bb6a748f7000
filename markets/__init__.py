"""gridflex's market package: balancing products and the fleet's flexibility.

Products (FCR, aFRR) describe what a reserve commitment obliges the fleet to do; the
flexibility functions turn a plan into how far the fleet can move up and down per step,
which is what an aggregator bids. The package imports ``aggregator`` types only.
"""

from markets.flexibility import fleet_flexibility_kw, max_symmetric_reserve_kw
from markets.products import AFRR, FCR, Product

__all__ = ["AFRR", "FCR", "Product", "fleet_flexibility_kw", "max_symmetric_reserve_kw"]
