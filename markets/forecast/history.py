"""Session history and the fleet scenarios drawn from it for a delivery day.

:class:`SessionHistory` is a table of past charging sessions in arrays (site index,
arrival/departure in POSIX seconds, energy, power range), built from
:class:`~aggregator.sim.scenario.SessionSpec` values (a CSV of past sessions or a scenario's
sessions). :func:`draw_scenarios` draws fleets for a delivery window by an empirical
*day bootstrap per site*: for each scenario and site it picks one past day of the same
weekday (any day if that weekday never occurs) and moves that day's sessions of the site to
the delivery day, including the cars that arrived the evening before and are still plugged
in.

**Common factors** (a holiday, the weather, a local event move every site at once): with
``common_share`` q each site takes, with probability q, the scenario's *anchor* day (one
past day drawn per scenario) instead of a day of its own, so two sites share a day with
probability q² and the fleet's spread grows as the sites' co-movement does.
:func:`site_coupling` measures that co-movement in the history — ρ̄, the mean correlation
between sites of their daily session counts after each site's weekday mean is taken off,
from the variance of the fleet's sum (``var Σ = Σ var · (1 + (n−1) ρ̄)``) — and q = √ρ̄
matches it (q = 0: sites independent, as a fleet of unrelated sites is).

Invariants: every session of a drawn fleet overlaps the delivery window; its duration,
energy and power range are those of a real past session; arrival < departure.
:meth:`SessionHistory.validate` returns every problem, with the session's EVSE id.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from aggregator.errors import Issue
from aggregator.sim.scenario import SessionSpec

__all__ = ["DAY_S", "Fleet", "SessionHistory", "draw_scenarios", "site_coupling"]

DAY_S = 86_400.0


@dataclass(frozen=True)
class Fleet:
    """Sessions as arrays (one row per session): what a flexibility estimate needs."""

    site: NDArray[np.intp]
    arrival_s: NDArray[np.float64]
    departure_s: NDArray[np.float64]
    energy_kwh: NDArray[np.float64]
    max_power_kw: NDArray[np.float64]
    min_power_kw: NDArray[np.float64]

    @property
    def size(self) -> int:
        return int(self.site.shape[0])

    def take(self, rows: NDArray[np.intp], shift_s: NDArray[np.float64] | float = 0.0) -> Fleet:
        """The rows ``rows``, moved in time by ``shift_s`` (one per row, or one)."""
        return Fleet(
            self.site[rows],
            self.arrival_s[rows] + shift_s,
            self.departure_s[rows] + shift_s,
            self.energy_kwh[rows],
            self.max_power_kw[rows],
            self.min_power_kw[rows],
        )


@dataclass(frozen=True)
class SessionHistory:
    """Past sessions of a pool, per site (``site_ids`` names the site indices)."""

    site_ids: tuple[str, ...]
    sessions: Fleet
    evse_ids: tuple[str, ...] = ()

    @classmethod
    def from_specs(cls, specs: Sequence[SessionSpec], site_ids: Sequence[str]) -> SessionHistory:
        """A history from session values; a session at an unknown site is kept with site
        index -1 so that :meth:`validate` names it."""
        index = {s: i for i, s in enumerate(site_ids)}
        fleet = Fleet(
            np.array([index.get(s.site_id, -1) for s in specs], dtype=np.intp),
            np.array([s.arrival.timestamp() for s in specs], dtype=np.float64),
            np.array([s.departure.timestamp() for s in specs], dtype=np.float64),
            np.array([s.energy_kwh for s in specs], dtype=np.float64),
            np.array([s.max_power_kw for s in specs], dtype=np.float64),
            np.array([s.min_power_kw for s in specs], dtype=np.float64),
        )
        return cls(tuple(site_ids), fleet, tuple(s.evse_id for s in specs))

    def validate(self) -> list[Issue]:
        f = self.sessions
        issues: list[Issue] = []

        def ids(rows: NDArray[np.intp]) -> tuple[str, ...]:
            if self.evse_ids:
                return tuple(self.evse_ids[i] for i in rows)
            return tuple(str(i) for i in rows)

        unknown = (f.site < 0) | (f.site >= len(self.site_ids))
        checks = (
            ("site_id", "unknown_site", "site not in the pool", unknown),
            (
                "departure",
                "not_after_arrival",
                "must be after arrival",
                ~(f.departure_s > f.arrival_s),
            ),
            ("energy_kwh", "negative_energy", "must be ≥ 0", ~(f.energy_kwh >= 0)),
            ("max_power_kw", "no_power", "must be > 0", ~(f.max_power_kw > 0)),
            ("min_power_kw", "min_above_zero", "must be ≤ 0", ~(f.min_power_kw <= 0)),
        )
        for field, code, text, bad in checks:
            rows = np.flatnonzero(bad)
            if rows.size:
                issues.append(
                    Issue(field=field, code=code, ids=ids(rows), message=f"{text} ({rows.size})")
                )
        if f.size == 0:
            issues.append(Issue(field="sessions", code="empty_history", message="no sessions"))
        return issues

    def days(self) -> NDArray[np.int64]:
        """The UTC day numbers (POSIX days) on which some session arrived, sorted."""
        return np.unique(np.floor(self.sessions.arrival_s / DAY_S).astype(np.int64))

    def before(self, day_start: datetime) -> SessionHistory:
        """The sessions that arrived before ``day_start`` (a back-test's training part)."""
        keep = np.flatnonzero(self.sessions.arrival_s < day_start.timestamp())
        evse = tuple(self.evse_ids[i] for i in keep) if self.evse_ids else ()
        return SessionHistory(self.site_ids, self.sessions.take(keep), evse)

    def on_day(self, day_start: datetime, length_s: float = DAY_S) -> Fleet:
        """The sessions that overlap ``[day_start, day_start + length_s)`` (as they were)."""
        s = day_start.timestamp()
        f = self.sessions
        rows = np.flatnonzero((f.arrival_s < s + length_s) & (f.departure_s > s))
        return f.take(rows)


@dataclass(frozen=True)
class _Groups:
    """Sessions per (site, past day) they overlap, sorted by group, with offsets."""

    days: NDArray[np.int64]  # the past days that can be drawn
    rows: NDArray[np.intp]  # session row per group member
    shift_day: NDArray[np.int64]  # the group's past day per member
    offsets: NDArray[np.intp]  # per group (site × len(days) + day index)
    counts: NDArray[np.intp]


def _groups(history: SessionHistory, length_s: float, offset_s: float) -> _Groups:
    """Windows ``[d·DAY + offset, … + length)``; times below are relative to ``offset_s``."""
    f = history.sessions
    arrival = f.arrival_s - offset_s
    days = np.unique(np.floor(arrival / DAY_S).astype(np.int64))
    n_days = int(days.size)
    n_sites = len(history.site_ids)
    n_span = max(1, math.ceil(length_s / DAY_S))
    first = np.floor(arrival / DAY_S).astype(np.int64)
    last = np.floor((f.departure_s - offset_s - 1e-6) / DAY_S).astype(np.int64)
    rows_l: list[NDArray[np.intp]] = []
    day_l: list[NDArray[np.int64]] = []
    # a session belongs to every window [d, d + length) it overlaps: d from first-n_span+1
    for back in range(-n_span + 1, int(np.max(last - first, initial=0)) + 1):
        d = first + back
        hit = (d <= last) & (d * DAY_S + length_s > arrival)
        rows_l.append(np.flatnonzero(hit))
        day_l.append(d[hit])
    rows = np.concatenate(rows_l) if rows_l else np.zeros(0, np.intp)
    day = np.concatenate(day_l) if day_l else np.zeros(0, np.int64)
    pos = np.searchsorted(days, day)
    at = np.minimum(pos, max(n_days - 1, 0))
    known = (pos < n_days) & (days[at] == day) & (f.site[rows] >= 0)
    rows, day, pos = rows[known], day[known], pos[known]
    key = f.site[rows].astype(np.int64) * n_days + pos
    order = np.argsort(key, kind="stable")
    counts = np.bincount(key, minlength=n_sites * n_days).astype(np.intp)
    offsets = np.zeros(n_sites * n_days, dtype=np.intp)
    offsets[1:] = np.cumsum(counts)[:-1]
    return _Groups(days, rows[order].astype(np.intp), day[order], offsets, counts)


def draw_scenarios(
    history: SessionHistory,
    day_start: datetime,
    n_scenarios: int,
    rng: np.random.Generator,
    *,
    length_s: float = DAY_S,
    common_share: float = 0.0,
) -> tuple[list[Fleet], int]:
    """``n_scenarios`` fleets for ``[day_start, day_start + length_s)`` (see module doc),
    and how many distinct past days they were drawn from.

    A past day is the window of the same length starting at the same time of day, so the
    sessions keep their time of day; only past days of the window's weekday are drawn when
    there are any; a site is drawn on one past day for the whole window; with
    ``common_share`` > 0 a site takes the scenario's anchor day with that probability.
    """
    if not 0.0 <= common_share <= 1.0:
        raise ValueError("common_share must lie in [0, 1]")
    if day_start.tzinfo is None:
        raise ValueError("day_start must be UTC-aware")
    start_s = day_start.timestamp()
    offset_s = start_s % DAY_S
    g = _groups(history, length_s, offset_s)
    if g.days.size == 0:
        return [history.sessions.take(np.zeros(0, np.intp)) for _ in range(n_scenarios)], 0
    target = (round((start_s - offset_s) / DAY_S) + 3) % 7  # POSIX day 0 was a Thursday
    weekday = (g.days + 3) % 7
    pool = np.flatnonzero(weekday == target)
    if pool.size == 0:
        pool = np.arange(g.days.size)
    n_sites = len(history.site_ids)
    n_days = int(g.days.size)
    out: list[Fleet] = []
    for _ in range(n_scenarios):
        pick = pool[rng.integers(0, pool.size, n_sites)]
        if common_share > 0.0:  # no extra draws otherwise: the same scenarios as before
            anchor = pool[rng.integers(0, pool.size)]
            pick = np.where(rng.random(n_sites) < common_share, anchor, pick)
        group = np.arange(n_sites) * n_days + pick
        lengths = g.counts[group]
        total = int(lengths.sum())
        starts = np.repeat(g.offsets[group] - np.cumsum(lengths) + lengths, lengths)
        members = starts + np.arange(total)
        rows = g.rows[members]
        shift = start_s - offset_s - g.shift_day[members].astype(np.float64) * DAY_S
        out.append(history.sessions.take(rows, shift))
    return out, int(pool.size)


def site_coupling(history: SessionHistory) -> float:
    """ρ̄ ∈ [0, 1]: how much the sites' daily session counts move together (module doc).

    Per site and calendar day (00:00 UTC windows) the count of sessions that arrived,
    less the site's mean for that weekday; ρ̄ from the variance of the fleet's sum against
    the sum of the sites' variances. 0 with fewer than 2 sites or 3 days of history.
    """
    f = history.sessions
    n_sites = len(history.site_ids)
    if n_sites < 2 or f.size == 0:
        return 0.0
    day = np.floor(f.arrival_s / DAY_S).astype(np.int64)
    days = np.arange(int(day.min()), int(day.max()) + 1)
    if days.size < 3:
        return 0.0
    ok = f.site >= 0
    counts = np.zeros((n_sites, days.size))
    np.add.at(counts, (f.site[ok], day[ok] - days[0]), 1.0)
    weekday = (days + 3) % 7  # POSIX day 0 was a Thursday
    dev = counts.copy()
    for w in range(7):
        cols = weekday == w
        if cols.any():
            dev[:, cols] -= counts[:, cols].mean(axis=1, keepdims=True)
    site_var = float((dev**2).mean(axis=1).sum())
    if site_var <= 0.0:
        return 0.0
    fleet_var = float((dev.sum(axis=0) ** 2).mean())
    rho = (fleet_var / site_var - 1.0) / (n_sites - 1)
    return float(np.clip(rho, 0.0, 1.0))
