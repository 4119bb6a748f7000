"""Where EVSEs sit: feeders, sites and their connection limits.

A :class:`Topology` is the static frame the fleet state, the planner and the dispatcher
share. Sites belong to exactly one feeder; every EVSE belongs to exactly one site. Power
limits are in kW, positive = import from the grid. A site's connection limit holds in
both directions (import ≤ limit, export ≤ limit); a feeder's limit is its transformer or
cable rating as seen by gridflex.

A site also has a nominal voltage per phase (``voltage_v``, default 230 V: what turns an
AC car's minimum current into kW) and optional per-phase current limits
(``phase_limits_a``, A on L1, L2, L3; ``None`` = only the kW connection limit). A
three-phase car loads each phase with a third of its power; a single-phase car loads its
phase, or every phase when its phase is unknown (the worst case).

Invariants (checked by :meth:`Topology.validate`): ids are unique and non-empty, every
site names a known feeder, every limit is finite and positive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from aggregator.errors import Issue

__all__ = ["Feeder", "Site", "Topology"]


@dataclass(frozen=True, slots=True)
class Feeder:
    """A distribution feeder (or transformer area) that gridflex manages as one partition."""

    feeder_id: str
    limit_kw: float
    name: str = ""


@dataclass(frozen=True, slots=True)
class Site:
    """A charging site: a grid connection point with a connection limit."""

    site_id: str
    feeder_id: str
    connection_limit_kw: float
    bus: str | None = None
    csms_id: str = "csms"
    voltage_v: float = 230.0
    phase_limits_a: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class Topology:
    """Feeders and sites with index maps for array code."""

    feeders: tuple[Feeder, ...]
    sites: tuple[Site, ...]
    fleet_limit_kw: float = field(default=math.inf)

    @cached_property
    def site_index(self) -> dict[str, int]:
        return {s.site_id: i for i, s in enumerate(self.sites)}

    @cached_property
    def feeder_index(self) -> dict[str, int]:
        return {f.feeder_id: i for i, f in enumerate(self.feeders)}

    @cached_property
    def site_feeder(self) -> NDArray[np.intp]:
        """Feeder index of each site (length = number of sites)."""
        idx = self.feeder_index
        return np.array([idx.get(s.feeder_id, 0) for s in self.sites], dtype=np.intp)

    @cached_property
    def site_limit_kw(self) -> NDArray[np.float64]:
        return np.array([s.connection_limit_kw for s in self.sites], dtype=np.float64)

    @cached_property
    def site_voltage_v(self) -> NDArray[np.float64]:
        """Nominal voltage per phase of each site (V)."""
        return np.array([s.voltage_v for s in self.sites], dtype=np.float64)

    @cached_property
    def site_phase_cap_kw(self) -> NDArray[np.float64] | None:
        """Per-phase import cap of each site (sites × 3, kW; inf where none), or ``None``
        when no site has per-phase limits."""
        if all(s.phase_limits_a is None for s in self.sites):
            return None
        caps = np.full((len(self.sites), 3), np.inf)
        for i, s in enumerate(self.sites):
            if s.phase_limits_a is not None:
                caps[i] = np.asarray(s.phase_limits_a, dtype=np.float64) * s.voltage_v / 1000.0
        return caps

    @cached_property
    def feeder_limit_kw(self) -> NDArray[np.float64]:
        return np.array([f.limit_kw for f in self.feeders], dtype=np.float64)

    @property
    def n_sites(self) -> int:
        return len(self.sites)

    @property
    def n_feeders(self) -> int:
        return len(self.feeders)

    def validate(self) -> list[Issue]:
        """Every problem with this topology, as values."""
        issues: list[Issue] = []
        if not self.feeders:
            issues.append(Issue("feeders", "at least one feeder is required"))
        if not self.sites:
            issues.append(Issue("sites", "at least one site is required"))
        seen: set[str] = set()
        for f in self.feeders:
            if not f.feeder_id:
                issues.append(Issue("feeders.feeder_id", "must not be empty"))
            elif f.feeder_id in seen:
                issues.append(Issue("feeders.feeder_id", "duplicate id", (f.feeder_id,)))
            seen.add(f.feeder_id)
            if not (math.isfinite(f.limit_kw) and f.limit_kw > 0):
                issues.append(Issue("feeders.limit_kw", "must be finite and > 0", (f.feeder_id,)))
        seen_sites: set[str] = set()
        for s in self.sites:
            if not s.site_id:
                issues.append(Issue("sites.site_id", "must not be empty"))
            elif s.site_id in seen_sites:
                issues.append(Issue("sites.site_id", "duplicate id", (s.site_id,)))
            seen_sites.add(s.site_id)
            if s.feeder_id not in seen:
                issues.append(
                    Issue("sites.feeder_id", f"unknown feeder {s.feeder_id!r}", (s.site_id,))
                )
            if not (math.isfinite(s.connection_limit_kw) and s.connection_limit_kw > 0):
                issues.append(
                    Issue("sites.connection_limit_kw", "must be finite and > 0", (s.site_id,))
                )
            if not (math.isfinite(s.voltage_v) and s.voltage_v > 0):
                issues.append(
                    Issue(
                        field="sites.voltage_v",
                        code="voltage",
                        ids=(s.site_id,),
                        message="must be finite and > 0 (V per phase)",
                    )
                )
            if s.phase_limits_a is not None and (
                len(s.phase_limits_a) != 3 or not all(a > 0 for a in s.phase_limits_a)
            ):
                issues.append(
                    Issue(
                        field="sites.phase_limits_a",
                        code="phase_limits",
                        ids=(s.site_id,),
                        message="need three limits > 0 (A on L1, L2, L3)",
                    )
                )
        if not (self.fleet_limit_kw > 0):
            issues.append(Issue("fleet_limit_kw", "must be > 0"))
        return issues
