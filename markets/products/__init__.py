"""Balancing products: what a reserve commitment obliges the fleet to do (FCR, aFRR).

Add a product here: its technical numbers (activation times, deadbands, bid sizes).
"""

from markets.products.reserve import AFRR, FCR, Product

__all__ = ["AFRR", "FCR", "Product"]
