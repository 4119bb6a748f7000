"""The intake's part in holding a DSO fleet limit across replicas: its default shares, at once.

Replicas own whole feeders, so a fleet limit holds across them only as per-feeder shares
(:mod:`aggregator.service.fleetsplit`; the splitter in :mod:`adapters.stream.fleet` moves
them by demand, decreases first, increases only once Kafka shows every earlier share
applied). The splitter reads a fleet limit only after it is on the topic and splits every
few seconds; a window that opened sooner would see the fleet above the limit meanwhile,
and without a splitter (kafka-python) only the owner of the ``"fleet"`` partition would
apply it. So when the intake publishes a fleet limit on Kafka it also publishes, in the
same call, every feeder's share of it — keyed by the feeder, so each owner applies its
share as fast as any feeder limit — with the event ids and source the splitter uses, which
then takes them as the shares in force.

Rule, so that the intake never raises a share the splitter may have lowered: a feeder's
new share is ``min(its default share of the new cap, its share known now)`` (known: what
this intake published or read back from the topic; none → the default). Every value
published is at most the default share, so once they are all applied Σ ≤ the new cap, and
while they are in flight each feeder is at its old share or lower (a revision upwards
publishes the old shares again, at most: the splitter raises them, acknowledged). Residual
race, stated: a splitter decrease not yet read back by this intake (it follows the topic
within a poll) can be undone by a revision published in that moment.

Cancelling a fleet limit cancels its shares (a loosening). Shares read back from the topic
are kept here, never in the book of limits in force (``GET /v1/limits`` lists what DSOs
sent, not gridflex's internal split).
"""

from __future__ import annotations

import math
from datetime import datetime

from aggregator.limits import Direction, DsoLimit, TargetType
from aggregator.messages import DsoLimitCancel, DsoLimitMessage
from aggregator.service.fleetsplit import (
    SHARE_SOURCE,
    default_shares,
    parse_share_event_id,
    share_event_id,
    window_tag,
)
from aggregator.topology import Topology

__all__ = ["FleetShares"]


class FleetShares:
    """The shares of DSO fleet limits this intake knows, and the records that set them."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.ratings = {f.feeder_id: f.limit_kw for f in topology.feeders}
        self.known: dict[str, dict[str, float]] = {}  # window tag → feeder → kW

    @staticmethod
    def applies(limit: DsoLimit) -> bool:
        return limit.target_type is TargetType.FLEET and limit.direction is Direction.IMPORT

    def on_submit(self, limit: DsoLimit, now: datetime) -> list[tuple[str, DsoLimitMessage]]:
        """``(key, share)`` records for a fleet limit just published (new or revised)."""
        if not self.applies(limit) or not self.ratings:
            return []
        cap = min(limit.limit_kw, self.topology.fleet_limit_kw)
        if not math.isfinite(cap):
            return []
        known = self.known.setdefault(window_tag(limit.event_id), {})
        out = []
        for feeder, share in default_shares(self.ratings, max(cap, 0.0)).items():
            kw = min(share, known.get(feeder, math.inf))
            known[feeder] = kw
            msg = DsoLimitMessage(
                ts=now,
                event_id=share_event_id(limit.event_id, feeder),
                target_type="feeder",
                target_id=feeder,
                start=limit.start,
                end=limit.end,
                limit_kw=kw,
                priority=limit.priority,
                source=SHARE_SOURCE,
            )
            out.append((feeder, msg))
        return out

    def on_cancel(self, limit: DsoLimit, now: datetime) -> list[tuple[str, DsoLimitCancel]]:
        """``(key, cancel)`` records of the shares of a fleet limit just cancelled."""
        if not self.applies(limit):
            return []
        feeders = self.known.pop(window_tag(limit.event_id), {}) or self.ratings
        return [
            (
                f,
                DsoLimitCancel(
                    ts=now, event_id=share_event_id(limit.event_id, f), source=SHARE_SOURCE
                ),
            )
            for f in sorted(feeders)
        ]

    def observe(self, msg: DsoLimitMessage | DsoLimitCancel) -> bool:
        """Take a share read back from the topic; ``False`` when ``msg`` is not a share."""
        parsed = parse_share_event_id(msg.event_id)
        if parsed is None or msg.source != SHARE_SOURCE:
            return False
        window, feeder = parsed
        if isinstance(msg, DsoLimitCancel):
            self.known.get(window, {}).pop(feeder, None)
        else:
            self.known.setdefault(window, {})[feeder] = msg.limit_kw
        return True
