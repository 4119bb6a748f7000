"""Settlement from the 1 s record: delivered vs ordered inside an acceptance band.

What a TSO checks (sources, numbers are parameters of :class:`AcceptanceBand`):

* **aFRR** — the provider must show a first reaction within 30 s and the full requested
  power within 5 min (SO GL, Regulation (EU) 2017/1485, Art. 158(1)(d) "activation delay
  … not more than 30 seconds" and (f) full capacity within the full activation time;
  regelleistung.net, "automatic Frequency Restoration Reserve": full delivery 5 minutes
  after activation, a first reaction after 30 s, delivery inside an *acceptance channel*
  ("Akzeptanzkanal") because the request changes every 4 s control cycle). The ±5 %
  tolerance and the shortfall rule (a rolling 300 s window with more than 5 % of its
  seconds outside the band is penalisable) are the published remuneration logic of a
  German BSP as the issue quotes it; we found no TSO text to check them against, so they
  are parameters (``tolerance_frac``, ``window_s``, ``max_outside_frac``).
* **FCR** — full activation within 30 s at ±200 mHz, 10 mHz insensitivity (SO GL Annex V;
  regelleistung.net "Activation of Frequency Containment Reserve": deadband 49.99–50.01 Hz,
  delivery within 30 s); continuous availability for the whole commitment (SO GL Art.
  156(4)). Activation must begin "as soon as possible": the 2 s first reaction of
  :data:`FCR_BAND` is our assumption, a parameter.

The band. From the ordered request ``r`` (kW, per second) two trajectories bound every
acceptable response: the *fast* edge follows ``r`` at once; the *slow* edge is ``r`` passed
through the slowest response the rule allows — each change ``Δ`` of ``r`` at ``t₀`` adds
``Δ·h(t − t₀)`` with ``h = 0`` until ``reaction_s``, rising linearly to 1 at ``full_s``
(a linear filter, so a request that changes every 4 s is handled like a single step).
The band is ``[min(fast, slow) − tol, max(fast, slow) + tol]`` with ``tol =
tolerance_frac × reserve held``. Before the record starts the request is taken as steady.

The shortfall rule. A second is *outside* when the delivered deviation (measured −
baseline) leaves the band, or when it is a gap (no data is no proof of delivery). A window
of ``window_s`` seconds ending at second ``t`` fails when more than ``max_outside_frac ×
window_s`` of its seconds are outside (early windows are shorter but keep that limit).
An outside second inside a failed window is *penalised*; its shortfall is how far it fell
short of the band in the ordered direction (in a gap the delivered deviation counts as 0).

Per quarter-hour (UTC-aligned, the UFTP / GB-baselining shape): baseline, ordered, actual,
delivered and penalisable shortfall energy (kWh), seconds outside, penalised, missing.

Invariants: the band contains the fast edge (``r``) at every second; ``lower ≤ upper``;
``penalised ⊆ outside``; shortfall ≥ 0 and 0 wherever not penalised; the per-quarter-hour
sums equal the whole-record sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from markets.record import Gap, PoolRecord, _runs

__all__ = [
    "AFRR_BAND",
    "FCR_BAND",
    "AcceptanceBand",
    "FcrAvailability",
    "Finding",
    "QuarterHour",
    "Settlement",
    "acceptance_band",
    "fcr_availability",
    "settle",
]

_EPS_KW = 1e-9  # float noise, not a tolerance
QUARTER_HOUR_S = 900


@dataclass(frozen=True, slots=True)
class AcceptanceBand:
    """How fast and how exactly a pool must follow an order (see the module doc)."""

    product: str
    reaction_s: int
    full_s: int
    tolerance_frac: float = 0.05
    window_s: int = 300
    max_outside_frac: float = 0.05

    def __post_init__(self) -> None:
        if not (0 <= self.reaction_s < self.full_s and self.window_s > 0):
            raise ValueError("need 0 ≤ reaction_s < full_s and window_s > 0")

    @property
    def max_outside_s(self) -> float:
        """More outside seconds than this in one window fail it."""
        return self.max_outside_frac * self.window_s

    def step_response(self) -> NDArray[np.float64]:
        """``h[τ]`` for ``τ = 0 … full_s``: the slowest acceptable share of a step."""
        tau = np.arange(self.full_s + 1, dtype=np.float64)
        span = float(self.full_s - self.reaction_s)
        return np.clip((tau - self.reaction_s) / span, 0.0, 1.0)


AFRR_BAND = AcceptanceBand("aFRR", reaction_s=30, full_s=300)
"""aFRR: react within 30 s, reach within 300 s, ±5 %, 5 % of a rolling 300 s window."""
FCR_BAND = AcceptanceBand("FCR", reaction_s=2, full_s=30)
"""FCR: full within 30 s (first reaction within 2 s: our assumption), ±5 %, same window rule."""


def _filled(x: NDArray[np.float64], first: float = 0.0) -> NDArray[np.float64]:
    """Last known value forward (``first`` before any is known). Used only to draw the
    band through a gap, never to fill the record."""
    ok = np.isfinite(x)
    if not ok.any():
        return np.full(x.shape, first)
    idx = np.where(ok, np.arange(x.size), -1)
    np.maximum.accumulate(idx, out=idx)
    return np.where(idx >= 0, x[np.maximum(idx, 0)], first)


def acceptance_band(
    requested_kw: NDArray[np.float64], reserve_kw: NDArray[np.float64], band: AcceptanceBand
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``(lower, upper)`` per second for the ordered request (see the module doc)."""
    r = _filled(np.asarray(requested_kw, dtype=np.float64))
    res = _filled(np.asarray(reserve_kw, dtype=np.float64))
    if r.size == 0:
        return r.copy(), r.copy()
    step = np.diff(r, prepend=r[0])
    impulse = np.diff(band.step_response(), prepend=0.0)
    slow = r[0] + np.cumsum(np.convolve(step, impulse)[: r.size])
    tol = band.tolerance_frac * np.abs(res)
    return np.minimum(r, slow) - tol, np.maximum(r, slow) + tol


