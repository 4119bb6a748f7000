"""Fleet caps split into per-feeder shares, and the two-phase change between two splits.

Several replicas each own whole feeders; a fleet-wide cap (the topology's static
``fleet_limit_kw``, or a DSO limit on the fleet) holds across replicas only if it is split:
every feeder gets a **share** (kW) and Σ shares ≤ cap. Shares belong to feeders, not to
replicas, so a partition moving to another replica never invalidates them: the new owner
applies the feeder's share as a cap on that feeder.

* :func:`default_shares` — the split every replica computes alone and identically from the
  full topology: proportional to the feeders' ratings. It is in force until a dynamic
  split replaces it.
* :func:`demand_shares` — the split by demand the fleet splitter publishes: every feeder a
  floor (a fraction of its default share), the rest by demand above the floor (capped at
  the feeder's rating), any remainder by rating.
* :func:`reserve_fraction` — a replica's part of the fleet's awarded reserve: its feeders'
  part of the fleet's rating (by count when a rating is unbounded), so the parts the
  replicas hold sum to the award whatever feeders each owns.
* :func:`transition` — moving from one split to another without ever exceeding the cap:
  first every **decrease**, then, once every decrease is applied by its feeder's owner,
  every **increase**. While the decreases are in flight each feeder is at its old share or
  below it (Σ ≤ Σ old ≤ cap); while the increases are in flight each is at its new share
  or below it (Σ ≤ Σ new ≤ cap).

Invariants: every split returned has Σ ≤ cap (shares rounded down to 1 W) over the
feeders given, for any finite cap (an infinite cap gives infinite shares); no share is
above the cap when the cap is positive. Pure functions, no I/O: the Kafka wiring is
``adapters.stream.fleet``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "SHARE_PREFIX",
    "SHARE_SOURCE",
    "STATIC_WINDOW",
    "Transition",
    "default_shares",
    "demand_shares",
    "parse_share_event_id",
    "reserve_fraction",
    "share_event_id",
    "transition",
    "window_tag",
]

SHARE_SOURCE = "fleet-split"
"""``source`` of the feeder limits that carry a fleet share."""
SHARE_PREFIX = "fleetshare"
STATIC_WINDOW = "static"
"""Window id of the shares of the topology's static fleet limit (all time)."""

_RES_KW = 1e-3  # shares are rounded down to 1 W
_MAX_WINDOW = 40


def window_tag(window_id: str) -> str:
    """How a window appears in share ids: itself, or — past 40 characters (a DSO event id
    may have 128, a share id may not have more) — ``~`` and 32 hex digits of its SHA-256.
    Idempotent: a tag is its own tag."""
    if len(window_id) <= _MAX_WINDOW:
        return window_id
    return "~" + hashlib.sha256(window_id.encode("utf-8")).hexdigest()[:32]


def share_event_id(window_id: str, feeder_id: str) -> str:
    """The event id of ``feeder_id``'s share of the fleet cap ``window_id`` (a DSO fleet
    limit's event id, or :data:`STATIC_WINDOW`): a re-split re-uses it, so the newest share
    replaces the older one in every limit book. The window appears as its
    :func:`window_tag`."""
    return f"{SHARE_PREFIX}:{window_tag(window_id)}:{feeder_id}"


def parse_share_event_id(event_id: str) -> tuple[str, str] | None:
    """``(window tag, feeder_id)`` of a share's event id; ``None`` for any other id."""
    head, sep, rest = event_id.partition(":")
    if head != SHARE_PREFIX or not sep:
        return None
    window, sep, feeder = rest.rpartition(":")
    return (window, feeder) if sep and window and feeder else None


def _down(x: float) -> float:
    return math.floor(x / _RES_KW) * _RES_KW


def _fit(shares: dict[str, float], cap_kw: float) -> dict[str, float]:
    """Round down and, should float sums still overshoot, take the excess off the largest."""
    out = {k: _down(v) for k, v in shares.items()}
    excess = math.fsum(out.values()) - cap_kw
    while excess > 0 and out:
        k = max(out, key=lambda f: out[f])
        out[k] = _down(out[k] - excess - _RES_KW)
        excess = math.fsum(out.values()) - cap_kw
    return out


