"""The up/down flexibility of a drawn fleet around its planned schedule, per step and block.

:func:`fleet_flexibility` takes one fleet (:class:`~markets.forecast.history.Fleet`) on a
step grid with its caps and answers, per step, the planned fleet power and how many kW the
fleet can add (*up*, consume more) and shed (*down*, consume less) and keep for the
product's energy-reservoir time ``reservoir_s`` (15 or 30 min in the sources).

The planned schedule of a session is *flat*: its energy spread evenly over its stay
(``p = min(p_max, E / stay)``): what the planner does without prices, and the schedule
that leaves the most flexibility in both directions. The flexibility of one session in a
step where it is plugged in for the *whole* step (a car that arrives or leaves inside a
step cannot hold a reserve through it):

* up ≤ ``p_max - p`` and ≤ ``p · remaining_h / reservoir_h``: consuming more for the
  reservoir time must be given back later by charging less before departure;
* down ≤ ``p - p_min`` and ≤ ``(p_max - p) · remaining_h / reservoir_h``: the energy not
  taken must fit before departure (``remaining_h``: plugged time after the step).

Sessions add up per site and step, then the site's connection cap (import: up ≤ cap -
base; export: down ≤ base + export cap), the feeder caps (DSO limits included) and the
fleet cap bound the up flexibility, as in :func:`markets.flexibility.fleet_flexibility_kw`.
A site base above its cap counts as the cap, its cars' powers (and what they can shed)
cut in proportion, as the planner would have to.

Invariants: ``0 ≤ up``, ``0 ≤ down``, ``base + up ≤`` every cap that holds the base; the
result depends only on the fleet and the caps (no randomness).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from aggregator.limits import Caps
from markets.forecast.history import Fleet

__all__ = ["Blocks", "FleetFlex", "StepGrid", "fleet_flexibility"]


@dataclass(frozen=True)
class StepGrid:
    """``steps`` steps of ``step_s`` from ``start_s`` (POSIX s) with the caps per step and
    each site's feeder (``site_feeder``)."""

    start_s: float
    step_s: float
    steps: int
    caps: Caps
    site_feeder: NDArray[np.intp]

    @property
    def n_sites(self) -> int:
        return int(self.site_feeder.shape[0])


@dataclass(frozen=True)
class Blocks:
    """Product blocks on a step grid: block ``b`` is steps ``[first[b], last[b])``."""

    first: NDArray[np.intp]
    last: NDArray[np.intp]

    @property
    def n(self) -> int:
        return int(self.first.shape[0])

    def minimum(self, per_step: NDArray[np.float64]) -> NDArray[np.float64]:
        """The smallest value in each block along the last axis (``(..., T) → (..., B)``)."""
        return np.stack(
            [per_step[..., a:b].min(axis=-1) for a, b in zip(self.first, self.last, strict=True)],
            axis=-1,
        )


@dataclass(frozen=True)
class FleetFlex:
    """Per step: planned fleet power and the up/down flexibility around it (kW)."""

    base_kw: NDArray[np.float64]
    up_kw: NDArray[np.float64]
    down_kw: NDArray[np.float64]


def _cap(a: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.nan_to_num(np.asarray(a, dtype=np.float64), nan=0.0, posinf=np.inf)


def fleet_flexibility(fleet: Fleet, grid: StepGrid, reservoir_s: float) -> FleetFlex:
    """Planned power and up/down flexibility of ``fleet`` per step (see module doc)."""
    if not reservoir_s > 0:
        raise ValueError("reservoir_s must be > 0")
    t, step = grid.steps, grid.step_s
    stay_h = np.maximum(fleet.departure_s - fleet.arrival_s, 1.0) / 3600.0
    p = np.minimum(fleet.max_power_kw, fleet.energy_kwh / stay_h)
    first = np.clip(np.floor((fleet.arrival_s - grid.start_s) / step), 0, t).astype(np.intp)
    last = np.clip(np.ceil((fleet.departure_s - grid.start_s) / step), 0, t).astype(np.intp)
    lengths = np.maximum(last - first, 0)
    sess = np.repeat(np.arange(fleet.size, dtype=np.intp), lengths)
    offs = np.cumsum(lengths) - lengths
    k = np.arange(int(lengths.sum()), dtype=np.intp) - np.repeat(offs, lengths)
    st = first[sess] + k
    lo = grid.start_s + st * step
    hi = lo + step
    arr, dep = fleet.arrival_s[sess], fleet.departure_s[sess]
    plugged = (np.minimum(hi, dep) - np.maximum(lo, arr)) / step
    whole = plugged >= 1.0 - 1e-9
    ps, pmax = p[sess], fleet.max_power_kw[sess]
    rem_h = np.maximum(dep - hi, 0.0) / 3600.0
    res_h = reservoir_s / 3600.0
    up_e = np.where(whole, np.minimum(pmax - ps, ps * rem_h / res_h), 0.0)
    down_e = np.where(
        whole, np.minimum(ps - fleet.min_power_kw[sess], (pmax - ps) * rem_h / res_h), 0.0
    )
    s_n = grid.n_sites
    key = fleet.site[sess] * t + st
    size = s_n * t
    site_base = np.bincount(key, weights=ps * plugged, minlength=size).reshape(s_n, t)
    site_up = np.bincount(key, weights=np.maximum(up_e, 0.0), minlength=size).reshape(s_n, t)
    site_dn = np.bincount(key, weights=np.maximum(down_e, 0.0), minlength=size).reshape(s_n, t)
    caps = grid.caps
    site_cap = _cap(caps.site_kw)
    clipped = np.minimum(site_base, np.maximum(site_cap, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(site_base > clipped, clipped / site_base, 1.0)
    site_base, site_dn = clipped, site_dn * share  # the cars' powers cut in proportion
    site_up = np.minimum(site_up, np.maximum(site_cap - site_base, 0.0))
    site_dn = np.minimum(site_dn, np.maximum(site_base + _cap(caps.site_export_kw), 0.0))
    f_n = int(caps.feeder_kw.shape[0])
    feeder_base = np.zeros((f_n, t))
    feeder_up = np.zeros((f_n, t))
    np.add.at(feeder_base, grid.site_feeder, site_base)
    np.add.at(feeder_up, grid.site_feeder, site_up)
    feeder_cap = _cap(caps.feeder_kw)
    feeder_up = np.minimum(feeder_up, np.maximum(feeder_cap - feeder_base, 0.0))
    base = site_base.sum(axis=0)
    up = np.minimum(feeder_up.sum(axis=0), np.maximum(_cap(caps.fleet_kw) - base, 0.0))
    return FleetFlex(base, up, site_dn.sum(axis=0))
