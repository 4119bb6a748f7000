"""Power envelope based control (PEBC): the types gridflex plans and dispatches with.

* :mod:`aggregator.pebc.types` — one session's power ranges, constraints, envelope,
  energy constraint and energy transfer plan, with their checks (IEC 63110 / IEC 63402).
* :mod:`aggregator.pebc.sessions` — many sessions' envelopes on one time grid as arrays
  (built by the fleet) and :func:`check_plan_against_pebc`, which every plan passes
  before it is used.

Checks return ``list[Issue]`` (codes and ids), never raise for bad data.
"""

from __future__ import annotations

from aggregator.pebc.sessions import (
    PlanLike,
    RequestLike,
    SessionEnvelopes,
    check_plan_against_pebc,
)
from aggregator.pebc.types import (
    EnergyConstraint,
    EnergyTransferPlan,
    PowerConstraints,
    PowerEnvelope,
    PowerRange,
    check_energy_feasible,
    check_plan,
    is_utc,
)

__all__ = [
    "EnergyConstraint",
    "EnergyTransferPlan",
    "PlanLike",
    "PowerConstraints",
    "PowerEnvelope",
    "PowerRange",
    "RequestLike",
    "SessionEnvelopes",
    "check_energy_feasible",
    "check_plan",
    "check_plan_against_pebc",
    "is_utc",
]
