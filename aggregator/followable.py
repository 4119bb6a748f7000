"""Setpoints a car can follow: 0 or at least its minimum, limit-safe, fair, without flapping.

An AC car (IEC 61851 control pilot) charges at 0 A or between its minimum current (6 A
per phase by default) and its maximum: a setpoint strictly between 0 and the session's
minimum power (``min_charge_kw``, see :func:`aggregator.fleet.table.charge_profile`) is
either ignored or paused by the car. This module turns a continuous, limit-safe allocation
into a *semi-continuous* one, for the fast loop (:mod:`aggregator.dispatch`, per
activation) and for the plan (:mod:`aggregator.planning.rounding`, per step):

1. every charging setpoint in ``(0, min)`` is rounded **down** to 0 (this can only lower
   a group's import, so every import cap that held still holds);
2. the paused candidates are then rounded **up** to their minimum in priority order, each
   only while its site (kW cap and every phase cap), its feeder and the fleet still have
   room for it — the room is what the caps leave after step 1, so a round-up never breaks
   a cap. :func:`fits` does this in numpy (sort + grouped cumulative sums), no Python loop
   per EVSE. Optionally a per-site *budget* (the power step 1 freed there) stops the
   round-ups once they have given the site back what it lost (nearest rounding: within
   half a minimum), so the total stays close to the continuous one (the "time sharing"
   of a site's power among its cars; the fast loop uses it, the plan does not).

Priority is the caller's: the fast loop puts cars inside their minimum on-time first,
then the cars that have waited longest since they last charged (fair rotation); the plan
puts the cars furthest behind their planned energy first.

:class:`Hysteresis` keeps, per EVSE slot, when its car last turned on or off, so that a
car stays on for ``min_on_s`` (if the caps allow: a limit always wins) and is not rounded
up again for ``min_off_s`` after it paused (a continuous value at or above its minimum
still switches it on: that is the plan's or a lifted limit's decision, not the rounding's).
Its updates are array operations.

Invariants: the output of :func:`round_semi_continuous` has no charging value strictly
between 0 and ``min_kw``; it never raises a group's import above ``max(before, cap)``
nor any member above ``max(before, min_kw)``; discharging (V2G) values are left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "Caps3",
    "Hysteresis",
    "PhaseIndex",
    "fits",
    "group_cumsum",
    "round_semi_continuous",
]

_EPS = 1e-9


@dataclass(frozen=True)
class Caps3:
    """Import room the round-ups may use: per site (kW), per site and phase (sites × 3,
    kW, optional), per feeder (kW), fleet (kW)."""

    site_kw: NDArray[np.float64]
    feeder_kw: NDArray[np.float64]
    fleet_kw: float
    site_phase_kw: NDArray[np.float64] | None = None


@dataclass(frozen=True)
class PhaseIndex:
    """Each site's load on L1, L2, L3 with one sum over the slots.

    A fleet has few distinct phase rows (a third each; all on L1, L2 or L3; all on every
    phase when unknown): the power is summed per (site, row) with one ``bincount`` and
    turned into phase loads with a small product. Built once per frame.
    """

    key: NDArray[np.intp]  # per slot: site × rows + its row
    rows: NDArray[np.float64]  # distinct phase rows × 3
    n_sites: int

    @classmethod
    def of(
        cls, slot_site: NDArray[np.intp], phase_w: NDArray[np.float64], n_sites: int
    ) -> PhaseIndex:
        if not phase_w.shape[0]:
            return cls(slot_site.copy(), np.zeros((1, 3)), n_sites)
        rows, inv = np.unique(phase_w, axis=0, return_inverse=True)
        return cls((slot_site * rows.shape[0] + inv.reshape(-1)).astype(np.intp), rows, n_sites)

    def load(self, p: NDArray[np.float64]) -> NDArray[np.float64]:
        """Per site and phase, the summed ``p`` (sites × 3)."""
        r = self.rows.shape[0]
        per = np.bincount(self.key, weights=p, minlength=self.n_sites * r)
        out: NDArray[np.float64] = per.reshape(self.n_sites, r) @ self.rows
        return out


def group_cumsum(
    group: NDArray[np.intp], values: NDArray[np.float64], order: NDArray[np.intp]
) -> NDArray[np.float64]:
    """Per item, the sum of ``values`` of the items of its group up to and including it,
    taking items in ``order`` (a permutation). ``values`` may be 1-D or 2-D (rows = items)."""
    o = order[np.argsort(group[order], kind="stable")]
    v = values[o]
    cs = np.cumsum(v, axis=0)
    g = group[o]
    starts = np.empty(g.shape[0], dtype=np.bool_)
    if g.shape[0]:
        starts[0] = True
        np.not_equal(g[1:], g[:-1], out=starts[1:])
    before = (cs - v)[starts]
    run = np.cumsum(starts) - 1
    out = np.empty_like(cs)
    out[o] = cs - before[run]
    return out


def _site_major(
    site: NDArray[np.intp], priority: NDArray[np.float64]
) -> tuple[NDArray[np.intp], NDArray[np.bool_], NDArray[np.intp]]:
    """Order (by site, then priority descending), run starts and run index per position."""
    lo, hi = float(priority.min()), float(priority.max())
    span = 2.0 * (hi - lo) + 2.0
    if float(site.max()) * span < 2.0**50:  # one float key: site first, then priority
        order = np.argsort(site * span - (priority - lo)).astype(np.intp)
    else:
        order = np.lexsort((-priority, site)).astype(np.intp)
    g = site[order]
    starts = np.empty(g.shape[0], dtype=np.bool_)
    starts[0] = True
    np.not_equal(g[1:], g[:-1], out=starts[1:])
    return order, starts, np.cumsum(starts) - 1


def _run_cumsum(
    values: NDArray[np.float64],
    order: NDArray[np.intp],
    starts: NDArray[np.bool_],
    run: NDArray[np.intp],
) -> NDArray[np.float64]:
    """Per item, the cumulative sum of ``values`` within its run, in ``order``."""
    v = values[order]
    cs = np.cumsum(v, axis=0)
    cs -= (cs - v)[starts][run]
    out = np.empty_like(cs)
    out[order] = cs
    return out


def _cut(
    ok: NDArray[np.bool_],
    inc: NDArray[np.float64],
    group: NDArray[np.intp],
    site: NDArray[np.intp],
    room: NDArray[np.float64],
    site_major: tuple[NDArray[np.intp], NDArray[np.bool_], NDArray[np.intp]],
) -> None:
    """In place: where a group's accepted increments exceed its room, keep in each of its
    sites only the first (by priority) increments that fit the same fraction of that site's
    accepted total: every site of the group gives up alike, and the group fits."""
    acc = np.where(ok, inc, 0.0)
    total = np.bincount(group, weights=acc, minlength=room.shape[0])
    over = total > room + _EPS
    if not over.any():
        return
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.where(over, np.maximum(room, 0.0) / total, 1.0)
    per_site = np.bincount(site, weights=acc)
    cs = _run_cumsum(acc, *site_major)
    ok &= cs <= alpha[group] * per_site[site] + _EPS * (alpha[group] >= 1.0)


def fits(
    inc_kw: NDArray[np.float64],
    priority: NDArray[np.float64],
    site: NDArray[np.intp],
    feeder: NDArray[np.intp],
    room: Caps3,
    *,
    phase_w: NDArray[np.float64] | None = None,
    budget_kw: NDArray[np.float64] | None = None,
    forced: NDArray[np.bool_] | None = None,
) -> NDArray[np.bool_]:
    """Which candidates (arrays of the candidates only) may add ``inc_kw`` (≥ 0) at once.

    Within each site, candidates are taken by ``priority`` (higher first) and accepted
    while the accepted increments before them and their own fit the site's room (per phase
    too, with ``phase_w`` the share of power on each phase). With ``budget_kw`` (per site),
    a candidate not ``forced`` is accepted only while the increments before it at its site
    plus half its own increment are below the budget (a site gets back what rounding down
    took to within half a minimum). Where a feeder's, then the fleet's, accepted
    increments exceed its room, each of its sites keeps the same fraction of its accepted
    total (highest priority first). One sort of the candidates; no Python loop over them.
    """
    c = inc_kw.shape[0]
    if c == 0:
        return np.zeros(0, dtype=np.bool_)
    major = _site_major(site, priority)
    cs = _run_cumsum(inc_kw, *major)
    ok = cs <= room.site_kw[site]
    if budget_kw is not None:
        under = (cs - 0.5 * inc_kw) < budget_kw[site] - _EPS  # nearest: ± half a minimum
        ok &= under if forced is None else (under | forced)
    if room.site_phase_kw is not None and phase_w is not None:
        # a phase carries at most the whole increment: only sites whose candidates could
        # exceed their tightest phase room need the per-phase running sums
        n_sites = room.site_phase_kw.shape[0]
        worst = np.bincount(site, weights=inc_kw, minlength=n_sites)
        tight = (worst > room.site_phase_kw.min(axis=1))[site]
        if tight.any():
            # the candidates of those sites, in the site-major order already sorted
            # (whole sites are kept, so each site's run stays contiguous)
            o = major[0][tight[major[0]]]
            g = site[o]
            starts = np.empty(g.shape[0], dtype=np.bool_)
            starts[0] = True
            np.not_equal(g[1:], g[:-1], out=starts[1:])
            v = inc_kw[o, None] * phase_w[o]
            cs3 = np.cumsum(v, axis=0)
            cs3 -= (cs3 - v)[starts][np.cumsum(starts) - 1]
            ok[o] &= np.all(cs3 <= room.site_phase_kw[g], axis=1)
    _cut(ok, inc_kw, feeder, site, room.feeder_kw, major)
    _cut(ok, inc_kw, np.zeros(c, dtype=np.intp), site, np.asarray([room.fleet_kw]), major)
    return ok


def _room(
    p: NDArray[np.float64],
    slot_site: NDArray[np.intp],
    slot_feeder: NDArray[np.intp],
    caps: Caps3,
    phase_w: NDArray[np.float64] | None,
    site: NDArray[np.float64],
    site_feeder: NDArray[np.intp] | None,
    phase_index: PhaseIndex | None = None,
) -> Caps3:
    n_sites, n_feeders = caps.site_kw.shape[0], caps.feeder_kw.shape[0]
    if site_feeder is not None:
        feeder = np.bincount(site_feeder, weights=site, minlength=n_feeders)
    else:
        feeder = np.bincount(slot_feeder, weights=p, minlength=n_feeders)
    phase = None
    if caps.site_phase_kw is not None and phase_index is not None:
        phase = caps.site_phase_kw - phase_index.load(p)
    elif caps.site_phase_kw is not None and phase_w is not None:
        load = np.stack(
            [
                np.bincount(slot_site, weights=p * phase_w[:, k], minlength=n_sites)
                for k in range(3)
            ],
            axis=1,
        )
        phase = caps.site_phase_kw - load
    return Caps3(
        caps.site_kw - site, caps.feeder_kw - feeder, caps.fleet_kw - float(site.sum()), phase
    )


def round_semi_continuous(
    p: NDArray[np.float64],
    *,
    min_kw: NDArray[np.float64],
    want: NDArray[np.bool_],
    priority: NDArray[np.float64] | Callable[[NDArray[np.intp]], NDArray[np.float64]],
    slot_site: NDArray[np.intp],
    slot_feeder: NDArray[np.intp],
    caps: Caps3,
    phase_w: NDArray[np.float64] | None = None,
    forced: NDArray[np.bool_] | None = None,
    blocked: NDArray[np.bool_] | None = None,
    budget: bool = True,
    export_kw: NDArray[np.float64] | None = None,
    site_feeder: NDArray[np.intp] | None = None,
    phase_index: PhaseIndex | None = None,
) -> NDArray[np.bool_]:
    """In place: make ``p`` semi-continuous (see the module docstring); returns the slots
    rounded up to their minimum.

    ``want`` marks the slots that may be rounded up (a car that wants power now) besides
    those in ``(0, min)``; ``forced`` (optional) the ones to keep on whatever the budget
    (minimum on-time) — both still need room; ``blocked`` (optional) the ones never
    rounded up (minimum off-time: a car the continuous allocation gives at least its
    minimum is not held off, so a lifted limit is released at once). ``caps``
    are the import caps (room is computed here). ``export_kw`` (per site) restores a
    site's export cap that rounding a charging car down could break when V2G cars export
    there (their discharge is reduced). ``priority`` is per slot, or a function giving it
    for the candidates' slots (evaluated before any value changes); ``site_feeder`` (the
    feeder of each site) saves sums over all slots.
    """
    small = (p > _EPS) & (p < min_kw - _EPS)
    i_down = np.flatnonzero(small)
    cand = small | (want & (np.abs(p) <= _EPS) & (min_kw > _EPS)) if want.any() else small
    if blocked is not None:
        cand = cand & ~blocked
    idx = np.flatnonzero(cand)
    if not i_down.size and not idx.size:
        return cand
    n_sites = caps.site_kw.shape[0]
    prio = priority(idx) if callable(priority) else priority[idx]
    freed: NDArray[np.float64] = np.bincount(
        slot_site[i_down], weights=p[i_down], minlength=n_sites
    ).astype(np.float64, copy=False)
    p[i_down] = 0.0
    site_sum: NDArray[np.float64] = np.bincount(slot_site, weights=p, minlength=n_sites).astype(
        np.float64, copy=False
    )
    if export_kw is not None and bool(np.any(site_sum < -export_kw)):
        _restore_export(p, slot_site, export_kw)
        site_sum = np.bincount(slot_site, weights=p, minlength=n_sites).astype(np.float64)
    up = np.zeros(p.shape[0], dtype=np.bool_)
    if not idx.size:
        return up
    room = _room(p, slot_site, slot_feeder, caps, phase_w, site_sum, site_feeder, phase_index)
    # time sharing: cars running above their minimum may give some of it up, so that a
    # paused car gets its minimum even when its site, feeder or the fleet is full (no
    # group's import grows past its room: what the round-ups add beyond the room is taken
    # from the slack of that group's running cars, site first, then feeder, then fleet)
    slack = np.maximum(p - min_kw, 0.0)
    slack *= min_kw > _EPS
    n_feeders = caps.feeder_kw.shape[0]
    slack_site = np.bincount(slot_site, weights=slack, minlength=n_sites)
    if site_feeder is not None:
        slack_feeder = np.bincount(site_feeder, weights=slack_site, minlength=n_feeders)
    else:
        slack_feeder = np.bincount(slot_feeder, weights=slack, minlength=n_feeders)
    with_slack = Caps3(
        room.site_kw + slack_site,
        room.feeder_kw + slack_feeder,
        room.fleet_kw + float(slack_site.sum()),
        room.site_phase_kw,
    )
    ok = fits(
        min_kw[idx],
        prio,
        slot_site[idx],
        slot_feeder[idx],
        with_slack,
        phase_w=None if phase_w is None else phase_w[idx],
        budget_kw=freed if budget else None,
        forced=None if forced is None else forced[idx],
    )
    took = idx[ok]
    up[took] = True
    if took.size:
        add = np.zeros(p.shape[0])
        add[took] = min_kw[took]
        _give_up_slack(p, slack, add, slot_site, slot_feeder, room, site_feeder)
        p[took] = min_kw[took]
    return up


def _take(
    p: NDArray[np.float64],
    slack: NDArray[np.float64],
    group: NDArray[np.intp] | None,
    short: NDArray[np.float64],
) -> NDArray[np.float64]:
    """In place: lower each group's running cars by ``short`` (kW per group) out of their
    ``slack`` (uniformly within the group); ``slack`` is lowered too. Returns the kW taken
    per group (``short``, or all its slack when that is less)."""
    if group is None:
        total = np.asarray([slack.sum()])
        g = np.zeros(p.shape[0], dtype=np.intp)
    else:
        total = np.bincount(group, weights=slack, minlength=short.shape[0])
        g = group
    with np.errstate(divide="ignore", invalid="ignore"):
        cut = np.where(total > _EPS, np.clip(short / total, 0.0, 1.0), 0.0)
    take = slack * cut[g]
    p -= take
    slack -= take
    taken: NDArray[np.float64] = total * cut
    return taken


def _give_up_slack(
    p: NDArray[np.float64],
    slack: NDArray[np.float64],
    add: NDArray[np.float64],
    slot_site: NDArray[np.intp],
    slot_feeder: NDArray[np.intp],
    room: Caps3,
    site_feeder: NDArray[np.intp] | None = None,
) -> None:
    """Make room for the round-ups ``add`` out of the running cars' slack."""
    n_sites, n_feeders = room.site_kw.shape[0], room.feeder_kw.shape[0]
    site_add = np.bincount(slot_site, weights=add, minlength=n_sites)
    short = np.maximum(site_add - np.maximum(room.site_kw, 0.0), 0.0)
    net = site_add - _take(p, slack, slot_site, short) if short.any() else site_add
    if site_feeder is None:
        site_feeder = np.zeros(n_sites, dtype=np.intp)
        site_feeder[slot_site] = slot_feeder
    feeder_net = np.bincount(site_feeder, weights=net, minlength=n_feeders)
    short_f = np.maximum(feeder_net - np.maximum(room.feeder_kw, 0.0), 0.0)
    total = float(net.sum())
    if short_f.any():
        total -= float(_take(p, slack, slot_feeder, short_f).sum())
    short_fleet = max(total - max(room.fleet_kw, 0.0), 0.0)
    if short_fleet > 0.0:
        _take(p, slack, None, np.asarray([short_fleet]))


