"""A simulation scenario as domain values: topology, sessions, limits, signals, settings.

Adapters parse scenario files (YAML/JSON plus CSVs) into a :class:`Scenario`;
:mod:`aggregator.sim.simulation` runs it. :meth:`Scenario.validate` returns every problem.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from aggregator.errors import Issue
from aggregator.limits import DsoLimit
from aggregator.pebc import is_utc
from aggregator.planning.request import PlanWeights
from aggregator.topology import Topology

__all__ = ["AnnouncedLimit", "Scenario", "SessionSpec", "TimeSeries", "uncontrolled_site_kw"]


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """One charging session: plugged in ``[arrival, departure)``, wants ``energy_kwh``."""

    evse_id: str
    site_id: str
    arrival: datetime
    departure: datetime
    energy_kwh: float
    max_power_kw: float
    min_power_kw: float = 0.0


@dataclass(frozen=True, slots=True)
class AnnouncedLimit:
    """A DSO limit and when the DSO sends it (``None`` = known from the start)."""

    limit: DsoLimit
    announce_at: datetime | None = None


@dataclass(frozen=True)
class TimeSeries:
    """Step-hold series: ``values[i]`` from ``times_s[i]`` (POSIX seconds, UTC)."""

    times_s: NDArray[np.float64]
    values: NDArray[np.float64]

    def at(self, t_s: float | NDArray[np.float64]) -> NDArray[np.float64]:
        i = np.clip(np.searchsorted(self.times_s, t_s, side="right") - 1, 0, len(self.values) - 1)
        return np.asarray(self.values[i], dtype=np.float64)


@dataclass(frozen=True)
class Scenario:
    """Everything one simulation needs."""

    name: str
    feeder: str
    topology: Topology
    start: datetime
    end: datetime
    step_s: float
    sessions: tuple[SessionSpec, ...]
    limits: tuple[AnnouncedLimit, ...] = ()
    frequency_hz: TimeSeries | None = None
    price_eur_per_mwh: TimeSeries | None = None
    reserve_kw: float = 0.0
    tick_s: float | None = None
    solver: str = "HIGHS"
    weights: PlanWeights = field(default_factory=PlanWeights)
    csms_of_site: dict[str, str] = field(default_factory=dict)

    @property
    def dispatch_tick_s(self) -> float:
        """Fast-loop period: explicit, else the frequency trace's step, else ``step_s``."""
        if self.tick_s is not None:
            return self.tick_s
        if self.frequency_hz is not None and len(self.frequency_hz.times_s) > 1:
            return float(max(1.0, np.median(np.diff(self.frequency_hz.times_s))))
        return self.step_s

    def validate(self) -> list[Issue]:
        issues = list(self.topology.validate())
        for name, ts in (("start", self.start), ("end", self.end)):
            if not is_utc(ts):
                issues.append(Issue(name, "must be a UTC-aware datetime"))
        if is_utc(self.start) and is_utc(self.end) and self.end <= self.start:
            issues.append(Issue("end", "must be after start"))
        if not (math.isfinite(self.step_s) and self.step_s >= 60):
            issues.append(Issue("step_s", "must be at least 60 s"))
        if self.tick_s is not None and not (0 < self.tick_s <= self.step_s):
            issues.append(Issue("tick_s", "must be in (0, step_s]"))
        if self.reserve_kw < 0:
            issues.append(Issue("reserve_kw", "must be ≥ 0"))
        sites = self.topology.site_index
        seen: dict[str, list[SessionSpec]] = {}
        for s in self.sessions:
            ids = (s.evse_id,)
            if s.site_id not in sites:
                issues.append(Issue("sessions.site_id", f"unknown site {s.site_id!r}", ids))
            if not (is_utc(s.arrival) and is_utc(s.departure)):
                issues.append(Issue("sessions.arrival", "times must be UTC-aware", ids))
            elif s.departure <= s.arrival:
                issues.append(Issue("sessions.departure", "must be after arrival", ids))
            if not (math.isfinite(s.energy_kwh) and 0 <= s.energy_kwh <= 1000):
                issues.append(Issue("sessions.energy_kwh", "must be in [0, 1000]", ids))
            if not (math.isfinite(s.max_power_kw) and 0 < s.max_power_kw <= 1000):
                issues.append(Issue("sessions.max_power_kw", "must be in (0, 1000]", ids))
            if not (math.isfinite(s.min_power_kw) and -1000 <= s.min_power_kw <= 0):
                issues.append(Issue("sessions.min_power_kw", "must be in [-1000, 0]", ids))
            seen.setdefault(s.evse_id, []).append(s)
        for evse, group in seen.items():
            group = sorted(group, key=lambda x: x.arrival)
            for a, b in itertools.pairwise(group):
                if is_utc(a.departure) and is_utc(b.arrival) and b.arrival < a.departure:
                    issues.append(Issue("sessions", "overlapping sessions on one EVSE", (evse,)))
        for al in self.limits:
            issues.extend(al.limit.validate(self.topology))
        for name, series in (("frequency", self.frequency_hz), ("prices", self.price_eur_per_mwh)):
            if series is None:
                continue
            if series.times_s.size == 0 or series.times_s.shape != series.values.shape:
                issues.append(Issue(name, "needs equal-length, non-empty times and values"))
            elif np.any(np.diff(series.times_s) <= 0):
                issues.append(Issue(name, "times must be strictly increasing"))
            elif not np.all(np.isfinite(series.values)):
                issues.append(Issue(name, "values must be finite"))
        if (
            self.frequency_hz is not None
            and self.frequency_hz.values.size
            and (np.any(self.frequency_hz.values < 45) or np.any(self.frequency_hz.values > 55))
        ):
            issues.append(Issue("frequency", "values must be within 45–55 Hz"))
        return issues


def uncontrolled_site_kw(scenario: Scenario) -> NDArray[np.float64]:
    """Site power (sites × plan steps, step mean) if every car charged at full power from
    arrival until its energy is in or it leaves — the baseline gridflex is compared with."""
    step = scenario.step_s
    start_s = scenario.start.timestamp()
    steps = max(1, math.ceil((scenario.end.timestamp() - start_s) / step))
    out = np.zeros((scenario.topology.n_sites, steps))
    index = scenario.topology.site_index
    edges = start_s + step * np.arange(steps + 1)
    for s in scenario.sessions:  # per session, once: not on any hot path
        a = s.arrival.timestamp()
        full_s = 3600.0 * s.energy_kwh / s.max_power_kw
        b = min(s.departure.timestamp(), a + full_s)
        overlap = np.clip(np.minimum(edges[1:], b) - np.maximum(edges[:-1], a), 0.0, None)
        out[index[s.site_id]] += s.max_power_kw * overlap / step
    return out
