"""A continuous plan made semi-continuous: 0 or at least each car's minimum, limit-safe.

The LP (:mod:`aggregator.planning.lp`) treats every session as continuously controllable
from 0 to its maximum; an AC car follows 0 or at least its minimum current (6 A per phase
by default, ``min_charge_kw`` per session). :func:`round_plan` rounds a plan step by step
(a Python loop over the ``T`` steps only; every step is numpy over all sessions):

* charging values in ``(0, min)`` are rounded down to 0 (never breaks a cap);
* paused cars are then rounded up to their minimum in priority order — the car furthest
  behind its planned cumulative energy first (fair rotation: a car paused now is ahead in
  the queue next step, and among equals the one leaving first) — while its site (kW and
  each phase), feeder and the fleet keep room; cars above their minimum give up some of
  it when that makes room (no per-site budget here: the energy each car still needs
  bounds the round-ups). This is time-sharing: six cars planned at 2 kW on a 12.5 kW
  site with a 4.14 kW minimum become three cars at 4.14 kW, rotated step by step;
* a car whose remaining energy is less than a step at its minimum gets exactly that
  remaining energy (it charges at its minimum and stops when full, so the step's average
  lies below the minimum): the only values in ``(0, min)`` of a rounded plan.

Room = the caps of the request minus the up-reserve the plan keeps per site (site,
feeder, fleet), and with linear grid constraints in the request, never more than the
continuous plan's own site power in that step (the AC-checked operating point).
A rounded value never exceeds the session's maximum nor its remaining energy, so the
plan stays inside the PEBC envelopes. V2G sessions (bidirectional) are left as planned.

:class:`RoundingStats` reports the energy the rounding lost against the continuous plan
and the share of values a car can follow.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from aggregator.followable import Caps3, round_semi_continuous
from aggregator.planning.request import Plan, PlanRequest

__all__ = ["RoundingStats", "round_plan"]

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class RoundingStats:
    """What :func:`round_plan` did: energy before and after (kWh), values that are 0 or
    at least the minimum (share of charging values), values rounded up, time taken (s)."""

    energy_continuous_kwh: float
    energy_rounded_kwh: float
    followable_share: float
    rounded_up: int
    rounded_down: int
    elapsed_s: float

    @property
    def energy_lost_kwh(self) -> float:
        return self.energy_continuous_kwh - self.energy_rounded_kwh


def round_plan(
    req: PlanRequest,
    plan: Plan,
    min_charge_kw: NDArray[np.float64],
    *,
    phase_w: NDArray[np.float64] | None = None,
    site_phase_cap_kw: NDArray[np.float64] | None = None,
    budget: bool = False,
) -> tuple[Plan, RoundingStats]:
    """The semi-continuous version of ``plan`` (see the module docstring) and its stats.

    ``min_charge_kw`` per session (kW, 0 = continuous); ``phase_w`` (sessions × 3) and
    ``site_phase_cap_kw`` (sites × 3, kW) add the phase caps.
    """
    t0 = time.perf_counter()
    n, steps = req.n_sessions, req.steps
    p_in = np.asarray(plan.power_kw, dtype=np.float64)
    if n == 0 or p_in.shape != (n, steps):
        stats = RoundingStats(0.0, 0.0, 1.0, 0, 0, time.perf_counter() - t0)
        return plan, stats
    h = req.step_h
    frac = req.plugged_fraction()
    # a V2G session keeps its continuous values: its energy runs both ways (the LP's
    # running-total bounds), which the charge-only rounding below does not track
    v2g = req.min_power_kw < 0
    mins = np.where(v2g, 0.0, np.minimum(np.maximum(min_charge_kw, 0.0), req.max_power_kw))
    site = req.session_site
    feeder = req.site_feeder[site]
    ru = np.asarray(plan.reserve_up_kw, dtype=np.float64)
    if ru.shape != (req.n_sites, steps):
        ru = np.zeros((req.n_sites, steps))
    site_cap = np.maximum(req.caps.site_kw - ru, 0.0)
    feeder_ru = np.stack(
        [
            np.bincount(req.site_feeder, weights=ru[:, t], minlength=req.n_feeders)
            for t in range(steps)
        ],
        axis=1,
    )
    feeder_cap = np.maximum(req.caps.feeder_kw - feeder_ru, 0.0)
    fleet_cap = np.maximum(req.caps.fleet_kw - ru.sum(axis=0), 0.0)
    if req.site_constraints is not None:
        planned_site = np.stack(
            [
                np.bincount(site, weights=p_in[:, t] * frac[:, t], minlength=req.n_sites)
                for t in range(steps)
            ],
            axis=1,
        )
        site_cap = np.minimum(site_cap, np.maximum(planned_site, 0.0))
    need = np.maximum(req.energy_needed_kwh, 0.0)
    # steps still plugged from each step on (a car about to leave goes first)
    left_steps = np.cumsum((frac > 0)[:, ::-1], axis=1)[:, ::-1]
    urgency = 1.0 / np.maximum(left_steps, 1)
    planned_cum = np.zeros(n)
    got = np.zeros(n)
    out = np.zeros_like(p_in)
    up_count = down_count = 0
    for t in range(steps):
        f_t = frac[:, t]
        plugged = f_t > 0
        x = np.where(plugged, p_in[:, t] * f_t, 0.0)  # as kW over the whole step
        planned_cum += np.maximum(x, 0.0) * h
        # what the car can still take this step (kW over the step), and its minimum
        left_kw = np.maximum(need - got, 0.0) / h
        m_t = np.where(plugged & (x >= 0), np.minimum(mins * f_t, left_kw), 0.0)
        x = np.where((x > 0) & ~v2g, np.minimum(x, left_kw), x)
        behind = planned_cum - got  # kWh behind the continuous plan (after this step)
        want = plugged & (behind > 0.25 * m_t * h) & (m_t > _EPS)
        small = (x > _EPS) & (x < m_t - _EPS)
        up = round_semi_continuous(
            x,
            min_kw=m_t,
            want=want,
            priority=behind + urgency[:, t] * np.maximum(need - got, 0.0) + 1e-6 * x,
            slot_site=site,
            slot_feeder=feeder,
            caps=Caps3(
                site_cap[:, t],
                feeder_cap[:, t],
                float(fleet_cap[t]),
                None if site_phase_cap_kw is None else site_phase_cap_kw,
            ),
            phase_w=phase_w if site_phase_cap_kw is not None else None,
            budget=budget,
        )
        up_count += int(up.sum())
        down_count += int((small & ~up).sum())
        got += np.maximum(x, 0.0) * h
        got += np.minimum(x, 0.0) * 0.0  # V2G values are passed through, not re-planned
        with np.errstate(divide="ignore", invalid="ignore"):
            out[:, t] = np.where(plugged, x / np.where(plugged, f_t, 1.0), 0.0)
    energy = (out * frac).sum(axis=1) * h
    shortfall = np.maximum(req.energy_needed_kwh - energy, 0.0)
    charging = out > _EPS
    ok = charging & ((out >= mins[:, None] - 1e-6) | _last_partial(out, frac, need, h))
    share = float(ok.sum() / charging.sum()) if charging.any() else 1.0
    rounded = dataclasses.replace(plan, power_kw=out, energy_kwh=energy, shortfall_kwh=shortfall)
    stats = RoundingStats(
        energy_continuous_kwh=float(np.asarray(plan.energy_kwh).sum()),
        energy_rounded_kwh=float(energy.sum()),
        followable_share=share,
        rounded_up=up_count,
        rounded_down=down_count,
        elapsed_s=time.perf_counter() - t0,
    )
    return rounded, stats


def _last_partial(
    p: NDArray[np.float64], frac: NDArray[np.float64], need: NDArray[np.float64], h: float
) -> NDArray[np.bool_]:
    """Charging values that complete their session's energy (the car stops when full)."""
    cum = np.cumsum(np.maximum(p, 0.0) * frac, axis=1) * h
    return (cum >= need[:, None] - 1e-6) & (p > 0)