def _restore_export(
    p: NDArray[np.float64], slot_site: NDArray[np.intp], export_kw: NDArray[np.float64]
) -> None:
    """In place: where a site now exports more than ``export_kw``, reduce its discharging
    members' export uniformly until it fits (they discharged to balance charging cars)."""
    neg = np.minimum(p, 0.0)
    if not neg.any():
        return
    n = export_kw.shape[0]
    total = np.bincount(slot_site, weights=p, minlength=n)
    out = np.bincount(slot_site, weights=neg, minlength=n)
    bad = total < -export_kw
    if not bad.any():
        return
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        gamma = np.where(bad, np.clip(1.0 - (-export_kw - total) / -out, 0.0, 1.0), 1.0)
    p += neg * (np.nan_to_num(gamma, nan=1.0)[slot_site] - 1.0)


class Hysteresis:
    """Per-slot on/off history for minimum on and off times (array operations only).

    A slot is *on* while its setpoint is at least its minimum (> 0). After turning on it is
    kept on (as a forced round-up candidate, caps permitting) until ``min_on_s`` has
    passed; after turning off it is not rounded up for ``min_off_s``.
    """

    def __init__(self, *, min_on_s: float = 60.0, min_off_s: float = 60.0) -> None:
        if min_on_s < 0 or min_off_s < 0:
            raise ValueError("min_on_s and min_off_s must be >= 0")
        self.min_on_s = float(min_on_s)
        self.min_off_s = float(min_off_s)
        self.on = np.zeros(0, dtype=np.bool_)
        self.on_until_s = np.zeros(0)
        self.off_until_s = np.zeros(0)
        self.last_on_s = np.zeros(0)

    def size(self, n: int) -> None:
        """Grow to ``n`` slots (new slots: off, free to start, never charged)."""
        m = self.on.shape[0]
        if n <= m:
            return
        self.on = np.concatenate([self.on, np.zeros(n - m, dtype=np.bool_)])
        self.on_until_s = np.concatenate([self.on_until_s, np.zeros(n - m)])
        self.off_until_s = np.concatenate([self.off_until_s, np.zeros(n - m)])
        self.last_on_s = np.concatenate([self.last_on_s, np.full(n - m, -np.inf)])

    def reset(self, slots: NDArray[np.bool_]) -> None:
        """Forget the history of ``slots`` (a new session there)."""
        m = slots.shape[0]
        self.on[:m][slots] = False
        self.on_until_s[:m][slots] = 0.0
        self.off_until_s[:m][slots] = 0.0
        self.last_on_s[:m][slots] = -np.inf

    def view(self, n: int, now_s: float) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
        """``(held_off, held_on)`` for the first ``n`` slots at ``now_s``."""
        self.size(n)
        on = self.on[:n]
        held_off = (self.off_until_s[:n] > now_s) & ~on
        held_on = (self.on_until_s[:n] > now_s) & on
        return held_off, held_on

    def waited_s(self, slots: NDArray[np.intp], now_s: float) -> NDArray[np.float64]:
        """Seconds since ``slots`` last charged (0 while on; at most 10 days)."""
        waited = np.minimum(now_s - self.last_on_s[slots], 864_000.0)
        return np.where(self.on[slots], 0.0, waited)

    def update(self, p: NDArray[np.float64], min_kw: NDArray[np.float64], now_s: float) -> None:
        """Record the setpoints ``p`` sent at ``now_s``."""
        n = p.shape[0]
        self.size(n)
        on_now = (p > _EPS) & (p >= min_kw - 1e-6)
        was = self.on[:n]
        np.copyto(self.on_until_s[:n], now_s + self.min_on_s, where=on_now & ~was)
        np.copyto(self.off_until_s[:n], now_s + self.min_off_s, where=was & ~on_now)
        np.copyto(self.last_on_s[:n], now_s, where=on_now)
        self.on[:n] = on_now
