"""Reserve products (FCR, aFRR) and their technical numbers.

:class:`Product` holds the technical parameters of a reserve product (ENTSO-E Continental
Europe values by default): FCR — full activation at ±200 mHz, 10 mHz insensitivity, full
delivery within 30 s; aFRR — setpoints every 4 s, full activation within 5 min.
The flexibility a plan leaves for them is in :mod:`markets.flexibility`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AFRR", "FCR", "Product"]


@dataclass(frozen=True, slots=True)
class Product:
    """Technical parameters of a balancing product."""

    name: str
    full_activation_s: float
    deadband_hz: float = 0.0
    full_activation_hz: float = 0.0
    setpoint_interval_s: float = 0.0
    min_bid_kw: float = 1000.0


FCR = Product("FCR", full_activation_s=30.0, deadband_hz=0.010, full_activation_hz=0.200)
AFRR = Product("aFRR", full_activation_s=300.0, setpoint_interval_s=4.0)
