"""What goes to the slow loop and what comes back: :class:`PlanJob` and :class:`PlanResult`.

Plain values (picklable: they cross a process boundary), with no solver behind them, so
the fast loop's modules can read a plan without importing the planner. A job carries the
request, the fleet slots of its rows (and their sessions' arrival, to tell a new session
on the same slot), the limit-book and fleet versions it was built from, by which the
service decides whether a finished plan may still be used, and the sessions' PEBC
envelopes built from the fleet, against which the engine checks every plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from aggregator.pebc.sessions import SessionEnvelopes
from aggregator.planning.gridloop import GridCheck
from aggregator.planning.request import Plan, PlanRequest

__all__ = ["PlanJob", "PlanResult"]


@dataclass(frozen=True, kw_only=True)
class PlanJob:
    """One planning problem and what it was built from."""

    job_id: int
    made_at: datetime
    request: PlanRequest
    slots: NDArray[np.intp]  # fleet slot of each request row
    arrival_s: NDArray[np.float64]  # arrival of each row's session (detects a new session)
    limits_version: int
    fleet_version: int
    # the sessions' PEBC envelopes and energy constraints, built from the fleet (not from
    # the request): every plan is checked against them before it is used
    envelopes: SessionEnvelopes | None = None
    # each row's minimum charging power (kW; 0 = continuous): the plan is made
    # semi-continuous after the LP (every charging value 0 or at least this)
    min_charge_kw: NDArray[np.float64] | None = None


@dataclass(frozen=True, kw_only=True)
class PlanResult:
    """A solved (or failed) job. ``verified_site_kw`` (sites × steps) is the site power the
    AC check passed, when a grid model was used and the check passed; else ``None``."""

    job: PlanJob
    plan: Plan | None
    error: str | None = None
    grid_used: bool = False
    grid_check: GridCheck | None = None
    grid_note: str | None = None
    grid_iterations: int = 0
    grid_repair: object | None = None  # what the grid loop's repair did (its own type)
    verified_site_kw: NDArray[np.float64] | None = None
    pebc_rejected: str | None = None  # why the solver's plan failed the PEBC check, if it did
