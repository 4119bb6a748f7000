"""The flexibility a plan leaves: how far the fleet can move up and down per plan step.

:func:`fleet_flexibility_kw` reads, from a plan's base schedule and the sessions' power
ranges, how far the fleet can go up and down in each step, within every site, feeder and
fleet cap; :func:`max_symmetric_reserve_kw` is the largest symmetric reserve the plan could
hold in every step of a window. This is what an aggregator can bid.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from aggregator.planning.request import Plan, PlanRequest

__all__ = ["fleet_flexibility_kw", "max_symmetric_reserve_kw"]


def fleet_flexibility_kw(
    plan: Plan, req: PlanRequest
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per step, how many kW the fleet can add (up) and shed (down) around the plan.

    Up is limited by each session's maximum power and each site's, feeder's and fleet's
    caps; down by each session's minimum power (V2G below zero) and each site's export cap
    (a site's connection limit holds in both directions). Sessions count only in the steps
    they are plugged in.
    """
    t = req.steps
    n = req.n_sessions
    plugged = np.zeros((n, t), dtype=bool)
    steps = np.arange(t)
    plugged[:] = (steps >= req.first_step[:, None]) & (steps < req.last_step[:, None])
    base = plan.power_kw
    up_s = np.where(plugged, req.max_power_kw[:, None] - base, 0.0)
    down_s = np.where(plugged, base - req.min_power_kw[:, None], 0.0)
    site_base = np.zeros((req.n_sites, t))
    site_up = np.zeros((req.n_sites, t))
    site_down = np.zeros((req.n_sites, t))
    np.add.at(site_base, req.session_site, np.where(plugged, base, 0.0))
    np.add.at(site_up, req.session_site, up_s)
    np.add.at(site_down, req.session_site, down_s)
    site_up = np.minimum(site_up, np.maximum(req.caps.site_kw - site_base, 0.0))
    site_down = np.minimum(site_down, np.maximum(site_base + req.caps.site_export_kw, 0.0))
    feeder_base = np.zeros((req.n_feeders, t))
    feeder_up = np.zeros((req.n_feeders, t))
    np.add.at(feeder_base, req.site_feeder, site_base)
    np.add.at(feeder_up, req.site_feeder, site_up)
    feeder_up = np.minimum(feeder_up, np.maximum(req.caps.feeder_kw - feeder_base, 0.0))
    up = np.minimum(
        feeder_up.sum(axis=0), np.maximum(req.caps.fleet_kw - site_base.sum(axis=0), 0.0)
    )
    return up, site_down.sum(axis=0)


def max_symmetric_reserve_kw(
    plan: Plan, req: PlanRequest, first: int = 0, last: int | None = None
) -> float:
    """The largest symmetric reserve the plan can hold in every step of ``[first, last)``."""
    up, down = fleet_flexibility_kw(plan, req)
    window = slice(first, last)
    both = np.minimum(up[window], down[window])
    return float(both.min()) if both.size else 0.0
