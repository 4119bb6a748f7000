"""The fast loop's frame: base powers, envelopes, caps and failsafe values for one moment.

:func:`build_frame` turns the fleet, the limit book *of now* and the last accepted plan
into a :class:`Frame` that every frequency signal dispatches on until something changes.
It runs on the service's thread, without a solver (numpy only, O(slots), no Python loop
over EVSEs), so the service may rebuild it at once when a DSO limit arrives, a known limit
window opens or closes, or a plan is swapped in.

Invariants:

* the frame's caps are the caps in force at ``built_at``, tightened by any change due
  within :data:`CAP_LOOKAHEAD_S` (minus the power of leases another
  replica issued that no batch of ours has replaced yet); ``caps_until`` is the next known
  instant they change, after which the frame must not be dispatched on;
* a session in the plan gets the plan's power for the current step; a session not in it
  (a late starter, or a new session on a slot the plan had for an earlier one) gets a safe
  allocation from the headroom the planned sessions leave: within its envelope and within
  its site's, its feeder's and the fleet's headroom under every cap in force, and — when
  the plan was made on a grid model — not above what the last AC-verified plan left free at
  its site for this step (nothing, when no verified plan exists);
* failsafe values: each active EVSE gets the configured failsafe power, lowered so that all
  active EVSEs of a site, a feeder or the fleet falling back together respect the tightest
  cap known from now until the end of the failsafe period of the longest lease issued now;
  an EVSE without a session gets failsafe 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import numpy as np
from numpy.typing import NDArray

from aggregator.closedloop import MeasuredView
from aggregator.dispatch import Dispatcher, DispatchFrame
from aggregator.fleet import FleetState
from aggregator.limits import Caps, LimitBook
from aggregator.planning.request import Plan
from aggregator.service.config import ServiceConfig
from aggregator.service.jobs import PlanResult
from aggregator.topology import Topology

CAP_LOOKAHEAD_S: Final = 2.0
"""A cap change due within this many seconds already bounds the frame (publish latency)."""

__all__ = [
    "CAP_LOOKAHEAD_S",
    "Frame",
    "build_frame",
    "changed_sessions",
    "failsafe_limits",
    "late_allocation_kw",
]


@dataclass(frozen=True, kw_only=True)
class Frame:
    """What every dispatch until the next refresh works on (arrays per fleet slot)."""

    dispatch: DispatchFrame
    baseline_kw: NDArray[np.float64]  # the dispatch without activation (limit-safe)
    failsafe_kw: NDArray[np.float64]
    late: NDArray[np.bool_]  # slots allocated by the fast loop, not by the plan
    fleet_version: int  # the fleet the frame was built on, and its sessions then:
    active: NDArray[np.bool_]
    arrival_s: NDArray[np.float64]
    caps: Caps  # caps in force at built_at (before lease deductions)
    built_at: datetime
    caps_until: datetime | None  # next known cap change (the frame is void from then)
    refresh_at: datetime | None  # when the slow loop rebuilds it to look ahead again
    step_until: datetime  # end of the plan step the base powers belong to
    plan_step: int | None


def _sum(group: NDArray[np.intp], w: NDArray[np.float64], n: int) -> NDArray[np.float64]:
    return np.bincount(group, weights=w, minlength=n).astype(np.float64, copy=False)


def _fit(demand: NDArray[np.float64], group: NDArray[np.intp], room: NDArray[np.float64]) -> None:
    """In place: scale each group's demand down uniformly to its room (room ≥ 0)."""
    total = _sum(group, demand, room.shape[0])
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        alpha = np.where(total > room, room / total, 1.0)
    demand *= np.clip(np.nan_to_num(alpha, nan=0.0), 0.0, 1.0)[group]


def late_allocation_kw(
    *,
    late: NDArray[np.bool_],
    hi_kw: NDArray[np.float64],
    planned_kw: NDArray[np.float64],
    slot_site: NDArray[np.intp],
    site_feeder: NDArray[np.intp],
    caps: Caps,
    site_free_kw: NDArray[np.float64] | None,
) -> NDArray[np.float64]:
    """Power for late starters (``late`` slots) out of the headroom ``planned_kw`` leaves.

    Each late slot asks for its envelope's ``hi``; the asks are scaled down uniformly per
    site to the site's headroom (and ``site_free_kw``, the AC-verified room, when given),
    then per feeder, then for the fleet. Slots not late get 0.
    """
    n_sites, n_feeders = caps.site_kw.shape[0], caps.feeder_kw.shape[0]
    slot_feeder = site_feeder[slot_site] if slot_site.size else slot_site
    site_used = _sum(slot_site, planned_kw, n_sites)
    room_site = np.maximum(caps.site_kw - site_used, 0.0)
    if site_free_kw is not None:
        room_site = np.minimum(room_site, np.maximum(site_free_kw, 0.0))
    room_feeder = np.maximum(caps.feeder_kw - _sum(site_feeder, site_used, n_feeders), 0.0)
    room_fleet = max(float(caps.fleet_kw) - float(planned_kw.sum()), 0.0)
    ask = np.where(late, np.maximum(hi_kw, 0.0), 0.0)
    _fit(ask, slot_site, room_site)
    _fit(ask, slot_feeder, room_feeder)
    total = float(ask.sum())
    if total > room_fleet:
        ask *= room_fleet / total
    return ask


