"""Prequalification: drive the simulated fleet through a TSO test profile, pass or fail.

Before a pool may offer a reserve, the connecting TSO has it show the product's technical
requirements in a test (SO GL, Regulation (EU) 2017/1485, Art. 155 for FCR and Art. 159
for FRR: the provider demonstrates that it meets Art. 154 / Art. 158). The German TSOs run
the tests on the pool's own 1 s data (regelleistung.net, "Prequalification process":
operating test, control-system test). We run the same shape of test on the closed-loop
simulation (:func:`aggregator.sim.simulation.run_simulation`: the real service, a
simulated CSMS and cars that follow their setpoints within their physics):

* **FCR** — the frequency steps to full activation, −200 mHz (49.8 Hz: the pool consumes
  ``reserve_kw`` less) and then +200 mHz (50.2 Hz: ``reserve_kw`` more), each held for the
  *reservoir time*: a unit with a limited energy reservoir must sustain full activation for
  15 to 30 min (SO GL Art. 156; the TSOs choose; both appear in the sources, so it is the
  parameter ``hold_s``, default 15 min), with settling time at 50 Hz between;
* **aFRR** — setpoints every 4 s (the control cycle): a step to +reserve held, back to 0,
  a step to −reserve held, back to 0, then ramps 0 → +reserve → −reserve → 0.

Pass/fail is the settlement of the test's 1 s record (:func:`markets.settlement.settle`)
against the product's acceptance band (:data:`~markets.settlement.FCR_BAND`,
:data:`~markets.settlement.AFRR_BAND`), with the tolerances stated in the result: the test
passes when no window fails and the record has no gap. A failure names the reason — which
segment, what was ordered, what was delivered — so an operator knows whether the fleet was
too small, too full, or the plan fell back.

Invariants: the profile's orders stay within ±``reserve_kw``; the test's record covers
exactly the profile (one row per second, gaps reported); the verdict is a pure function of
the record and the band.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np

from aggregator.errors import InvalidInput, Issue
from aggregator.interfaces import MessageBus
from aggregator.messages import AfrrRequest, FrequencySample, FrequencySignal
from aggregator.sim.scenario import Scenario
from aggregator.sim.simulation import run_simulation
from markets.activation import NOMINAL_HZ, AfrrRamp, ReserveActivation
from markets.products import AFRR, FCR
from markets.record import PoolRecord, SecondRecorder
from markets.settlement import AFRR_BAND, FCR_BAND, AcceptanceBand, Settlement, settle

__all__ = [
    "PrequalResult",
    "Segment",
    "SegmentResult",
    "TestProfile",
    "afrr_profile",
    "fcr_profile",
    "prequalify",
]

ProductName = Literal["fcr", "afrr"]


@dataclass(frozen=True, slots=True)
class Segment:
    """A part of a test profile: the order moves linearly from ``from_frac`` to ``to_frac``
    of the reserve over ``duration_s`` (a step has equal ends)."""

    label: str
    duration_s: int
    from_frac: float
    to_frac: float

    def frac_at(self, offset_s: float) -> float:
        if self.duration_s <= 0:
            return self.to_frac
        x = min(max(offset_s / self.duration_s, 0.0), 1.0)
        return self.from_frac + (self.to_frac - self.from_frac) * x


@dataclass(frozen=True)
class TestProfile:
    """A test: segments from ``start``; FCR orders by frequency, aFRR by setpoint every
    ``cycle_s`` seconds (held in between)."""

    __test__ = False  # not a pytest class

    product: ProductName
    start: datetime
    reserve_kw: float
    segments: tuple[Segment, ...]
    cycle_s: float = 1.0

    @property
    def duration_s(self) -> int:
        return sum(s.duration_s for s in self.segments)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.duration_s)

    def bounds(self) -> list[tuple[Segment, datetime, datetime]]:
        out, t = [], self.start
        for seg in self.segments:
            out.append((seg, t, t + timedelta(seconds=seg.duration_s)))
            t += timedelta(seconds=seg.duration_s)
        return out

    def frac_at(self, at: datetime) -> float:
        """The ordered share of the reserve at ``at`` (0 outside the profile)."""
        off = (at - self.start).total_seconds()
        off = math.floor(off / self.cycle_s) * self.cycle_s  # the last control cycle's order
        for seg in self.segments:
            if 0 <= off < seg.duration_s:
                return seg.frac_at(off)
            off -= seg.duration_s
        return 0.0

    def signal_at(self, at: datetime) -> FrequencySignal:
        a = self.frac_at(at)
        if self.product == "fcr":  # full activation at ±full_activation_hz, 0 → nominal
            return FrequencySample(ts=at, hz=round(NOMINAL_HZ + a * FCR.full_activation_hz, 6))
        return AfrrRequest(ts=at, setpoint_kw=a * self.reserve_kw)


def fcr_profile(
    start: datetime, reserve_kw: float, *, hold_s: int = 900, settle_s: int = 300
) -> TestProfile:
    """Full negative then full positive activation, each held ``hold_s`` (the reservoir
    time), with ``settle_s`` at 50 Hz before, between and after."""
    segs = (
        Segment("settle at 50 Hz", settle_s, 0.0, 0.0),
        Segment("−200 mHz: full activation, consume less", hold_s, -1.0, -1.0),
        Segment("settle at 50 Hz", settle_s, 0.0, 0.0),
        Segment("+200 mHz: full activation, consume more", hold_s, 1.0, 1.0),
        Segment("settle at 50 Hz", settle_s, 0.0, 0.0),
    )
    return TestProfile("fcr", start, reserve_kw, segs)


def afrr_profile(
    start: datetime,
    reserve_kw: float,
    *,
    hold_s: int = 900,
    settle_s: int = 300,
    ramp_s: int = 300,
) -> TestProfile:
    """Setpoint steps to +reserve and −reserve held ``hold_s``, then ramps 0 → +reserve →
    −reserve → 0 (``ramp_s`` per reserve swept), orders every 4 s (the control cycle)."""
    segs = (
        Segment("setpoint 0", settle_s, 0.0, 0.0),
        Segment("step to +reserve (more import)", hold_s, 1.0, 1.0),
        Segment("step back to 0", settle_s, 0.0, 0.0),
        Segment("step to −reserve (less import)", hold_s, -1.0, -1.0),
        Segment("step back to 0", settle_s, 0.0, 0.0),
        Segment("ramp 0 → +reserve", ramp_s, 0.0, 1.0),
        Segment("ramp +reserve → −reserve", 2 * ramp_s, 1.0, -1.0),
        Segment("ramp −reserve → 0", ramp_s, -1.0, 0.0),
        Segment("setpoint 0", settle_s, 0.0, 0.0),
    )
    return TestProfile("afrr", start, reserve_kw, segs, cycle_s=AFRR.setpoint_interval_s)


@dataclass(frozen=True, slots=True)
class SegmentResult:
    """How one segment went: the order at its end, the delivery over its last 30 s."""

    label: str
    start: datetime
    end: datetime
    ordered_kw: float
    delivered_kw: float
    outside_s: int
    penalised_s: int
    missing_s: int

    @property
    def ok(self) -> bool:
        return self.penalised_s == 0 and self.missing_s == 0


@dataclass(frozen=True)
class PrequalResult:
    """The verdict, its reasons, the tolerances it was judged by, and the evidence."""

    product: ProductName
    reserve_kw: float
    passed: bool
    reasons: tuple[str, ...]
    tolerances: tuple[str, ...]
    segments: tuple[SegmentResult, ...]
    profile: TestProfile
    record: PoolRecord
    settlement: Settlement
    simulation: dict[str, Any]


def _tolerances(band: AcceptanceBand, profile: TestProfile) -> tuple[str, ...]:
    tol_kw = band.tolerance_frac * profile.reserve_kw
    out = [
        f"first reaction within {band.reaction_s} s, full activation within {band.full_s} s",
        f"tolerance ±{band.tolerance_frac:.0%} of the reserve (±{tol_kw:.1f} kW)",
        f"at most {band.max_outside_frac:.0%} of any {band.window_s} s window outside the band "
        f"({band.max_outside_s:.0f} s)",
        "no gap in the 1 s record",
    ]
    if profile.product == "fcr":
        hold = max(s.duration_s for s in profile.segments)
        out.insert(0, f"full activation held for the reservoir time ({hold / 60:.0f} min)")
    return tuple(out)


def _segments(profile: TestProfile, s: Settlement) -> tuple[SegmentResult, ...]:
    out: list[SegmentResult] = []
    for seg, a, b in profile.bounds():
        i = int((a - s.start).total_seconds())
        j = int((b - s.start).total_seconds())
        d = s.delivered_kw[max(j - 30, i) : j]
        d = d[np.isfinite(d)]
        out.append(
            SegmentResult(
                label=seg.label,
                start=a,
                end=b,
                ordered_kw=seg.to_frac * profile.reserve_kw,
                delivered_kw=float(d.mean()) if d.size else math.nan,
                outside_s=int(s.outside[i:j].sum()),
                penalised_s=int(s.penalised[i:j].sum()),
                missing_s=int((~np.isfinite(s.delivered_kw[i:j])).sum()),
            )
        )
    return tuple(out)


def _reasons(
    segments: tuple[SegmentResult, ...], s: Settlement, simulation: dict[str, Any]
) -> tuple[str, ...]:
    out: list[str] = []
    for r in segments:
        if r.ok:
            continue
        share = (
            f" ({r.delivered_kw / r.ordered_kw:.0%} of the order)"
            if r.ordered_kw and math.isfinite(r.delivered_kw)
            else ""
        )
        out.append(
            f"{r.label} from {r.start:%H:%M:%S}: {r.penalised_s} s penalised outside the band"
            + (f", {r.missing_s} s missing from the record" if r.missing_s else "")
            + f"; ordered {r.ordered_kw:+.1f} kW, delivered {r.delivered_kw:+.1f} kW at its end"
            + share
        )
    for g in s.gaps:
        out.append(f"the 1 s record has a {g}")
    fallbacks = int(simulation.get("plan_fallbacks", 0))
    if out and fallbacks:
        out.append(f"the planner fell back {fallbacks} time(s): the reserve did not fit the plan")
    return tuple(out)


def _from(scenario: Scenario, start: datetime) -> Scenario:
    """``scenario`` from ``start``: sessions gone by then dropped, earlier arrivals moved
    to ``start``."""
    sessions = tuple(
        dataclasses.replace(s, arrival=max(s.arrival, start))
        for s in scenario.sessions
        if s.departure > start
    )
    return dataclasses.replace(scenario, start=start, sessions=sessions)


def prequalify(
    scenario: Scenario,
    product: ProductName,
    *,
    bus_factory: Callable[[], MessageBus],
    reserve_kw: float | None = None,
    hold_s: int = 900,
    settle_s: int = 300,
    ramp_s: int = 300,
    warmup_s: int = 0,
    start: datetime | None = None,
    band: AcceptanceBand | None = None,
) -> PrequalResult:
    """Run ``product``'s test on ``scenario``'s fleet from ``start + warmup_s`` with
    ``reserve_kw`` (default: the scenario's), 1 s ticks; see the module doc.

    ``start`` (default: the scenario's) moves the simulation's start to that moment: the
    sessions plugged in then take part, those that arrived earlier as if they had just
    arrived with their whole energy still wanted (an approximation: a test at 21:00
    need not simulate the afternoon)."""
    reserve = scenario.reserve_kw if reserve_kw is None else reserve_kw
    issues: list[Issue] = []
    if not reserve > 0:
        issues.append(Issue(field="reserve_kw", code="no_reserve", message="must be > 0"))
    if min(hold_s, settle_s, ramp_s) <= 0 or warmup_s < 0:
        issues.append(Issue(field="profile", code="bad_duration", message="durations > 0"))
    if start is not None and not scenario.start <= start < scenario.end:
        issues.append(
            Issue(field="start", code="outside_scenario", message="must lie in the scenario")
        )
    if issues:
        raise InvalidInput(issues)
    if start is not None:
        scenario = _from(scenario, start)
    start = scenario.start + timedelta(seconds=warmup_s)
    if product == "fcr":
        profile = fcr_profile(start, reserve, hold_s=hold_s, settle_s=settle_s)
        rule = ReserveActivation()
        band = band or FCR_BAND
    else:
        profile = afrr_profile(start, reserve, hold_s=hold_s, settle_s=settle_s, ramp_s=ramp_s)
        rule = ReserveActivation(afrr=AfrrRamp())
        band = band or AFRR_BAND
    run = dataclasses.replace(scenario, end=profile.end, tick_s=1.0, reserve_kw=reserve)
    recorder = SecondRecorder(scenario.name, profile.start, profile.end)
    sim = run_simulation(
        run, bus_factory(), activation=rule, signal=profile.signal_at, record=recorder
    )
    record = recorder.record()
    s = settle(record, band)
    segments = _segments(profile, s)
    reasons = _reasons(segments, s, sim.summary)
    passed = s.compliant and not s.gaps
    if not passed and not reasons:  # a failed window the segments did not name
        reasons = tuple(str(f) for f in s.findings())
    return PrequalResult(
        product=product,
        reserve_kw=reserve,
        passed=passed,
        reasons=reasons,
        tolerances=_tolerances(band, profile),
        segments=segments,
        profile=profile,
        record=record,
        settlement=s,
        simulation=sim.summary,
    )
