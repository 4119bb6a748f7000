"""From awarded volumes to the reserve the plan must hold: a per-block :class:`ReserveSchedule`.

An :class:`Award` is what the auction accepted: MW in one direction for one block. The
slow loop holds, per block, ``up`` (the fleet may be asked to consume more) and ``down``
(to consume less) headroom: FCR counts in both, aFRR NEG in ``up``, aFRR POS in
``down``; awards of several products in one block add up, and the FCR (symmetric) part
is kept apart (``fcr_kw``) so that the fast loop answers a frequency sample within it and
an aFRR request within the rest.
:func:`awards_of` takes the offers of a bid document as awarded (``rungs`` chooses which:
the firm rung only by default), for simulations and benchmarks.

Invariant: the schedule's blocks are the awarded blocks, sorted and disjoint, with
volumes ≥ 0 in kW.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from aggregator.service.config import ReserveSchedule
from markets.bids.sizing import BidDocument

__all__ = ["Award", "awards_of", "reserve_schedule"]


@dataclass(frozen=True, slots=True)
class Award:
    """``volume_mw`` of ``product`` in ``direction`` (SYM, POS, NEG) over ``[start, end)``."""

    product: str
    start: datetime
    end: datetime
    direction: str
    volume_mw: float


def awards_of(doc: BidDocument, rungs: Sequence[str] = ("firm",)) -> list[Award]:
    """The document's offers of the given rungs, as if all were awarded."""
    return [
        Award(doc.product, o.start, o.end, o.direction, float(o.volume_mw))
        for o in doc.offers
        if o.rung in rungs
    ]


def reserve_schedule(awards: Iterable[Award], base_kw: float = 0.0) -> ReserveSchedule:
    """Up/down headroom per awarded block (kW), summed over products."""
    up: dict[tuple[datetime, datetime], float] = {}
    down: dict[tuple[datetime, datetime], float] = {}
    fcr: dict[tuple[datetime, datetime], float] = {}
    for a in awards:
        if a.direction not in ("SYM", "POS", "NEG"):
            raise ValueError(f"unknown direction {a.direction!r}")
        key = (a.start, a.end)
        kw = 1000.0 * a.volume_mw
        up[key] = up.get(key, 0.0) + (kw if a.direction in ("SYM", "NEG") else 0.0)
        down[key] = down.get(key, 0.0) + (kw if a.direction in ("SYM", "POS") else 0.0)
        fcr[key] = fcr.get(key, 0.0) + (kw if a.direction == "SYM" else 0.0)
    keys = sorted(up)
    return ReserveSchedule(
        np.array([k[0].timestamp() for k in keys], dtype=np.float64),
        np.array([k[1].timestamp() for k in keys], dtype=np.float64),
        np.array([up[k] for k in keys], dtype=np.float64),
        np.array([down[k] for k in keys], dtype=np.float64),
        base_kw=base_kw,
        fcr_kw=np.array([fcr[k] for k in keys], dtype=np.float64),
    )