def failsafe_limits(
    *,
    fleet: FleetState,
    topology: Topology,
    limits: LimitBook,
    config: ServiceConfig,
    now: datetime,
) -> NDArray[np.float64]:
    """Per-slot failsafe import cap: all active EVSEs at it together respect every cap
    known from ``now`` until the failsafe period of a lease issued now has ended."""
    c = config
    n = fleet.n_slots
    horizon_s = c.setpoint_validity_s + c.failsafe_duration_s
    steps = max(1, math.ceil(horizon_s / c.plan_step_s) + 1)
    caps = limits.caps_for_steps(now, c.plan_step_s, steps)
    active = fleet.active[:n]
    site = fleet.site[:n]
    feeder = topology.site_feeder[site] if n else site
    w = active.astype(np.float64)
    per_site = _sum(site, w, topology.n_sites).clip(1.0)
    per_feeder = _sum(feeder, w, topology.n_feeders).clip(1.0)
    fs = np.full(n, c.failsafe_kw, dtype=np.float64)
    fs = np.minimum(fs, (caps.site_kw.min(axis=1) / per_site)[site])
    fs = np.minimum(fs, (caps.feeder_kw.min(axis=1) / per_feeder)[feeder])
    fs = np.minimum(fs, float(caps.fleet_kw.min()) / max(float(w.sum()), 1.0))
    phase_cap = topology.site_phase_cap_kw
    if phase_cap is not None:  # each phase of a site carries its cars' phase shares
        pw = fleet.phase_w[:n] * w[:, None]
        load = np.stack([_sum(site, pw[:, k], topology.n_sites) for k in range(3)], axis=1)
        with np.errstate(divide="ignore"):
            per = np.where(load > 0, phase_cap / np.maximum(load, 1e-12), np.inf).min(axis=1)
        fs = np.minimum(fs, per[site])
    # a car cannot follow a value between 0 and its minimum: pause it instead
    fs = np.where(fs < fleet.min_charge_kw[:n] - 1e-9, 0.0, fs)
    return np.where(active, np.maximum(fs, 0.0), 0.0)


def caps_ahead(limits: LimitBook, now: datetime) -> Caps:
    """The caps in force at ``now``, tightened by every change due within
    :data:`CAP_LOOKAHEAD_S`: a batch issued just before a window opens already respects it
    (a lease cut at the change a moment later could reach a CSMS after it, and be dropped
    as expired)."""
    caps = limits.caps_at(now)
    for t in limits.changes_between(now, now + timedelta(seconds=CAP_LOOKAHEAD_S)):
        c = limits.caps_at(t)
        caps = Caps(
            np.minimum(caps.site_kw, c.site_kw),
            np.minimum(caps.feeder_kw, c.feeder_kw),
            np.minimum(caps.fleet_kw, c.fleet_kw),
            np.minimum(caps.site_export_kw, c.site_export_kw),
        )
    return caps


def _minus(
    caps: Caps,
    site_kw: NDArray[np.float64],
    feeder_kw: NDArray[np.float64],
    fleet_kw: float,
) -> Caps:
    """Caps with power already committed elsewhere (old leases) taken off."""
    if fleet_kw == 0.0 and not site_kw.any() and not feeder_kw.any():
        return caps
    return Caps(
        caps.site_kw - site_kw,
        caps.feeder_kw - feeder_kw,
        np.asarray(float(caps.fleet_kw) - fleet_kw),
        caps.site_export_kw,
    )


def changed_sessions(
    frame: Frame, fleet: FleetState, touched: set[int]
) -> NDArray[np.bool_] | None:
    """Slots whose session started or ended since ``frame`` was built (``None``: none):
    the slots in ``touched`` (sessions started or ended through the service) and any whose
    activity or arrival differs from the frame's (e.g. restored directly into the fleet).

    The fast loop gives them 0 kW and failsafe 0 until the next refresh (at most a tick
    away): the frame's envelope and plan powers belong to the session that was there.
    """
    if fleet.version == frame.fleet_version and not touched:
        return None
    n = frame.active.shape[0]
    changed = (fleet.active[:n] != frame.active) | (fleet.arrival_s[:n] != frame.arrival_s)
    if touched:
        changed[[i for i in touched if i < n]] = True
    return changed if changed.any() else None


