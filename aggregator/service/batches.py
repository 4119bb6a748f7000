"""Setpoint batches: which EVSEs each CSMS's batch names, for how long, and the leases.

A batch is a **lease** per EVSE (its setpoint until ``valid_until``, then its failsafe
value, LPC semantics): the CSMS keeps an EVSE's last lease until a newer batch names it.
This module holds what the service must remember about the leases it (or the replica
before it) issued, and assembles the batches.

Invariants:

* **no lease outlives a known cap change it does not respect**: ``valid_until`` is
  ``now + validity`` unless, at some instant ``t`` in between where a known limit window
  opens or closes, the setpoints would break a cap in force from ``t``; then it is the first
  such ``t`` (the failsafe values respect every cap over the whole failsafe period, so the
  lapse is safe), see :func:`lease_end`;
* **a batch names every EVSE the previous batch of that CSMS named, until that EVSE's lease
  expired**: an EVSE whose session ended (or that the previous owner of a feeder leased,
  :meth:`Leases.seed`) is named at 0 kW with failsafe 0 until the last lease it got with a
  session has expired, so the batch in force replaces the old lease;
* a seeded lease's power counts against the caps until a batch of ours for its CSMS has
  replaced it (:meth:`Leases.pending_kw`);
* the per-CSMS grouping of slots is computed once per change of the named set (session
  start, end, lease expiry), never per signal: a dispatch only slices arrays.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from aggregator.dispatch import DispatchFrame
from aggregator.fleet import FleetState
from aggregator.interfaces import SetpointSink
from aggregator.limits import Caps, LimitBook
from aggregator.messages import SetpointBatch
from aggregator.topology import Topology

__all__ = ["CsmsGroup", "Leases", "lease_end", "publish_batches", "respects_caps"]

_TOL_KW = 1e-6


def respects_caps(p: NDArray[np.float64], frame: DispatchFrame, caps: Caps) -> bool:
    """Whether setpoints ``p`` (per slot) respect every cap of ``caps``."""
    n_sites, n_feeders = caps.site_kw.shape[0], caps.feeder_kw.shape[0]
    site = np.bincount(frame.slot_site, weights=p, minlength=n_sites)
    if np.any(site > caps.site_kw + _TOL_KW) or np.any(-site > caps.site_export_kw + _TOL_KW):
        return False
    feeder = np.bincount(frame.slot_feeder, weights=p, minlength=n_feeders)
    if np.any(feeder > caps.feeder_kw + _TOL_KW):
        return False
    return float(p.sum()) <= float(caps.fleet_kw) + _TOL_KW


def lease_end(
    now: datetime,
    validity_s: float,
    p: NDArray[np.float64],
    frame: DispatchFrame,
    limits: LimitBook,
) -> datetime:
    """``valid_until`` for setpoints ``p`` issued at ``now`` (see the module docstring)."""
    end = now + timedelta(seconds=validity_s)
    for t in limits.changes_between(now, end):
        if not respects_caps(p, frame, limits.caps_at(t)):
            return t
    return end


def publish_batches(
    sink: SetpointSink,
    groups: dict[str, CsmsGroup],
    p: NDArray[np.float64],
    failsafe: NDArray[np.float64],
    seq: Counter[str],
    *,
    now: datetime,
    valid_until: datetime,
    source_ts: datetime | None,
) -> dict[str, CsmsGroup]:
    """One batch per CSMS to ``sink``; returns the groups whose batch was delivered (a sink
    may return ``False`` from ``publish``: a closed gate that dropped the batch).

    Sequence numbers are per CSMS, strictly increasing and never below the issue time in
    epoch milliseconds: a restarted service or the replica that takes a feeder over
    continues above every sequence number sent before.
    """
    publish: Callable[[SetpointBatch], object] = sink.publish
    floor_seq = int(now.timestamp() * 1000)
    delivered: dict[str, CsmsGroup] = {}
    for cs, g in groups.items():
        seq[cs] = max(seq[cs] + 1, floor_seq)
        power = p[g.slots].tolist()
        fs = failsafe[g.slots].tolist()
        evse_ids = g.evse_ids
        if g.ghost_ids:
            zeros = [0.0] * len(g.ghost_ids)
            evse_ids, power, fs = evse_ids + g.ghost_ids, power + zeros, fs + zeros
        # trusted, internally built data: construct without re-validating 10k floats
        batch = SetpointBatch.model_construct(
            csms_id=cs,
            seq=seq[cs],
            issued_at=now,
            valid_until=valid_until,
            source_ts=source_ts,
            evse_ids=evse_ids,
            power_kw=power,
            failsafe_kw=fs,
        )
        if publish(batch) is not False:
            delivered[cs] = g
    return delivered


@dataclass(frozen=True, slots=True)
class CsmsGroup:
    """The slots one CSMS's batch names (fleet slots, then seeded EVSEs not in the fleet)."""

    slots: NDArray[np.intp]
    evse_ids: list[str]
    ghost_ids: list[str]  # named at 0 kW, failsafe 0


