"""The charging-station area controller's decisions (CSAC): per-EVSE targets under caps.

:class:`Csac` applies setpoint batches for its CSMS id through the core's reference CSMS
(:class:`~aggregator.sim.csms_reference.ReferenceCsms`: one IEC 63380-1 LPC state machine
per EVSE, the batch a lease until ``valid_until``, then the batch's failsafe for the
failsafe duration, then unlimited/autonomous) and turns it into what each open session
may draw now:

==============  ==========================================================================
mode            per-EVSE allowance (kW)
==============  ==========================================================================
upstream        the leased setpoint of the last batch (``now < valid_until``)
failsafe        the failsafe the last batch carried for that EVSE (or the default)
autonomous      the session's own maximum
==============  ==========================================================================

Then, **always**, the site's sessions are balanced locally under the site cap less what
the site's idle EVSEs may draw on their TxDefaultProfile (a car may arrive between two
cycles)
(:func:`balance`: water-filling — every session gets the same share, a session that needs
less gives the rest to the others): the sum of positive allowances of a site never
exceeds its cap, whatever upstream sent. V2G (negative) setpoints pass through in
upstream mode and count as 0 against the cap (export may stop any time).

A batch's failsafe values survive an edge restart (:meth:`Csac.restore`): after a restart
with upstream silent the edge holds the restored failsafes, not the default.
The clock is passed in, so 48 h of autonomy run on a simulated clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from aggregator.interfaces import Clock
from aggregator.messages import SetpointBatch
from aggregator.sim.csms_reference import ReferenceCsms

__all__ = ["ActiveSession", "Csac", "Mode", "SiteSpec", "balance"]

Mode = Literal["init", "upstream", "failsafe", "autonomous"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteSpec:
    """A site behind the edge: its cap (kW) on net import and its stations."""

    site_id: str
    feeder_id: str
    cap_kw: float
    station_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ActiveSession:
    """An open session as the balancer sees it."""

    evse_id: str
    site_id: str
    max_power_kw: float


def balance(allow_kw: Mapping[str, float], cap_kw: float) -> dict[str, float]:
    """Water-fill ``cap_kw`` over the positive allowances; negatives pass unchanged.

    Invariant: the sum of positive results ≤ ``max(cap_kw, 0)`` and each result ≤ its
    allowance.
    """
    out = {k: v for k, v in allow_kw.items() if v <= 0.0}
    pos = sorted(((v, k) for k, v in allow_kw.items() if v > 0.0))
    left = max(cap_kw, 0.0)
    n = len(pos)
    for i, (v, k) in enumerate(pos):
        share = left / (n - i)
        give = min(v, share)
        out[k] = give
        left -= give
    return out


class Csac:
    """Per-EVSE targets for the open sessions of one CSMS's sites, upstream or not."""

    def __init__(
        self,
        csms_id: str,
        sites: Sequence[SiteSpec],
        clock: Clock,
        *,
        failsafe_duration_s: float = 7_200.0,
        heartbeat_timeout_s: float = 120.0,
        default_failsafe_kw: float = 4.2,
    ) -> None:
        self.csms_id = csms_id
        self.sites = {s.site_id: s for s in sites}
        self.clock = clock
        self.failsafe_duration_s = failsafe_duration_s
        self.default_failsafe_kw = default_failsafe_kw
        self.ref = ReferenceCsms(
            csms_id,
            clock,
            heartbeat_timeout_s=heartbeat_timeout_s,
            failsafe_duration_s=failsafe_duration_s,
            default_failsafe_kw=default_failsafe_kw,
        )
        self.valid_until: datetime | None = None
        self.failsafe_kw: dict[str, float] = {}
        self.restored = False

    def apply(self, batch: SetpointBatch) -> str | None:
        """Apply a batch; returns why it was dropped (``None``: applied)."""
        reason = self.ref.apply(batch)
        if reason is None:
            self.valid_until = batch.valid_until
            self.failsafe_kw.update(zip(batch.evse_ids, batch.failsafe_kw, strict=True))
            self.restored = False
        return reason

    def restore(self, batch: SetpointBatch) -> None:
        """After a restart: hold the failsafes of the last batch applied before it."""
        self.failsafe_kw.update(zip(batch.evse_ids, batch.failsafe_kw, strict=True))
        self.valid_until = batch.valid_until
        self.ref.last_seq = batch.seq  # a replayed older batch stays dropped
        self.restored = True

    def mode(self, now: datetime) -> Mode:
        vu = self.valid_until
        if vu is None:
            return "init"
        if now < vu and not self.restored:
            return "upstream"
        if now < vu + timedelta(seconds=self.failsafe_duration_s):
            return "failsafe"
        return "autonomous"

    def _allow(self, s: ActiveSession, now: datetime, mode: Mode) -> float:
        if mode == "failsafe" or (mode == "init" and s.evse_id in self.failsafe_kw):
            return min(self.failsafe_kw.get(s.evse_id, self.default_failsafe_kw), s.max_power_kw)
        if mode == "autonomous":
            return s.max_power_kw
        limit = self.ref.limit_kw(s.evse_id, now)  # the lease (or init's failsafe)
        return s.max_power_kw if limit is None else min(limit, s.max_power_kw)

    def targets(
        self,
        sessions: Sequence[ActiveSession],
        now: datetime | None = None,
        *,
        reserved_kw: Mapping[str, float] | None = None,
    ) -> dict[str, float]:
        """Per-EVSE kW for ``sessions``, balanced under every site cap less
        ``reserved_kw[site]`` (what idle EVSEs may draw on their TxDefaultProfile if a car
        arrives before the next cycle)."""
        t = self.clock.now() if now is None else now
        mode = self.mode(t)
        by_site: dict[str, dict[str, float]] = {}
        for s in sessions:
            by_site.setdefault(s.site_id, {})[s.evse_id] = self._allow(s, t, mode)
        out: dict[str, float] = {}
        for site_id, allow in by_site.items():
            site = self.sites.get(site_id)
            cap = site.cap_kw if site is not None else 0.0
            cap -= (reserved_kw or {}).get(site_id, 0.0)
            out.update(balance(allow, cap))
        return out

    def station_limits(
        self, evse_ids_by_station: Mapping[str, Sequence[str]]
    ) -> dict[str, tuple[float, float]]:
        """Per station: (its share of the site cap, its failsafe) in kW. The share is the
        site cap split evenly over the site's stations (so the station maxima alone keep
        the site under its cap); the failsafe is the lowest one its EVSEs were given."""
        out: dict[str, tuple[float, float]] = {}
        for site in self.sites.values():
            n = max(len(site.station_ids), 1)
            for sid in site.station_ids:
                evses = evse_ids_by_station.get(sid, ())
                fs = [self.failsafe_kw[e] for e in evses if e in self.failsafe_kw]
                out[sid] = (site.cap_kw / n, min(fs) if fs else self.default_failsafe_kw)
        return out
