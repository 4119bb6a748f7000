"""Fleet state: every charging session one replica knows, as one structured table.

* :mod:`aggregator.fleet.table` — :data:`SLOT_DTYPE`, the one dtype of the per-slot
  numbers, and the :class:`SessionState` record of the state topic;
* :mod:`aggregator.fleet.state` — :class:`FleetState`: applying telemetry (idempotent,
  order-robust, EVSE ids bound to their CSMS), expiry, snapshot and restore;
* :mod:`aggregator.fleet.outcome` — :class:`ApplyResult`, what applying one message did;
* :mod:`aggregator.fleet.envelopes` — PEBC from the table: the fast loop's power ranges
  and the planner's :class:`~aggregator.pebc.SessionEnvelopes`.
"""

from __future__ import annotations

from aggregator.fleet.outcome import (
    EVSE_OWNED_BY_OTHER_CSMS,
    OVER_REQUEST_TOLERANCE_KWH,
    ApplyOutcome,
    ApplyResult,
)
from aggregator.fleet.state import FleetState
from aggregator.fleet.table import (
    POWER_TOLERANCE_KW,
    POWER_TOLERANCE_REL,
    SLOT_DTYPE,
    SessionState,
    SnapshotRow,
)

__all__ = [
    "EVSE_OWNED_BY_OTHER_CSMS",
    "OVER_REQUEST_TOLERANCE_KWH",
    "POWER_TOLERANCE_KW",
    "POWER_TOLERANCE_REL",
    "SLOT_DTYPE",
    "ApplyOutcome",
    "ApplyResult",
    "FleetState",
    "SessionState",
    "SnapshotRow",
]