def default_shares(ratings_kw: Mapping[str, float], cap_kw: float) -> dict[str, float]:
    """Split ``cap_kw`` over the feeders proportionally to their ratings (Σ ≤ cap)."""
    if not ratings_kw:
        return {}
    if math.isinf(cap_kw) and cap_kw > 0:
        return dict.fromkeys(ratings_kw, math.inf)
    total = math.fsum(max(r, 0.0) for r in ratings_kw.values())
    if total <= 0:
        raw = {f: cap_kw / len(ratings_kw) for f in ratings_kw}
    else:
        raw = {f: cap_kw * max(r, 0.0) / total for f, r in ratings_kw.items()}
    return _fit(raw, cap_kw)


def demand_shares(
    cap_kw: float,
    demand_kw: Mapping[str, float],
    ratings_kw: Mapping[str, float],
    *,
    floor_frac: float = 0.2,
) -> dict[str, float]:
    """Split ``cap_kw`` by demand: a floor of ``floor_frac`` × the default share each, then
    demand above the floor (capped at the rating; a feeder without a report asks for its
    default share), any remainder by rating. Σ ≤ cap. A non-positive or infinite cap gives
    the default split."""
    base = default_shares(ratings_kw, cap_kw)
    if not (math.isfinite(cap_kw) and cap_kw > 0) or not ratings_kw:
        return base
    frac = min(max(floor_frac, 0.0), 1.0)
    floor = {f: frac * base[f] for f in ratings_kw}
    room = cap_kw - math.fsum(floor.values())
    want: dict[str, float] = {}
    for f, r in ratings_kw.items():
        d = demand_kw.get(f)
        asked = base[f] if d is None or not math.isfinite(d) else min(max(d, 0.0), max(r, 0.0))
        want[f] = max(asked - floor[f], 0.0)
    asked_total = math.fsum(want.values())
    if asked_total > room:
        give = {f: room * w / asked_total for f, w in want.items()}
    else:
        spare = room - asked_total
        total_r = math.fsum(max(r, 0.0) for r in ratings_kw.values()) or 1.0
        give = {f: want[f] + spare * max(r, 0.0) / total_r for f, r in ratings_kw.items()}
    return _fit({f: floor[f] + give[f] for f in ratings_kw}, cap_kw)


@dataclass(frozen=True, slots=True, kw_only=True)
class Transition:
    """From one split to another: publish ``decreases`` first; ``increases`` only once
    every decrease is applied. A feeder absent from the old split counts as unbounded."""

    decreases: Mapping[str, float]
    increases: Mapping[str, float]

    @property
    def empty(self) -> bool:
        return not self.decreases and not self.increases


def transition(
    old: Mapping[str, float], new: Mapping[str, float], *, tol_kw: float = _RES_KW
) -> Transition:
    """The two phases that take every feeder from ``old`` to ``new`` (changes below
    ``tol_kw`` are skipped: they would only churn the topic)."""
    dec: dict[str, float] = {}
    inc: dict[str, float] = {}
    for f, v in new.items():
        was = old.get(f, math.inf)
        if v < was - tol_kw or (math.isinf(was) and math.isfinite(v)):
            dec[f] = v
        elif v > was + tol_kw:
            inc[f] = v
    return Transition(decreases=dec, increases=inc)


def reserve_fraction(ratings_kw: Mapping[str, float], owned: Iterable[str]) -> float:
    """The part of a fleet-wide reserve the owner of ``owned`` feeders holds: their share
    of the fleet's rating (of the feeder count when any rating is unbounded). Over any
    partition of the feeders among replicas the parts sum to 1."""
    mine = set(owned) & set(ratings_kw)
    if not ratings_kw:
        return 0.0
    values = list(ratings_kw.values())
    if all(math.isfinite(v) and v > 0 for v in values):  # ≤ 1 also after float rounding
        return min(sum(ratings_kw[f] for f in mine) / sum(values), 1.0)
    return len(mine) / len(ratings_kw)
