"""The fast loop: base + participation share × activation, clipped, then limit-safe.

Per signal (frequency sample or aFRR request) the :class:`Dispatcher` computes, for every
EVSE slot at once (numpy, no Python loop over EVSEs):

1. ``p = base + share_up · max(a, 0) + share_down · min(a, 0)`` where ``a`` is the
   requested fleet deviation in kW (positive = more import);
2. ``p`` clipped to each slot's envelope ``[lo, hi]`` (``lo ≤ 0 ≤ hi``);
3. site, then feeder, then fleet: every group whose sum leaves its bounds (import cap,
   and for sites the export cap) is scaled uniformly toward 0 until it fits;
4. only if a cap is below zero (the DSO asks for export) are members pushed toward
   their lower bound (V2G) — best effort, as far as the envelopes allow;
5. with per-session minimum charging powers (AC cars: 0 or at least 6 A per phase),
   the result is made *semi-continuous* (:mod:`aggregator.followable`): values in
   ``(0, min)`` are rounded down, then paused cars are rounded up to their minimum in
   priority order while every cap (and each phase cap) keeps room, with minimum on and
   off times (:class:`~aggregator.followable.Hysteresis`) when the caller passes the time.

Per-phase site caps (kW per phase, from A × nominal voltage) are met like the kW caps, by
scaling the site's members uniformly toward 0 between the site and the feeder pass; each
slot's ``phase_w`` says how much of its power counts on L1, L2, L3 (a third each for a
three-phase car, 1 on every phase for a single-phase car on an unknown phase).

Why uniform scaling toward 0: every envelope and every non-negative cap interval contains
0, and scaling a whole group by ``α ∈ [0, 1]`` scales every nested subgroup's sum by
``α`` — so fixing a feeder cannot break a site's import or export cap, and one pass
(sites ⊂ feeders ⊂ fleet) meets every cap ≥ 0. (Scaling only the charging cars of a
feeder could push a site with a discharging V2G car past its export cap; a property test
found exactly that.) Before step 5 the result lies inside ``[lo, hi]``; after it, every
charging value is 0 or at least the slot's minimum (a round-up may exceed an
energy-limited ``hi`` by less than the minimum: the car stops when full). The slow work — envelopes,
participation shares, caps — happens in :meth:`Dispatcher.prepare`, once per plan step
or state change, not per signal.

What a signal asks for (FCR droop, aFRR setpoint) is an injected :class:`Activation`
(markets own the rule and its numbers); this module only spreads the deviation.

Participation shares follow the plan's per-site reserve (``reserve_up_kw`` /
``reserve_down_kw``), split inside a site in proportion to each slot's headroom; with no
planned reserve, the shares follow the headroom of the whole fleet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from aggregator.followable import Caps3, Hysteresis, PhaseIndex, round_semi_continuous
from aggregator.messages import FrequencySignal

__all__ = ["Activation", "DispatchFrame", "Dispatcher", "NoActivation", "limit_excess_kw"]

_EPS = 1e-9


@runtime_checkable
class Activation(Protocol):
    """How a market product turns a signal into a fleet deviation (kW, + = more import).

    The rule and its numbers (nominal frequency, deadband, full activation, aFRR clipping)
    belong to :mod:`markets.activation`; the core only calls it with the reserve (kW) the
    fleet holds. Implementations are pure and cheap (they run on the fast path).
    """

    def deviation_kw(self, signal: FrequencySignal, reserve_kw: float) -> float:
        """The fleet deviation asked for by ``signal`` given a symmetric ``reserve_kw``."""
        ...


class NoActivation:
    """No market product: every signal asks for no deviation."""

    def deviation_kw(self, signal: FrequencySignal, reserve_kw: float) -> float:
        return 0.0


@dataclass(frozen=True)
class DispatchFrame:
    """Everything one dispatch needs, prepared outside the hot path.

    Arrays are per slot (``n``) except the caps: ``site_cap_kw``/``site_export_kw`` per
    site, ``feeder_cap_kw`` per feeder, ``fleet_cap_kw`` a scalar.
    """

    base_kw: NDArray[np.float64]
    lo_kw: NDArray[np.float64]
    hi_kw: NDArray[np.float64]
    share_up: NDArray[np.float64]
    share_down: NDArray[np.float64]
    slot_site: NDArray[np.intp]
    slot_feeder: NDArray[np.intp]
    site_cap_kw: NDArray[np.float64]
    site_export_kw: NDArray[np.float64]
    feeder_cap_kw: NDArray[np.float64]
    fleet_cap_kw: float
    # semi-continuous rule and phases (None: continuous, no phase caps)
    min_kw: NDArray[np.float64] | None = None
    phase_w: NDArray[np.float64] | None = None  # slots × 3
    site_phase_cap_kw: NDArray[np.float64] | None = None  # sites × 3, import
    site_round_cap_kw: NDArray[np.float64] | None = None  # sites: round-ups stay below
    site_feeder: NDArray[np.intp] | None = None  # feeder of each site
    phase_index: PhaseIndex | None = None  # phase loads per site, one sum (with phase caps)
    # derived from the fields above once per frame (__post_init__), read on the hot path
    site_upper_kw: NDArray[np.float64] = field(init=False, repr=False, compare=False)
    site_lower_kw: NDArray[np.float64] = field(init=False, repr=False, compare=False)
    feeder_upper_kw: NDArray[np.float64] = field(init=False, repr=False, compare=False)
    round_caps: Caps3 = field(init=False, repr=False, compare=False)
    any_v2g: bool = field(init=False, repr=False, compare=False)
    negative_caps: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        site_upper = np.maximum(self.site_cap_kw, 0.0)
        feeder_upper = np.maximum(self.feeder_cap_kw, 0.0)
        round_site = (
            site_upper
            if self.site_round_cap_kw is None
            else np.maximum(np.minimum(self.site_cap_kw, self.site_round_cap_kw), 0.0)
        )
        derived = {
            "site_upper_kw": site_upper,
            "site_lower_kw": -self.site_export_kw,
            "feeder_upper_kw": feeder_upper,
            "round_caps": Caps3(
                round_site, feeder_upper, max(self.fleet_cap_kw, 0.0), self.site_phase_cap_kw
            ),
            "any_v2g": bool(float(self.lo_kw.min(initial=0.0)) < 0.0),
            "negative_caps": bool(
                (self.site_cap_kw < 0).any()
                or (self.feeder_cap_kw < 0).any()
                or self.fleet_cap_kw < 0
            ),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    @property
    def reserve_up_kw(self) -> float:
        return float(np.sum(self.hi_kw - self.base_kw))


def _shares(
    base: NDArray[np.float64],
    head: NDArray[np.float64],
    slot_site: NDArray[np.intp],
    site_reserve: NDArray[np.float64] | None,
    n_sites: int,
) -> NDArray[np.float64]:
    head = np.maximum(head, 0.0)
    if site_reserve is None or site_reserve.sum() <= _EPS:
        total = head.sum()
        return head / total if total > _EPS else np.zeros_like(base)
    site_head = np.bincount(slot_site, weights=head, minlength=n_sites)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        within = np.where(site_head[slot_site] > _EPS, head / site_head[slot_site], 0.0)
    # a site never promises more than its slots' headroom
    kept = np.minimum(site_reserve, site_head)
    total = kept.sum()
    return within * kept[slot_site] / total if total > _EPS else np.zeros_like(base)


def _sum_by(group: NDArray[np.intp], w: NDArray[np.float64], n: int) -> NDArray[np.float64]:
    """Sum of ``w`` per group index (length ``n``), as float64."""
    return np.bincount(group, weights=w, minlength=n).astype(np.float64, copy=False)


def _shrink(
    p: NDArray[np.float64],
    group: NDArray[np.intp] | None,
    upper: NDArray[np.float64],
    lower: NDArray[np.float64] | None,
) -> None:
    """In place: scale every member of a group whose sum leaves ``[lower, upper]`` toward 0.

    Needs ``lower ≤ 0 ≤ upper``. Scaling a whole group by ``α ∈ [0, 1]`` scales the sum of
    every subgroup by ``α`` too, so bounds of nested groups that contain 0 stay met.
    """
    if group is None:
        total = float(p.sum())
        cap = float(upper)
        if total > cap:
            p *= max(cap, 0.0) / total
        return
    n = upper.shape[0]
    sums = np.bincount(group, weights=p, minlength=n)
    lo = -np.inf if lower is None else lower
    bad = (sums > upper) | (sums < lo)
    if not bad.any():
        return
    # np.where evaluates every branch: silence the ones not taken (0/0, tiny sums)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        alpha = np.where(sums > upper, upper / sums, np.where(sums < lo, lo / sums, 1.0))
    alpha = np.clip(np.nan_to_num(alpha, nan=0.0, posinf=0.0, neginf=0.0), 0.0, 1.0)
    p *= alpha[group]


def _push_to_lower(
    p: NDArray[np.float64],
    lo: NDArray[np.float64],
    group: NDArray[np.intp] | None,
    caps: NDArray[np.float64],
) -> None:
    """In place: for caps below zero, move members toward ``lo`` (V2G) until the cap holds."""
    if group is None:
        total, floor = float(p.sum()), float(lo.sum())
        cap = float(caps)
        if total > cap:
            step = min(1.0, (total - cap) / (total - floor)) if total > floor else 1.0
            p += step * (lo - p)
        return
    n = caps.shape[0]
    sums = _sum_by(group, p, n)
    low = _sum_by(group, lo, n)
    over = sums > caps
    if not over.any():
        return
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        beta = np.where(over, np.clip((sums - caps) / (sums - low), 0.0, 1.0), 0.0)
    beta = np.nan_to_num(beta, nan=1.0)
    p += beta[group] * (lo - p)


def _shrink_phases(
    p: NDArray[np.float64],
    slot_site: NDArray[np.intp],
    index: PhaseIndex,
    cap: NDArray[np.float64],
) -> None:
    """In place: scale every site whose import on a phase exceeds ``cap`` toward 0.

    Phase caps bound import only: export stays within the kW export cap and each V2G
    session's own bounds. Lowering any member never raises a phase's import (weights ≥ 0).
    """
    load = index.load(p)
    bad = load > cap
    if not bad.any():
        return
    # where bad, load > cap ≥ 0: the ratio is finite and in [0, 1)
    ratio = np.divide(cap, load, out=np.ones_like(load), where=bad)
    p *= np.clip(ratio.min(axis=1), 0.0, 1.0)[slot_site]


class Dispatcher:
    """Turns a fleet deviation request into limit-safe setpoints for every slot.

    ``min_on_s``/``min_off_s``: the minimum on and off times of a car under the
    semi-continuous rule, applied when :meth:`dispatch` is given the time (``now_s``).
    """

    def __init__(
        self, cap_margin_kw: float = 1e-6, *, min_on_s: float = 60.0, min_off_s: float = 60.0
    ) -> None:
        self.cap_margin_kw = cap_margin_kw
        self.frame: DispatchFrame | None = None
        self.hysteresis = Hysteresis(min_on_s=min_on_s, min_off_s=min_off_s)
        # simulations compare with the continuous allocation: set to keep a copy of it
        self.record_continuous = False
        self.continuous_kw: NDArray[np.float64] | None = None

    def prepare(
        self,
        *,
        base_kw: NDArray[np.float64],
        lo_kw: NDArray[np.float64],
        hi_kw: NDArray[np.float64],
        slot_site: NDArray[np.intp],
        site_feeder: NDArray[np.intp],
        site_cap_kw: NDArray[np.float64],
        site_export_kw: NDArray[np.float64],
        feeder_cap_kw: NDArray[np.float64],
        fleet_cap_kw: float,
        site_reserve_up_kw: NDArray[np.float64] | None = None,
        site_reserve_down_kw: NDArray[np.float64] | None = None,
        min_kw: NDArray[np.float64] | None = None,
        phase_w: NDArray[np.float64] | None = None,
        site_phase_cap_kw: NDArray[np.float64] | None = None,
        site_round_cap_kw: NDArray[np.float64] | None = None,
    ) -> DispatchFrame:
        """Precompute the frame for the coming signals (called per plan step / state change).

        ``min_kw`` (per slot, kW; 0 = continuous) switches on the semi-continuous rule;
        ``phase_w`` (slots × 3) with ``site_phase_cap_kw`` (sites × 3, kW) the phase caps;
        ``site_round_cap_kw`` (per site, kW) bounds a site's power after round-ups (e.g.
        the AC-verified site power of a grid-aware plan; round-downs are never bounded).
        """
        lo = np.minimum(lo_kw, 0.0)
        hi = np.maximum(hi_kw, 0.0)
        base = np.clip(base_kw, lo, hi)
        n_sites = site_cap_kw.shape[0]
        m = self.cap_margin_kw

        def tight(cap: NDArray[np.float64]) -> NDArray[np.float64]:
            # a hair under each positive cap absorbs float rounding of the scaling; a zero
            # or negative cap is met exactly (a margin there would force V2G export)
            return np.where(cap > 2 * m, cap - m, cap)

        frame = DispatchFrame(
            base_kw=base,
            lo_kw=lo,
            hi_kw=hi,
            share_up=_shares(base, hi - base, slot_site, site_reserve_up_kw, n_sites),
            share_down=_shares(base, base - lo, slot_site, site_reserve_down_kw, n_sites),
            slot_site=slot_site,
            slot_feeder=site_feeder[slot_site] if slot_site.size else slot_site,
            site_cap_kw=tight(site_cap_kw),
            site_export_kw=tight(site_export_kw),
            feeder_cap_kw=tight(feeder_cap_kw),
            fleet_cap_kw=float(tight(np.asarray(float(fleet_cap_kw)))),
            min_kw=None if min_kw is None or not np.any(min_kw > 0) else min_kw,
            phase_w=phase_w if site_phase_cap_kw is not None else None,
            site_phase_cap_kw=None
            if site_phase_cap_kw is None or phase_w is None
            else np.maximum(tight(site_phase_cap_kw), 0.0),
            site_round_cap_kw=site_round_cap_kw,
            site_feeder=site_feeder,
            phase_index=None
            if site_phase_cap_kw is None or phase_w is None
            else PhaseIndex.of(slot_site, phase_w, n_sites),
        )
        self.frame = frame
        return frame

    def dispatch(
        self,
        deviation_kw: float,
        frame: DispatchFrame | None = None,
        *,
        now_s: float | None = None,
        zero: NDArray[np.bool_] | None = None,
    ) -> NDArray[np.float64]:
        """Setpoints (kW per slot) for a requested fleet deviation (kW, + = more import).

        ``now_s`` (POSIX s): the setpoints are sent now, so minimum on/off times apply and
        are recorded; ``zero``: slots held at 0 (a session changed there since the frame).
        """
        f = frame if frame is not None else self.frame
        if f is None:
            raise RuntimeError("prepare() must run before dispatch()")
        p = f.base_kw + f.share_up * max(deviation_kw, 0.0) + f.share_down * min(deviation_kw, 0.0)
        np.clip(p, f.lo_kw, f.hi_kw, out=p)
        if zero is not None:
            p[zero] = 0.0
        self.enforce(p, f)
        self.follow(p, f, now_s=now_s, zero=zero)
        return p

    def follow(
        self,
        p: NDArray[np.float64],
        f: DispatchFrame,
        *,
        now_s: float | None = None,
        zero: NDArray[np.bool_] | None = None,
    ) -> None:
        """In place: the semi-continuous rule on limit-safe ``p`` (no-op without minimums).

        Priority of the round-ups: cars inside their minimum on-time, then the cars that
        have waited longest since they last charged (fair rotation), then the larger
        continuous value. Without ``now_s``: by continuous value, no hysteresis.
        """
        if self.record_continuous:
            self.continuous_kw = p.copy()
        m = f.min_kw
        if m is None or not p.size:
            return
        n = p.shape[0]
        want: NDArray[np.bool_] = np.zeros(n, dtype=np.bool_)
        held_on = held_off = None
        priority: NDArray[np.float64] | Callable[[NDArray[np.intp]], NDArray[np.float64]] = p
        if now_s is not None:
            h = self.hysteresis
            h.size(n)
            if zero is not None:
                h.reset(zero)
            held_off, held_on = h.view(n, now_s)
            held_on &= f.hi_kw > 0.0
            if zero is not None:
                held_on &= ~zero
            want = held_on
            on_hold = held_on

            def priority(slots: NDArray[np.intp]) -> NDArray[np.float64]:
                # cars held on first, then seconds waited (fair rotation), then the value
                waited = np.where(on_hold[slots], 2e6, h.waited_s(slots, now_s))
                return waited + 1e-3 * p[slots]

        round_semi_continuous(
            p,
            min_kw=m,
            want=want,
            priority=priority,
            slot_site=f.slot_site,
            slot_feeder=f.slot_feeder,
            caps=f.round_caps,
            phase_w=f.phase_w,
            forced=held_on,
            blocked=held_off,
            export_kw=f.site_export_kw if f.any_v2g else None,
            site_feeder=f.site_feeder,
            phase_index=f.phase_index,
        )
        if now_s is not None:
            self.hysteresis.update(p, m, now_s)

    @staticmethod
    def enforce(p: NDArray[np.float64], f: DispatchFrame) -> None:
        """In place: make ``p`` respect every cap of ``f`` without leaving ``[lo, hi]``."""
        if not p.size:
            return
        _shrink(p, f.slot_site, f.site_upper_kw, f.site_lower_kw)
        if f.phase_index is not None and f.site_phase_cap_kw is not None:
            _shrink_phases(p, f.slot_site, f.phase_index, f.site_phase_cap_kw)
        _shrink(p, f.slot_feeder, f.feeder_upper_kw, None)
        _shrink(p, None, np.asarray(f.round_caps.fleet_kw), None)
        if not f.negative_caps:
            return
        # caps below zero can only be met by V2G export: best effort, down to each lo
        if (f.site_cap_kw < 0).any():
            _push_to_lower(p, f.lo_kw, f.slot_site, f.site_cap_kw)
        if (f.feeder_cap_kw < 0).any():
            _push_to_lower(p, f.lo_kw, f.slot_feeder, f.feeder_cap_kw)
        if f.fleet_cap_kw < 0:
            _push_to_lower(p, f.lo_kw, None, np.asarray(f.fleet_cap_kw))


def limit_excess_kw(p: NDArray[np.float64], f: DispatchFrame) -> float:
    """Largest amount by which ``p`` exceeds any cap of ``f`` (caps carry the safety margin,
    so this is conservative by at most ``cap_margin_kw``)."""
    n_sites, n_feeders = f.site_cap_kw.shape[0], f.feeder_cap_kw.shape[0]
    site = np.bincount(f.slot_site, weights=p, minlength=n_sites)
    feeder = np.bincount(f.slot_feeder, weights=p, minlength=n_feeders)
    worst = max(
        float(np.max(site - f.site_cap_kw, initial=0.0)),
        float(np.max(-site - f.site_export_kw, initial=0.0)),
        float(np.max(feeder - f.feeder_cap_kw, initial=0.0)),
        float(p.sum() - f.fleet_cap_kw),
        0.0,
    )
    if f.phase_w is not None and f.site_phase_cap_kw is not None:
        load = np.stack(
            [
                np.bincount(f.slot_site, weights=p * f.phase_w[:, k], minlength=n_sites)
                for k in range(3)
            ],
            axis=1,
        )
        worst = max(worst, float(np.max(load - f.site_phase_cap_kw, initial=0.0)))
    return worst
