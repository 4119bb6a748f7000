"""PEBC from the fleet table: power ranges for the fast loop, envelopes for the planner.

Two views of the same rows of :data:`~aggregator.fleet.table.SLOT_DTYPE`, both
vectorised over sessions (no Python loop per session):

* :func:`power_range` — each slot's allowed power for the next ``dt_s`` seconds, what the
  fast loop clips to;
* :func:`session_envelopes` — each session's :class:`~aggregator.pebc.SessionEnvelopes`
  row on a plan's time grid: power bounds per step while plugged in (0 outside) and the
  energy constraint by departure, which :func:`~aggregator.pebc.check_plan_against_pebc`
  holds a plan to before it is used.

Invariants: ``lower ≤ 0 ≤ upper`` everywhere; an inactive or departed session has all
bounds 0; ``energy_min_kwh ≤ 0 ≤ energy_max_kwh`` (a session may always stop charging;
it never gets more than it still asked for, nor discharges more than it has charged).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from aggregator.fleet.table import to_seconds
from aggregator.pebc import SessionEnvelopes

__all__ = ["power_range", "session_envelopes"]


def power_range(
    rows: NDArray[np.void], now: datetime, dt_s: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-row power range ``(lo, hi)`` (kW) for the next ``dt_s`` seconds.

    ``hi`` never delivers more than the remaining requested energy within ``dt_s``;
    ``lo`` never discharges more than the session has charged. Inactive or departed
    sessions get ``lo = hi = 0``. Always ``lo <= 0 <= hi``.
    """
    if not dt_s > 0:
        raise ValueError("dt_s must be > 0")
    dt_h = dt_s / 3600.0
    energy = rows["energy_kwh"]
    remaining = rows["energy_requested_kwh"] - energy
    hi = np.clip(np.minimum(rows["max_power_kw"], remaining / dt_h), 0.0, None)
    lo = np.minimum(np.maximum(rows["min_power_kw"], -np.maximum(energy, 0.0) / dt_h), 0.0)
    live = rows["active"] & (rows["departure_s"] > to_seconds(now))
    hi[~live] = 0.0
    lo[~live] = 0.0
    return lo, hi


def session_envelopes(
    rows: NDArray[np.void],
    evse_ids: Sequence[str],
    *,
    start: datetime,
    step_s: float,
    steps: int,
    now: datetime,
) -> SessionEnvelopes:
    """The PEBC envelope and energy constraint of each row on ``steps`` steps from ``start``.

    A session is plugged in step ``t`` when the step overlaps ``[now, departure)``; there
    its bounds are ``[min(min_power_kw, 0), max_power_kw]`` (kW, the average over the
    plugged part of the step), elsewhere ``[0, 0]``. Its cumulative energy from ``start``
    stays within ``[-max(energy_kwh, 0), max(requested − energy_kwh, 0)]`` (kWh).
    """
    if not step_s > 0 or steps < 1:
        raise ValueError("need step_s > 0 and steps >= 1")
    if len(evse_ids) != rows.shape[0]:
        raise ValueError("one EVSE id per row is required")
    now_s = to_seconds(now)
    edges = to_seconds(start) + step_s * np.arange(steps + 1, dtype=np.float64)
    departure = rows["departure_s"]
    live = rows["active"] & (departure > now_s)
    plugged = live[:, None] & (edges[None, :-1] < departure[:, None]) & (edges[None, 1:] > now_s)
    energy = rows["energy_kwh"]
    return SessionEnvelopes(
        start=start,
        step_s=float(step_s),
        evse_ids=tuple(evse_ids),
        lower_kw=np.where(plugged, np.minimum(rows["min_power_kw"], 0.0)[:, None], 0.0),
        upper_kw=np.where(plugged, rows["max_power_kw"][:, None], 0.0),
        energy_min_kwh=np.where(live, -np.maximum(energy, 0.0), 0.0),
        energy_max_kwh=np.where(live, np.maximum(rows["energy_requested_kwh"] - energy, 0.0), 0.0),
        departure_s=departure.copy(),
    )
