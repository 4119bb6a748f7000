"""Activation rules: how a reserve product turns a grid signal into a fleet deviation.

The fast loop (:mod:`aggregator.dispatch`) spreads a fleet deviation (kW, positive = more
import) over the EVSEs; *what* deviation a signal asks for is a market rule and lives here,
with its numbers (one home, CONVENTIONS 23):

* **FCR** — proportional droop on the frequency deviation from :data:`NOMINAL_HZ`: zero inside
  the product's insensitivity (``FCR.deadband_hz``, ±10 mHz), full reserve at and beyond
  ``FCR.full_activation_hz`` (±200 mHz), linear between. Over-frequency asks the fleet to
  consume more (positive deviation).
* **aFRR** — the TSO's setpoint request, clipped to the reserve held (±``reserve_kw``):
  ramp-limited (:class:`~markets.activation.afrr.AfrrRamp`, stateful: one per pool; the
  default of :class:`ReserveActivation`) or at once (:class:`AfrrClip`);
* **droop tables** (:mod:`markets.activation.droop`) — per EVSE Watt–frequency curves for
  products faster than the service loop, exported as JSON for the edge.

Invariants: :func:`fcr_activation` is odd around the nominal frequency, monotone
non-decreasing in the frequency and within [-1, 1]; every deviation returned is within
``[-reserve_kw, reserve_kw]``. :class:`ReserveActivation` implements the core's
:class:`aggregator.dispatch.Activation` protocol; composition roots (CLI, serve, benchmarks)
inject it into the service.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Protocol

from aggregator.messages import AfrrRequest, FrequencySample, FrequencySignal
from markets.activation.afrr import AfrrRamp
from markets.activation.droop import DroopCurve, DroopTable, droop_tables, tables_json
from markets.products import AFRR, FCR, Product

__all__ = [
    "NOMINAL_HZ",
    "AfrrClip",
    "AfrrRamp",
    "AfrrRule",
    "DroopCurve",
    "DroopTable",
    "FcrDroop",
    "ReserveActivation",
    "droop_tables",
    "fcr_activation",
    "tables_json",
]

NOMINAL_HZ: Final = 50.0
"""Nominal frequency of the synchronous area (Continental Europe), Hz."""


def fcr_activation(hz: float, *, product: Product = FCR, nominal_hz: float = NOMINAL_HZ) -> float:
    """FCR activation fraction in [-1, 1]; positive = over-frequency = consume more.

    Zero inside ±``product.deadband_hz``, full (±1) at and beyond
    ±``product.full_activation_hz``, linear between.
    """
    dev = hz - nominal_hz
    span = product.full_activation_hz - product.deadband_hz
    if not span > 0:
        raise ValueError(f"{product.name}: full activation must lie beyond the deadband")
    mag = (abs(dev) - product.deadband_hz) / span
    if not mag > 0.0:  # inside the deadband (or NaN: no activation)
        return 0.0
    return math.copysign(min(mag, 1.0), dev)


@dataclass(frozen=True, slots=True)
class FcrDroop:
    """FCR: deviation = reserve × droop activation of the measured frequency."""

    product: Product = FCR
    nominal_hz: float = NOMINAL_HZ

    def deviation_kw(self, hz: float, reserve_kw: float) -> float:
        return reserve_kw * fcr_activation(hz, product=self.product, nominal_hz=self.nominal_hz)


@dataclass(frozen=True, slots=True)
class AfrrClip:
    """aFRR: the requested setpoint, clipped to the reserve held."""

    product: Product = AFRR

    def deviation_kw(
        self, setpoint_kw: float, reserve_kw: float, at: datetime | None = None
    ) -> float:
        if math.isnan(setpoint_kw):
            return 0.0
        return min(max(setpoint_kw, -reserve_kw), reserve_kw)


class AfrrRule(Protocol):
    """How a pool answers an aFRR setpoint (:class:`AfrrClip`, :class:`AfrrRamp`)."""

    def deviation_kw(
        self, setpoint_kw: float, reserve_kw: float, at: datetime | None = None
    ) -> float: ...


@dataclass(frozen=True, slots=True)
class ReserveActivation:
    """FCR droop for frequency samples, an aFRR rule for setpoint requests (the core's
    :class:`~aggregator.dispatch.Activation`). The aFRR rule is ramp-limited by default
    (:class:`AfrrRamp`, one per instance: an instance belongs to one pool); pass
    ``afrr=AfrrClip()`` for the instant answer."""

    fcr: FcrDroop = field(default_factory=FcrDroop)
    afrr: AfrrRule = field(default_factory=AfrrRamp)

    def deviation_kw(self, signal: FrequencySignal, reserve_kw: float) -> float:
        if isinstance(signal, FrequencySample):
            return self.fcr.deviation_kw(signal.hz, reserve_kw)
        assert isinstance(signal, AfrrRequest)
        return self.afrr.deviation_kw(signal.setpoint_kw, reserve_kw, signal.ts)