@dataclass(frozen=True, slots=True)
class QuarterHour:
    """One quarter-hour of settlement (energies in kWh, + = more import)."""

    start: datetime
    seconds: int
    missing_s: int
    baseline_kwh: float
    ordered_kwh: float
    actual_kwh: float
    delivered_kwh: float
    shortfall_kwh: float
    outside_s: int
    penalised_s: int


@dataclass(frozen=True, slots=True)
class Finding:
    """A run of penalised seconds, with what was ordered and delivered (means, kW; NaN
    delivered when the whole run is missing from the record)."""

    start: datetime
    end: datetime
    penalised_s: int
    ordered_kw: float
    delivered_kw: float
    gap_s: int

    def __str__(self) -> str:
        what = f"{self.penalised_s} s outside the band in a failed window"
        if self.gap_s:
            what += f" ({self.gap_s} s of them missing from the record)"
        got = (
            f"delivered {self.delivered_kw:+.1f} kW (mean)"
            if math.isfinite(self.delivered_kw)
            else "no data"
        )
        return (
            f"{self.start:%H:%M:%S}–{self.end:%H:%M:%S} UTC: {what}; "
            f"ordered {self.ordered_kw:+.1f} kW, {got}"
        )


@dataclass(frozen=True)
class Settlement:
    """Per-second band and verdict plus the per-quarter-hour table of one record."""

    pool_id: str
    band: AcceptanceBand
    start: datetime
    requested_kw: NDArray[np.float64]
    delivered_kw: NDArray[np.float64]  # measured − baseline; NaN in a gap
    lower_kw: NDArray[np.float64]
    upper_kw: NDArray[np.float64]
    outside: NDArray[np.bool_]
    failed_window: NDArray[np.bool_]  # per window end
    penalised: NDArray[np.bool_]
    shortfall_kw: NDArray[np.float64]
    quarter_hours: tuple[QuarterHour, ...]
    gaps: tuple[Gap, ...]

    @property
    def compliant(self) -> bool:
        """No window failed (a gap alone counts against it like any outside second)."""
        return not bool(self.failed_window.any())

    @property
    def shortfall_kwh(self) -> float:
        return float(self.shortfall_kw.sum()) / 3600.0

    def findings(self) -> list[Finding]:
        out: list[Finding] = []
        gap = ~np.isfinite(self.delivered_kw)
        for a, b in _runs(self.penalised):
            d = self.delivered_kw[a:b]
            d_ok = d[np.isfinite(d)]
            out.append(
                Finding(
                    start=self.start + timedelta(seconds=a),
                    end=self.start + timedelta(seconds=b - 1),
                    penalised_s=b - a,
                    ordered_kw=float(np.mean(self.requested_kw[a:b])),
                    delivered_kw=float(d_ok.mean()) if d_ok.size else math.nan,
                    gap_s=int(gap[a:b].sum()),
                )
            )
        return out

    def totals(self) -> dict[str, float]:
        rows = self.quarter_hours
        return {
            "seconds": float(self.outside.size),
            "missing_s": float(sum(q.missing_s for q in rows)),
            "outside_s": float(self.outside.sum()),
            "penalised_s": float(self.penalised.sum()),
            "baseline_kwh": sum(q.baseline_kwh for q in rows),
            "ordered_kwh": sum(q.ordered_kwh for q in rows),
            "actual_kwh": sum(q.actual_kwh for q in rows),
            "delivered_kwh": sum(q.delivered_kwh for q in rows),
            "shortfall_kwh": self.shortfall_kwh,
        }


