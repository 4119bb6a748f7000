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

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from aggregator.dispatch import DispatchFrame
from aggregator.fleet import FleetState
from aggregator.limits import Caps, LimitBook
from aggregator.topology import Topology

__all__ = ["CsmsGroup", "Leases", "lease_end", "respects_caps"]

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


@dataclass(frozen=True, slots=True)
class CsmsGroup:
    """The slots one CSMS's batch names (fleet slots, then seeded EVSEs not in the fleet)."""

    slots: NDArray[np.intp]
    evse_ids: list[str]
    ghost_ids: list[str]  # named at 0 kW, failsafe 0


class Leases:
    """What the service remembers about the leases in force at the CSMSs."""

    def __init__(self) -> None:
        # per fleet slot: valid_until (POSIX s) of the last batch naming it with a session
        self.until_s: NDArray[np.float64] = np.zeros(0)
        # EVSEs another replica leased that are not in our fleet: csms -> evse -> until_s
        self._ghosts: dict[str, dict[str, float]] = {}
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
    ) -> int:
        """Take over leases another replica issued; returns how many are still in force."""
        until = valid_until.timestamp()
        if until <= now.timestamp():
            return 0
        self._grow(fleet.n_slots)
        ghosts = self._ghosts.setdefault(csms_id, {})
        for evse, kw in zip(evse_ids, power_kw, strict=True):
            slot = fleet.slot_of.get(evse)
            if slot is not None and fleet.csms[slot] == csms_id:
                self.until_s[slot] = max(self.until_s[slot], until)
            else:
                ghosts[evse] = max(ghosts.get(evse, 0.0), until)
            if kw > 0.0:
                self._pending[(csms_id, evse)] = (float(kw), until)
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
        if self.until_s.shape[0] < n:
            grown = np.zeros(max(n, 2 * self.until_s.shape[0]))
            grown[: self.until_s.shape[0]] = self.until_s
            self.until_s = grown

    def groups(self, fleet: FleetState, now_s: float) -> dict[str, CsmsGroup]:
        """Per CSMS, what its batch names now (cached while the named set is unchanged)."""
        n = fleet.n_slots
        self._grow(n)
        named = fleet.active[:n] | (self.until_s[:n] > now_s)
        expired_ghosts = any(u <= now_s for g in self._ghosts.values() for u in g.values())
        if expired_ghosts:
            for g in self._ghosts.values():
                for evse in [e for e, u in g.items() if u <= now_s]:
                    del g[evse]
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
        self, fleet: FleetState, csms_ids: list[str], valid_until: datetime, now_s: float
    ) -> None:
        """Batches for ``csms_ids`` went out: active slots hold a lease until
        ``valid_until``; seeded leases of these CSMSs are replaced."""
        n = fleet.n_slots
        self._grow(n)
        active = fleet.active[:n]
        self.until_s[:n][active] = valid_until.timestamp()
        if self._pending:
            done = set(csms_ids)
            before = len(self._pending)
            self._pending = {
                k: v for k, v in self._pending.items() if k[0] not in done and v[1] > now_s
            }
            if len(self._pending) != before:
                self.version += 1
