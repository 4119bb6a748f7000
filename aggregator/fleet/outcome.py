"""What applying one telemetry message did: outcome, stable reason code, ids.

:class:`ApplyResult` is the value :meth:`~aggregator.fleet.FleetState.apply` returns for
every message (it never raises on bad input). ``reason`` codes are stable snake_case
names (``unknown_session``, ``power_out_of_range``, ``evse_owned_by_other_csms`` …) that
the stream router uses as dead-letter reasons and counters; :meth:`ApplyResult.issue`
gives the same as an :class:`~aggregator.errors.Issue` with code and ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from aggregator.errors import Issue

__all__ = [
    "EVSE_OWNED_BY_OTHER_CSMS",
    "OVER_REQUEST_TOLERANCE_KWH",
    "ApplyOutcome",
    "ApplyResult",
]

OVER_REQUEST_TOLERANCE_KWH: Final = 0.5
"""Energy above the request (kWh) beyond which a reading is counted as ``over_request``."""
EVSE_OWNED_BY_OTHER_CSMS: Final = "evse_owned_by_other_csms"


class ApplyOutcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What :meth:`FleetState.apply` did; ``reason`` is a stable snake_case code.

    ``ids`` names what the reason is about where that helps the reader (for
    ``evse_owned_by_other_csms``: the EVSE, its owning CSMS, the claiming CSMS).
    """

    outcome: ApplyOutcome
    reason: str | None = None
    ids: tuple[str, ...] = ()

    def issue(self) -> Issue | None:
        """This result as an :class:`Issue` (``None`` unless rejected)."""
        if self.outcome is not ApplyOutcome.REJECTED or self.reason is None:
            return None
        return Issue(field="telemetry", code=self.reason, ids=self.ids, message=self.reason)


APPLIED: Final = ApplyResult(ApplyOutcome.APPLIED)


def reject(reason: str, *ids: str) -> ApplyResult:
    return ApplyResult(ApplyOutcome.REJECTED, reason, ids)


def duplicate(reason: str) -> ApplyResult:
    return ApplyResult(ApplyOutcome.DUPLICATE, reason)