def _window_any(flag: NDArray[np.bool_], w: int) -> NDArray[np.bool_]:
    """Per second ``s``: some ``flag[t]`` with ``s ≤ t < s + w`` (windows ending later that
    contain ``s``)."""
    c = np.concatenate(([0], np.cumsum(flag, dtype=np.int64)))
    n = flag.size
    s = np.arange(n)
    hi = np.minimum(s + w, n)
    return np.asarray((c[hi] - c[s]) > 0, dtype=bool)


def settle(record: PoolRecord, band: AcceptanceBand = AFRR_BAND) -> Settlement:
    """Settle ``record`` against ``band`` (see the module doc for every rule)."""
    n = record.seconds
    present = record.present
    r = _filled(record.requested_kw)
    lo, hi = acceptance_band(record.requested_kw, record.reserve_kw, band)
    d = np.where(present, record.measured_kw - record.baseline_kw, np.nan)
    d0 = np.where(present, d, 0.0)  # a gap delivers nothing
    outside = ~present | (d0 < lo - _EPS_KW) | (d0 > hi + _EPS_KW)
    c = np.concatenate(([0], np.cumsum(outside, dtype=np.int64)))
    t = np.arange(n)
    in_window = c[t + 1] - c[np.maximum(t + 1 - band.window_s, 0)]
    failed = in_window > band.max_outside_s + 1e-9
    penalised = outside & _window_any(failed, band.window_s)
    under = np.where(
        r > _EPS_KW, np.maximum(lo - d0, 0.0), np.where(r < -_EPS_KW, np.maximum(d0 - hi, 0.0), 0)
    )
    shortfall = np.where(penalised, under, 0.0)
    rows = _quarter_hours(record, present, r, d0, outside, penalised, shortfall)
    return Settlement(
        pool_id=record.pool_id,
        band=band,
        start=record.start,
        requested_kw=r,
        delivered_kw=d,
        lower_kw=lo,
        upper_kw=hi,
        outside=outside,
        failed_window=failed,
        penalised=penalised,
        shortfall_kw=shortfall,
        quarter_hours=rows,
        gaps=tuple(record.gaps()),
    )


def _quarter_hours(
    record: PoolRecord,
    present: NDArray[np.bool_],
    r: NDArray[np.float64],
    d0: NDArray[np.float64],
    outside: NDArray[np.bool_],
    penalised: NDArray[np.bool_],
    shortfall: NDArray[np.float64],
) -> tuple[QuarterHour, ...]:
    n = record.seconds
    if n == 0:
        return ()
    t0 = int(record.start.timestamp())
    qh = (t0 + np.arange(n)) // QUARTER_HOUR_S
    keys, first = np.unique(qh, return_index=True)
    bounds = [*first.tolist(), n]

    def kwh(x: NDArray[np.float64], a: int, b: int) -> float:
        return float(np.where(present[a:b], x[a:b], 0.0).sum()) / 3600.0

    rows: list[QuarterHour] = []
    for k, key in enumerate(keys.tolist()):
        a, b = bounds[k], bounds[k + 1]
        rows.append(
            QuarterHour(
                start=datetime.fromtimestamp(key * QUARTER_HOUR_S, tz=UTC),
                seconds=b - a,
                missing_s=int((~present[a:b]).sum()),
                baseline_kwh=kwh(record.baseline_kw, a, b),
                ordered_kwh=kwh(r, a, b),
                actual_kwh=kwh(record.measured_kw, a, b),
                delivered_kwh=float(d0[a:b].sum()) / 3600.0,
                shortfall_kwh=float(shortfall[a:b].sum()) / 3600.0,
                outside_s=int(outside[a:b].sum()),
                penalised_s=int(penalised[a:b].sum()),
            )
        )
    return tuple(rows)


@dataclass(frozen=True, slots=True)
class FcrAvailability:
    """FCR is paid for being available (SO GL Art. 156(4): continuously, the whole
    commitment): the share of seconds with data and at least the contracted reserve held."""

    seconds: int
    present_s: int
    held_s: int
    contracted_kw: float

    @property
    def availability(self) -> float:
        return self.held_s / self.seconds if self.seconds else 0.0


def fcr_availability(record: PoolRecord, contracted_kw: float | None = None) -> FcrAvailability:
    """Seconds with data and ``reserve_kw ≥ contracted_kw`` (default: the most held)."""
    present = record.present
    res = record.reserve_kw
    if contracted_kw is None:
        finite = res[np.isfinite(res)]
        contracted_kw = float(finite.max()) if finite.size else 0.0
    held = present & (np.where(present, res, -math.inf) >= contracted_kw - _EPS_KW)
    return FcrAvailability(record.seconds, int(present.sum()), int(held.sum()), contracted_kw)
