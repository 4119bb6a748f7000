"""DSO limits and the book that turns them into per-group caps.

A :class:`DsoLimit` caps the net import (kW, positive = import) of a target — a site, a
feeder (a transformer area is a feeder here) or the whole fleet — over ``[start, end)``;
with ``direction=EXPORT`` it caps the net export (kW ≥ 0, V2G) of a site instead (export
caps exist per site only: the fleet's export is bounded through its sites).
The :class:`LimitBook` holds the limits currently known, keyed by event id (a repeated
event id replaces the earlier limit, a cancellation removes it), and answers:

* :meth:`LimitBook.caps_at` — the caps in force at one instant (fast loop), and
* :meth:`LimitBook.caps_for_steps` — per plan step, the tightest cap of every limit that
  overlaps the step (slow loop; conservative so a limit starting mid-step still holds);
* :meth:`LimitBook.next_change` / :meth:`LimitBook.changes_between` — the instants at which
  the caps in force change because a known window opens or closes, so that no setpoint lease
  is issued past a cap change it does not respect (a cancellation is not known in advance:
  the service publishes at once when one arrives).

Invariant: ``caps_at(t)`` is constant on every interval between two consecutive instants
of :meth:`LimitBook.changes_between` (the book itself not being edited meanwhile).

Caps combine the structural limits of the :class:`~aggregator.topology.Topology` (site
connection, feeder rating, fleet) with the DSO limits by taking the minimum: a DSO limit
can only tighten, never relax, a physical limit. When two DSO limits overlap on one
target, the tighter one wins whatever their priority; priority is kept for reporting and
for the adapters that must decide which event to acknowledge.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from types import EllipsisType

import numpy as np
from numpy.typing import NDArray

from aggregator.errors import Issue
from aggregator.topology import Topology

__all__ = ["Caps", "Direction", "DsoLimit", "LimitBook", "TargetType"]


class TargetType(StrEnum):
    SITE = "site"
    FEEDER = "feeder"
    FLEET = "fleet"


class Direction(StrEnum):
    """What a limit caps: net import (the default) or net export (V2G, sites only)."""

    IMPORT = "import"
    EXPORT = "export"


@dataclass(frozen=True, slots=True)
class DsoLimit:
    """A cap on net import (or, ``direction=EXPORT``, net export) of one target over a time
    window (UTC, end exclusive)."""

    event_id: str
    target_type: TargetType
    target_id: str
    start: datetime
    end: datetime
    limit_kw: float
    priority: int = 0
    source: str = "rest"
    direction: Direction = Direction.IMPORT

    def validate(self, topology: Topology | None = None) -> list[Issue]:
        issues: list[Issue] = []
        ids = (self.event_id,)
        if not self.event_id:
            issues.append(Issue("event_id", "must not be empty"))
        for name, ts in (("start", self.start), ("end", self.end)):
            if ts.tzinfo is None or ts.utcoffset() != timedelta(0):
                issues.append(Issue(name, "must be a UTC-aware datetime", ids))
        if (
            self.start.tzinfo is not None
            and self.end.tzinfo is not None
            and (self.end <= self.start)
        ):
            issues.append(Issue("end", "must be after start", ids))
        if not math.isfinite(self.limit_kw):
            issues.append(Issue("limit_kw", "must be finite", ids))
        issues += self.direction_issues()
        if topology is not None:
            if self.target_type is TargetType.SITE and self.target_id not in topology.site_index:
                issues.append(Issue("target_id", f"unknown site {self.target_id!r}", ids))
            if (
                self.target_type is TargetType.FEEDER
                and self.target_id not in topology.feeder_index
            ):
                issues.append(Issue("target_id", f"unknown feeder {self.target_id!r}", ids))
        return issues

    def direction_issues(self) -> list[Issue]:
        """An export cap must target a site and be ≥ 0 kW (0 = no export)."""
        if self.direction is not Direction.EXPORT:
            return []
        ids = (self.event_id,)
        out: list[Issue] = []
        if self.target_type is not TargetType.SITE:
            out.append(
                Issue(
                    field="target_type",
                    code="export_needs_site",
                    ids=ids,
                    message="export caps apply to sites only (a feeder's or the fleet's "
                    "export is bounded through its sites)",
                )
            )
        if math.isfinite(self.limit_kw) and self.limit_kw < 0:
            out.append(
                Issue(
                    field="limit_kw",
                    code="negative_export_cap",
                    ids=ids,
                    message="an export cap must be >= 0 kW (0 = no export)",
                )
            )
        return out

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return self.start < end and start < self.end


@dataclass(frozen=True, slots=True)
class Caps:
    """Net-import caps (kW) for sites, feeders and the fleet; ``export`` is symmetric for sites.

    For one instant the arrays have shapes ``(S,)``, ``(F,)`` and ``()``; for a plan they
    have a trailing time axis: ``(S, T)``, ``(F, T)``, ``(T,)``.
    """

    site_kw: NDArray[np.float64]
    feeder_kw: NDArray[np.float64]
    fleet_kw: NDArray[np.float64]
    site_export_kw: NDArray[np.float64]


class LimitBook:
    """The DSO limits currently known, by event id."""

    def __init__(self, topology: Topology, limits: Iterable[DsoLimit] = ()) -> None:
        self._topology = topology
        self._limits: dict[str, DsoLimit] = {}
        self.version = 0
        for lim in limits:
            self.add(lim)

    def add(self, limit: DsoLimit) -> None:
        """Add or replace (same event id) a limit. The caller validated it."""
        self._limits[limit.event_id] = limit
        self.version += 1

    def cancel(self, event_id: str) -> bool:
        """Remove a limit; ``True`` when it existed."""
        existed = self._limits.pop(event_id, None) is not None
        if existed:
            self.version += 1
        return existed

    def expire(self, now: datetime) -> int:
        """Drop limits that ended before ``now``; returns how many."""
        old = [k for k, v in self._limits.items() if v.end <= now]
        for k in old:
            del self._limits[k]
        if old:
            self.version += 1
        return len(old)

    @property
    def limits(self) -> Sequence[DsoLimit]:
        return tuple(self._limits.values())

    def next_change(self, after: datetime) -> datetime | None:
        """The first instant strictly after ``after`` at which a known window opens or
        closes (the caps in force may change there); ``None`` when none lies ahead."""
        best: datetime | None = None
        for lim in self._limits.values():
            for t in (lim.start, lim.end):
                if t > after and (best is None or t < best):
                    best = t
        return best

    def changes_between(self, start: datetime, end: datetime) -> list[datetime]:
        """Sorted instants ``t`` with ``start < t < end`` at which a known window opens or
        closes."""
        found = {
            t for lim in self._limits.values() for t in (lim.start, lim.end) if start < t < end
        }
        return sorted(found)

    def caps_at(self, t: datetime) -> Caps:
        """Caps in force at instant ``t``."""
        return self._caps([lim for lim in self._limits.values() if lim.start <= t < lim.end])

    def caps_for_steps(self, start: datetime, step_s: float, steps: int) -> Caps:
        """Per-step caps over ``steps`` steps of ``step_s`` seconds from ``start``."""
        topo = self._topology
        site = np.repeat(topo.site_limit_kw[:, None], steps, axis=1)
        feeder = np.repeat(topo.feeder_limit_kw[:, None], steps, axis=1)
        fleet = np.full(steps, topo.fleet_limit_kw, dtype=np.float64)
        export = np.repeat(topo.site_limit_kw[:, None], steps, axis=1)
        step = timedelta(seconds=step_s)
        for lim in self._limits.values():
            first = max(0, math.floor((lim.start - start) / step))
            last = min(steps, math.ceil((lim.end - start) / step))
            if last <= first:
                continue
            sl = slice(first, last)
            self._apply(lim, site, feeder, fleet, export, sl)
        return Caps(site, feeder, fleet, export)

    def _caps(self, active: Sequence[DsoLimit]) -> Caps:
        topo = self._topology
        site = topo.site_limit_kw.copy()
        feeder = topo.feeder_limit_kw.copy()
        fleet = np.array(topo.fleet_limit_kw, dtype=np.float64)
        export = topo.site_limit_kw.copy()
        for lim in active:
            self._apply(lim, site, feeder, fleet, export, ...)
        return Caps(site, feeder, fleet, export)

    def _apply(
        self,
        lim: DsoLimit,
        site: NDArray[np.float64],
        feeder: NDArray[np.float64],
        fleet: NDArray[np.float64],
        export: NDArray[np.float64],
        sl: slice | EllipsisType,
    ) -> None:
        topo = self._topology
        if lim.direction is Direction.EXPORT:  # sites only (validated)
            j = topo.site_index.get(lim.target_id)
            if j is not None and lim.target_type is TargetType.SITE:
                export[j, sl] = np.minimum(export[j, sl], max(lim.limit_kw, 0.0))
            return
        if lim.target_type is TargetType.SITE:
            i = topo.site_index.get(lim.target_id)
            if i is not None:
                site[i, sl] = np.minimum(site[i, sl], lim.limit_kw)
        elif lim.target_type is TargetType.FEEDER:
            i = topo.feeder_index.get(lim.target_id)
            if i is not None:
                feeder[i, sl] = np.minimum(feeder[i, sl], lim.limit_kw)
        else:
            fleet[sl] = np.minimum(fleet[sl], lim.limit_kw)
