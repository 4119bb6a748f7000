"""Watt–frequency (droop) tables per EVSE, for products faster than the service loop.

The service answers a frequency sample in well under 100 ms, but CSMS → station → car
takes seconds, too slow for FFR-like products (Nordic FFR 0.7–1.3 s, GB Dynamic
Containment 0.5 s to start; see DESIGN "Where 100 ms applies"). For those the edge acts on
its own frequency measurement: gridflex sends each EVSE a piecewise-linear curve
``frequency → power`` built from the plan (its base power and its share of the reserve),
as OCPP 2.1 frequency-Watt curves and IEC 63110's decentralised frequency measurement
allow. The curve has the shape of the FCR characteristic (:func:`markets.activation.
fcr_activation`): flat at the base power inside ±``deadband_hz``, linear to base − down at
``nominal − full_hz`` and to base + up at ``nominal + full_hz``, flat beyond.

Units stay kW here (the edge adapter converts to W for OCPP). Invariants (tested): every
point lies within the EVSE's envelope ``[lo, hi]``; power is non-decreasing in the
frequency (over-frequency asks for more import); the EVSEs' up (down) shares sum to at
most the reserve; the JSON is versioned (``"v": 1``) with UTC validity times.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aggregator.dispatch import DispatchFrame
from markets.products import FCR, Product

__all__ = ["DroopCurve", "DroopTable", "droop_tables", "droop_tables_from_frame", "tables_json"]

_NOMINAL_HZ = 50.0


@dataclass(frozen=True, slots=True)
class DroopCurve:
    """The characteristic: insensitivity and full activation (Hz off nominal)."""

    product: str
    deadband_hz: float
    full_hz: float
    nominal_hz: float = _NOMINAL_HZ

    @classmethod
    def of(cls, product: Product = FCR, nominal_hz: float = _NOMINAL_HZ) -> DroopCurve:
        return cls(product.name, product.deadband_hz, product.full_activation_hz, nominal_hz)

    def __post_init__(self) -> None:
        if not 0 <= self.deadband_hz < self.full_hz:
            raise ValueError("need 0 ≤ deadband_hz < full_hz")


@dataclass(frozen=True, slots=True)
class DroopTable:
    """One EVSE's curve: ``(hz, power_kw)`` points, increasing in hz."""

    evse_id: str
    points: tuple[tuple[float, float], ...]

    def power_kw(self, hz: float) -> float:
        xs = [p[0] for p in self.points]
        ys = [p[1] for p in self.points]
        return float(np.interp(hz, xs, ys))


def droop_tables(
    evse_ids: Sequence[str],
    base_kw: NDArray[np.float64],
    up_kw: NDArray[np.float64],
    down_kw: NDArray[np.float64],
    curve: DroopCurve,
) -> list[DroopTable]:
    """One table per EVSE from its base power and its up/down share (kW, ≥ 0)."""
    f0, db, full = curve.nominal_hz, curve.deadband_hz, curve.full_hz
    up = np.maximum(np.asarray(up_kw, dtype=np.float64), 0.0)
    down = np.maximum(np.asarray(down_kw, dtype=np.float64), 0.0)
    out: list[DroopTable] = []
    for i, evse in enumerate(evse_ids):
        b = float(base_kw[i])
        pts = (
            (round(f0 - full, 6), b - float(down[i])),
            (round(f0 - db, 6), b),
            (round(f0 + db, 6), b),
            (round(f0 + full, 6), b + float(up[i])),
        )
        out.append(DroopTable(evse, pts))
    return out


def droop_tables_from_frame(
    evse_ids: Sequence[str], frame: DispatchFrame, reserve_kw: float, curve: DroopCurve
) -> list[DroopTable]:
    """Tables for the fast loop's frame: each slot's share of ``reserve_kw``, within its
    envelope (``evse_ids[i]`` is slot ``i``)."""
    base = frame.base_kw
    up = np.minimum(frame.share_up * reserve_kw, np.maximum(frame.hi_kw - base, 0.0))
    down = np.minimum(frame.share_down * reserve_kw, np.maximum(base - frame.lo_kw, 0.0))
    return droop_tables(evse_ids, base, up, down, curve)


def tables_json(
    tables: Sequence[DroopTable], curve: DroopCurve, valid_from: datetime, valid_until: datetime
) -> str:
    """The tables as versioned JSON for the edge (kW; times ISO 8601 UTC)."""
    for t in (valid_from, valid_until):
        if t.tzinfo is None:
            raise ValueError("validity times must be UTC-aware")
    doc: dict[str, Any] = {
        "v": 1,
        "type": "droop_tables",
        "product": curve.product,
        "nominal_hz": curve.nominal_hz,
        "valid_from": valid_from.isoformat(),
        "valid_until": valid_until.isoformat(),
        "unit": "kW",
        "evses": [
            {"evse_id": t.evse_id, "points": [{"hz": h, "power_kw": p} for h, p in t.points]}
            for t in tables
        ],
    }
    return json.dumps(doc, indent=1)
