"""The slow loop's question: the :class:`~aggregator.planning.request.PlanRequest` for now.

:func:`plan_request` reads the fleet (sessions active and not yet departed at ``now``), the
limit book (per-step caps, conservative for limits starting mid-step), the configured
reserve and prices, and returns the request with the fleet slot of every row. Plugged-in
fractions of the first and last steps come from :func:`session_windows` (one place for
session windows, shared with the oracle). Pure: it reads, never mutates.
"""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from aggregator.fleet import FleetState
from aggregator.limits import LimitBook
from aggregator.planning.request import PlanRequest, session_windows
from aggregator.service.config import PriceSeries, ServiceConfig

__all__ = ["plan_request"]


def plan_request(
    now: datetime,
    *,
    fleet: FleetState,
    limits: LimitBook,
    config: ServiceConfig,
    prices: PriceSeries | None,
) -> tuple[PlanRequest, NDArray[np.intp]]:
    """The planning problem for the sessions active at ``now``, and their slots."""
    c = config
    f = fleet
    step = c.plan_step_s
    now_s = now.timestamp()
    start_s = math.floor(now_s / step) * step
    start = datetime.fromtimestamp(start_s, tz=now.tzinfo)
    steps = max(1, round(c.horizon_s / step))
    slots = f.active_slots()
    slots = slots[f.departure_s[slots] > now_s]
    first, last, first_frac, last_frac = session_windows(
        start_s, step, steps, np.full(slots.size, now_s), f.departure_s[slots]
    )
    energy = f.energy_kwh[slots]
    reserve_up, reserve_down = c.reserve.for_steps(start_s, step, steps)
    price = None
    if prices is not None:
        price = prices.at((start_s + step * np.arange(steps)).astype(np.float64))
    req = PlanRequest(
        start=start,
        step_s=step,
        steps=steps,
        session_site=f.site[slots].copy(),
        first_step=first,
        last_step=last,
        first_frac=first_frac,
        last_frac=last_frac,
        max_power_kw=f.max_power_kw[slots].copy(),
        min_power_kw=np.minimum(f.min_power_kw[slots], 0.0),
        energy_needed_kwh=np.maximum(f.energy_requested_kwh[slots] - energy, 0.0),
        discharge_budget_kwh=np.maximum(energy, 0.0),
        site_feeder=f.topology.site_feeder,
        caps=limits.caps_for_steps(start, step, steps),
        reserve_kw=np.minimum(reserve_up, reserve_down),
        reserve_up_kw=reserve_up,
        reserve_down_kw=reserve_down,
        price_eur_per_mwh=price,
        weights=c.weights,
        reservoir_s=c.reservoir_s,
    )
    return req, slots