def build_frame(
    *,
    now: datetime,
    fleet: FleetState,
    topology: Topology,
    limits: LimitBook,
    config: ServiceConfig,
    dispatcher: Dispatcher,
    result: PlanResult | None,
    leased_site_kw: NDArray[np.float64],
    leased_feeder_kw: NDArray[np.float64],
    leased_fleet_kw: float,
    measured: MeasuredView | None = None,
) -> Frame:
    """The frame for ``now`` (see the module docstring); no solver, O(slots) numpy.

    ``measured`` (the closed loop on meter values): under-takers' upper bounds shrink to
    what they take and the allowance this frees at a site goes to its other cars (not on a
    grid-checked plan); over-takers' sites lose what they take from their caps.
    """
    n = fleet.n_slots
    nxt = limits.next_change(now)
    step = config.plan_step_s
    until_s = (math.floor(now.timestamp() / step) + 1) * step
    step_until = datetime.fromtimestamp(until_s, tz=now.tzinfo)
    raw = caps_ahead(limits, now)
    caps = _minus(raw, leased_site_kw, leased_feeder_kw, leased_fleet_kw)
    lo, hi = fleet.envelope(now, max(until_s - now.timestamp(), 1.0))
    loop = measured if measured is not None and measured.active else None
    if loop is not None:
        hi = np.minimum(hi, loop.hi_cap_kw[:n])
        cut = np.maximum(caps.site_kw - loop.site_penalty_kw, np.minimum(caps.site_kw, 0.0))
        caps = Caps(cut, caps.feeder_kw, caps.fleet_kw, caps.site_export_kw)
    active = fleet.active[:n]
    slot_site = fleet.site[:n]
    base = np.zeros(n)
    in_plan = np.zeros(n, dtype=np.bool_)
    plan: Plan | None = result.plan if result is not None else None
    k = plan.step_at(now) if plan is not None else None
    ru = rd = None
    if result is not None and plan is not None and k is not None and result.job.slots.size:
        job = result.job
        same = fleet.active[job.slots] & (fleet.arrival_s[job.slots] == job.arrival_s)
        rows = np.flatnonzero(same)
        base[job.slots[rows]] = plan.power_kw[rows, k]
        in_plan[job.slots[rows]] = True
        ru, rd = plan.reserve_up_kw[:, k], plan.reserve_down_kw[:, k]
    planned = base.copy()
    round_cap = None  # rounding a car up to its minimum stays within the AC-checked power
    if result is not None and result.grid_used:
        checked = result.verified_site_kw
        if checked is not None and k is not None and k < checked.shape[1]:
            round_cap = checked[:, k]
        else:
            round_cap = _sum(slot_site, np.maximum(base, 0.0), topology.n_sites)

    def prepare(b: NDArray[np.float64]) -> DispatchFrame:
        return dispatcher.prepare(
            base_kw=b,
            lo_kw=lo,
            hi_kw=hi,
            slot_site=slot_site,
            site_feeder=topology.site_feeder,
            site_cap_kw=caps.site_kw,
            site_export_kw=caps.site_export_kw,
            feeder_cap_kw=caps.feeder_kw,
            fleet_cap_kw=float(caps.fleet_kw),
            site_reserve_up_kw=ru,
            site_reserve_down_kw=rd,
            min_kw=fleet.min_charge_kw[:n],
            phase_w=fleet.phase_w[:n],
            site_phase_cap_kw=topology.site_phase_cap_kw,
            site_round_cap_kw=round_cap,
        )

    frame = prepare(base)
    baseline = dispatcher.dispatch(0.0, frame)
    late = active & ~in_plan & (hi > 0.0)
    if late.any():
        free = None
        if result is not None and result.grid_used:
            # the AC check verified the planned site powers, nothing above them
            free = np.zeros(topology.n_sites)
            verified = result.verified_site_kw
            if verified is not None and k is not None and k < verified.shape[1]:
                used = _sum(slot_site, baseline, topology.n_sites)
                free = np.maximum(verified[:, k] - used, 0.0)
        base = baseline + late_allocation_kw(
            late=late,
            hi_kw=hi,
            planned_kw=baseline,
            slot_site=slot_site,
            site_feeder=topology.site_feeder,
            caps=caps,
            site_free_kw=free,
        )
        frame = prepare(base)
        baseline = dispatcher.dispatch(0.0, frame)
    if loop is not None and loop.under.any() and not (result is not None and result.grid_used):
        # what the plan gave under-takers above what they take goes to the other cars
        freed = _sum(slot_site, np.maximum(planned - hi, 0.0) * loop.under[:n], topology.n_sites)
        takers = active & ~loop.under[:n] & (hi > baseline + 1e-9)
        if freed.any() and takers.any():
            extra = late_allocation_kw(
                late=takers,
                hi_kw=hi - baseline,
                planned_kw=baseline,
                slot_site=slot_site,
                site_feeder=topology.site_feeder,
                caps=caps,
                site_free_kw=freed,
            )
            frame = prepare(baseline + extra)
            baseline = dispatcher.dispatch(0.0, frame)
    return Frame(
        dispatch=frame,
        baseline_kw=baseline,
        failsafe_kw=failsafe_limits(
            fleet=fleet, topology=topology, limits=limits, config=config, now=now
        ),
        late=late,
        fleet_version=fleet.version,
        active=active.copy(),
        arrival_s=fleet.arrival_s[:n].copy(),
        caps=raw,
        built_at=now,
        caps_until=nxt,
        refresh_at=None if nxt is None else nxt - timedelta(seconds=CAP_LOOKAHEAD_S),
        step_until=step_until,
        plan_step=k,
    )