class Leases:
    """What the service remembers about the leases in force at the CSMSs.

    An EVSE stays named while it has a session, while the last lease it got with a session
    (or a seeded one) is valid, and until one batch has named it at 0 kW with failsafe 0
    after its session ended: an EVSE whose lease lapsed holds its last failsafe value for
    the whole failsafe duration, so it must be zeroed, not forgotten.
    """

    def __init__(self, failsafe_duration_s: float, failsafe_kw: float) -> None:
        self.failsafe_duration_s = failsafe_duration_s
        self.failsafe_kw = failsafe_kw
        # per fleet slot: valid_until (POSIX s) of the last batch naming it with a session
        self.until_s: NDArray[np.float64] = np.zeros(0)
        # per fleet slot: the last batch naming it said 0 kW, failsafe 0 (no session)
        self.zeroed: NDArray[np.bool_] = np.ones(0, dtype=np.bool_)
        # EVSEs another replica leased that are not in our fleet: csms -> evse -> until_s
        # (named at 0 kW / failsafe 0 until zeroed once and their lease has expired)
        self._ghosts: dict[str, dict[str, float]] = {}
        self._ghosts_zeroed: set[tuple[str, str]] = set()
        # seeded leases not yet replaced by a batch of ours: (csms, evse) -> (kW, until_s)
        self._pending: dict[tuple[str, str], tuple[float, float]] = {}
        self.version = 0  # moves when the seeded set changes
        self._ids = np.zeros(0, dtype=object)
        self._ids_n = -1
        self._groups: dict[str, CsmsGroup] = {}
        self._groups_key: tuple[int, int] | None = None
        self._named: NDArray[np.bool_] = np.zeros(0, dtype=np.bool_)

    # ------------------------------------------------------------------ seeding

    def seed(
        self,
        fleet: FleetState,
        csms_id: str,
        evse_ids: list[str],
        power_kw: list[float],
        valid_until: datetime,
        now: datetime,
        failsafe_kw: list[float] | None = None,
    ) -> int:
        """Take over leases another replica issued (its last batch for ``csms_id``);
        returns how many are still in force (as a lease, or lapsed into their failsafe).

        In force until replaced: the setpoint while the lease runs, then the failsafe value
        (the configured failsafe power when not given) for the failsafe duration.
        """
        until = valid_until.timestamp()
        now_s = now.timestamp()
        if until + self.failsafe_duration_s <= now_s:
            return 0
        lapsed = until <= now_s
        fs = failsafe_kw if failsafe_kw is not None else [self.failsafe_kw] * len(evse_ids)
        self._grow(fleet.n_slots)
        ghosts = self._ghosts.setdefault(csms_id, {})
        for evse, kw, f in zip(evse_ids, power_kw, fs, strict=True):
            slot = fleet.slot_of.get(evse)
            if slot is not None and fleet.csms[slot] == csms_id:
                self.until_s[slot] = max(self.until_s[slot], until)
                self.zeroed[slot] = False
            else:
                fleet.bind(evse, csms_id)  # keep its owner: a foreign claim is refused
                ghosts[evse] = max(ghosts.get(evse, 0.0), until)
                self._ghosts_zeroed.discard((csms_id, evse))
            held = max(f, 0.0) if lapsed else max(kw, f, 0.0)
            if held > 0.0:
                self._pending[(csms_id, evse)] = (float(held), until + self.failsafe_duration_s)
        self.version += 1
        return len(evse_ids)

    def pending_kw(
        self, fleet: FleetState, topology: Topology, now_s: float
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], float]:
        """Seeded power not yet replaced: per site, per feeder and fleet-wide (kW).

        An EVSE in the fleet counts at its site; one whose site is unknown here counts at
        every site (and feeder) of its CSMS, since it may be at any of them.
        """
        site_kw = np.zeros(topology.n_sites)
        feeder_kw = np.zeros(topology.n_feeders)
        fleet_kw = 0.0
        site_feeder = topology.site_feeder
        for (cs, evse), (kw, until) in self._pending.items():
            if until <= now_s:
                continue
            fleet_kw += kw
            slot = fleet.slot_of.get(evse)
            if slot is not None:
                site = int(fleet.site[slot])
                site_kw[site] += kw
                feeder_kw[site_feeder[site]] += kw
                continue
            sites = np.array([s.csms_id == cs for s in topology.sites], dtype=np.bool_)
            site_kw[sites] += kw
            feeder_kw[np.unique(site_feeder[sites])] += kw
        return site_kw, feeder_kw, fleet_kw

    # ------------------------------------------------------------------ grouping

    def _grow(self, n: int) -> None:
        have = self.until_s.shape[0]
        if have < n:
            size = max(n, 2 * have)
            until = np.zeros(size)
            until[:have] = self.until_s
            zeroed = np.ones(size, dtype=np.bool_)
            zeroed[:have] = self.zeroed
            self.until_s, self.zeroed = until, zeroed

    def groups(self, fleet: FleetState, now_s: float) -> dict[str, CsmsGroup]:
        """Per CSMS, what its batch names now (cached while the named set is unchanged)."""
        n = fleet.n_slots
        self._grow(n)
        until = self.until_s[:n]
        named = fleet.active[:n] | (until > now_s) | ((until > 0.0) & ~self.zeroed[:n])
        done = [
            (cs, e)
            for cs, g in self._ghosts.items()
            for e, u in g.items()
            if u <= now_s and (cs, e) in self._ghosts_zeroed
        ]
        if done:
            for cs, e in done:
                del self._ghosts[cs][e]
                self._ghosts_zeroed.discard((cs, e))
            self._ghosts = {cs: g for cs, g in self._ghosts.items() if g}
            self.version += 1
        key = (fleet.version, self.version)
        if key == self._groups_key and np.array_equal(named, self._named):
            return self._groups
        if self._ids_n != n:
            self._ids = np.array(fleet.evse_ids[:n], dtype=object)
            self._ids_n = n
        csms = np.array(fleet.csms[:n], dtype=object)  # once per change of the named set
        out: dict[str, CsmsGroup] = {}
        idx = np.flatnonzero(named)
        if idx.size:
            names, inverse = np.unique(csms[idx], return_inverse=True)
            order = np.argsort(inverse, kind="stable")
            bounds = np.searchsorted(inverse[order], np.arange(len(names) + 1))
            for j, cs in enumerate(names.tolist()):
                ix = idx[order[bounds[j] : bounds[j + 1]]]
                out[str(cs)] = CsmsGroup(ix, self._ids[ix].tolist(), [])
        for cs, g in self._ghosts.items():
            ghosts = [e for e in g if e not in fleet.slot_of]
            if not ghosts:
                continue
            have = out.get(cs)
            if have is None:
                out[cs] = CsmsGroup(np.zeros(0, dtype=np.intp), [], ghosts)
            else:
                out[cs] = CsmsGroup(have.slots, have.evse_ids, ghosts)
        self._groups, self._groups_key, self._named = out, key, named
        return out

    def published(
        self,
        fleet: FleetState,
        delivered: dict[str, CsmsGroup],
        valid_until: datetime,
        now_s: float,
    ) -> None:
        """The batches of ``delivered`` (CSMS -> what its batch named) went out: their
        active slots hold a lease until ``valid_until``, their slots without a session and
        their seeded EVSEs are zeroed, and their seeded leases are replaced. A batch the
        sink did not deliver (a closed gate) changes nothing here."""
        n = fleet.n_slots
        self._grow(n)
        active = fleet.active[:n]
        until = valid_until.timestamp()
        for cs, g in delivered.items():
            ix = g.slots
            live = active[ix]
            self.until_s[ix[live]] = until
            self.zeroed[ix] = ~live  # named without a session: 0 kW, failsafe 0
            if g.ghost_ids:
                self._ghosts_zeroed.update((cs, e) for e in g.ghost_ids)
        if self._pending:
            before = len(self._pending)
            self._pending = {
                k: v for k, v in self._pending.items() if k[0] not in delivered and v[1] > now_s
            }
            if len(self._pending) != before:
                self.version += 1
