"""Service events and samples as InfluxDB points (run on the history thread only).

Measurements (tags in brackets): ``activation`` (every fast-loop run: ``deviation_kw``,
``batches``, ``elapsed_s``, ``source_lag_s``), ``plan`` [solver, fallback_reason]
(``build_s``, ``solve_s``, ``sessions``, ``fallback`` 0/1, ``grid_iterations``,
``limits_version``), ``plan_objective``, ``plan_discarded`` [reason], ``limit`` [action,
target_type, target_id, source] (``limit_kw``, ``start_s``, ``end_s``, ``event_id``),
``power`` [level = site | feeder | fleet, id] (``measured_kw``, ``setpoint_kw``,
``cap_kw``, feeder ``headroom_kw``), and ``pool`` for the markets' 1 s record.

Hook for new event types: :func:`register_event` (:func:`dataclass_points` writes any
frozen-dataclass event: numbers as fields, strings as tags). The markets' 1 s record
(:class:`PoolSampled`, at most two per second) goes to ``pool`` [signal]: ``reserve_kw``,
``baseline_kw``, ``deviation_kw``, ``setpoint_kw``, ``measured_kw``, ``hz`` or
``afrr_setpoint_kw``.

Invariants: a point never carries NaN or infinity (InfluxDB refuses them: such a field
is left out), tag values are never empty, every point is timestamped with the event's
``at`` (the service clock, UTC) in nanoseconds.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from influxdb_client import Point, WritePrecision

from aggregator.messages import AfrrRequest, FrequencySample, SetpointBatch
from aggregator.service.events import (
    BatchesPublished,
    LimitApplied,
    LimitCancelled,
    LimitRejected,
    PlanDiscarded,
    PlanMade,
    PoolSampled,
)
from aggregator.topology import Topology

__all__ = ["Record", "Sample", "dataclass_points", "points_of", "register_event"]

EventPoints = Callable[[Any], Iterable[Point]]
_CONVERTERS: dict[type, EventPoints] = {}


def register_event(kind: type, convert: EventPoints) -> None:
    """Write events of ``kind`` as the points ``convert`` makes (hook for new event types;
    the converter runs on the writer thread)."""
    _CONVERTERS[kind] = convert


def _tagged(p: Point, tags: Mapping[str, str | None]) -> Point:
    for k, v in tags.items():
        if v:  # an empty tag value is not allowed in line protocol
            p = p.tag(k, v)
    return p


def _plan_made(e: PlanMade) -> Iterable[Point]:
    p = _tagged(Point("plan"), {"solver": e.solver, "fallback_reason": e.fallback})
    yield (
        p.field("build_s", float(e.build_s))
        .field("solve_s", float(e.solve_s))
        .field("sessions", int(e.sessions))
        .field("fallback", int(e.fallback is not None))
        .field("grid_iterations", int(e.grid_iterations))
        .field("limits_version", int(e.limits_version))
        .time(e.at, WritePrecision.NS)
    )


def _plan_discarded(e: PlanDiscarded) -> Iterable[Point]:
    p = _tagged(Point("plan_discarded"), {"reason": e.reason[:60]})
    yield p.field("count", 1).time(e.at, WritePrecision.NS)


def _limit_applied(e: LimitApplied) -> Iterable[Point]:
    tags = {
        "action": "applied",
        "target_type": e.target_type,
        "target_id": e.target_id,
        "source": e.source,
    }
    yield (
        _tagged(Point("limit"), tags)
        .field("limit_kw", float(e.limit_kw))
        .field("start_s", e.start.timestamp())
        .field("end_s", e.end.timestamp())
        .field("event_id", e.event_id)
        .time(e.at, WritePrecision.NS)
    )


def _limit_cancelled(e: LimitCancelled) -> Iterable[Point]:
    p = _tagged(Point("limit"), {"action": "cancelled", "source": e.source})
    yield p.field("found", int(e.found)).field("event_id", e.event_id).time(e.at)


def _limit_rejected(e: LimitRejected) -> Iterable[Point]:
    p = _tagged(Point("limit"), {"action": "rejected"})
    yield p.field("reason", e.reason).field("event_id", e.event_id).time(e.at)


def _batches(e: BatchesPublished) -> Iterable[Point]:
    p = (
        Point("activation")
        .field("deviation_kw", float(e.deviation_kw))
        .field("batches", int(e.batches))
        .field("elapsed_s", float(e.elapsed_s))
    )
    if e.source_ts is not None:
        p = p.field("source_lag_s", (e.at - e.source_ts).total_seconds())
    yield p.time(e.at, WritePrecision.NS)


register_event(PlanMade, _plan_made)
register_event(PlanDiscarded, _plan_discarded)
register_event(LimitApplied, _limit_applied)
register_event(LimitCancelled, _limit_cancelled)
register_event(LimitRejected, _limit_rejected)
register_event(BatchesPublished, _batches)


@dataclass(frozen=True, slots=True)
class Record:
    """One point handed to :meth:`InfluxHistory.record`."""

    measurement: str
    at: datetime
    fields: Mapping[str, float]
    tags: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Sample:
    """What :meth:`InfluxHistory.sample` took on the service's loop (values, no arrays)."""

    at: datetime
    measured_kw: Mapping[str, float]
    site_cap_kw: Mapping[str, float]
    feeder_cap_kw: Mapping[str, float]
    fleet_cap_kw: float
    headroom_kw: Mapping[str, float]
    batches: tuple[SetpointBatch, ...] | None  # None: no setpoint sink teed (no sums)
    objective: float | None


def _finite(x: float) -> bool:
    return math.isfinite(x)


def _no_pause() -> None:
    return None


def points_of(
    item: object,
    topology: Topology,
    evse_site: Mapping[str, str],
    pause: Callable[[], None] = _no_pause,
) -> list[Point]:
    """The points of one queued item (an event, a record or a sample); ``pause`` is called
    every few hundred EVSEs of a sample (the writer thread lets the GIL go there)."""
    if isinstance(item, Record):
        p = _tagged(Point(item.measurement), item.tags)
        for k, v in item.fields.items():
            p = p.field(k, v)
        return [p.time(item.at, WritePrecision.NS)]
    if isinstance(item, Sample):
        return _sample_points(item, topology, evse_site, pause)
    convert = _CONVERTERS.get(type(item))
    return [] if convert is None else list(convert(item))


def _sample_points(
    s: Sample, topo: Topology, evse_site: Mapping[str, str], pause: Callable[[], None]
) -> list[Point]:
    site_sp: dict[str, float] = defaultdict(float)
    get = evse_site.get
    for b in s.batches or ():
        ids, kws = b.evse_ids, b.power_kw
        for lo in range(0, len(ids), 256):
            for evse, kw in zip(ids[lo : lo + 256], kws[lo : lo + 256], strict=True):
                site = get(evse)
                if site is not None:
                    site_sp[site] += kw
            pause()
    feeder_of = {st.site_id: st.feeder_id for st in topo.sites}
    feeder_sp: dict[str, float] = defaultdict(float)
    for site, kw in site_sp.items():
        feeder_sp[feeder_of.get(site, "")] += kw
    out: list[Point] = []

    def power(level: str, target: str, setpoint: float, cap: float | None) -> Point:
        p = (
            Point("power")
            .tag("level", level)
            .tag("id", target)
            .field("measured_kw", float(s.measured_kw.get(target, 0.0)))
        )
        if s.batches is not None:
            p = p.field("setpoint_kw", float(setpoint))
        if cap is not None and _finite(cap):
            p = p.field("cap_kw", float(cap))
        return p

    for st in topo.sites:
        out.append(
            power("site", st.site_id, site_sp.get(st.site_id, 0.0), s.site_cap_kw.get(st.site_id))
        )
    for fd in topo.feeders:
        p = power(
            "feeder",
            fd.feeder_id,
            feeder_sp.get(fd.feeder_id, 0.0),
            s.feeder_cap_kw.get(fd.feeder_id),
        )
        head = s.headroom_kw.get(fd.feeder_id)
        if head is not None and _finite(head):
            p = p.field("headroom_kw", float(head))
        out.append(p)
    out.append(power("fleet", "fleet", sum(site_sp.values()), s.fleet_cap_kw))
    if s.objective is not None and _finite(s.objective):
        out.append(Point("plan_objective").field("objective", float(s.objective)))
    return [p.time(s.at, WritePrecision.NS) for p in out]


def dataclass_points(measurement: str) -> EventPoints:
    """A converter for a frozen-dataclass event: ``at`` the time, numbers fields (NaN and
    infinity left out: a gap stays a gap), strings tags."""

    def convert(e: Any) -> Iterable[Point]:
        p = Point(measurement)
        for f in dataclasses.fields(e):
            v = getattr(e, f.name)
            if f.name == "at" or v is None:
                continue
            if isinstance(v, bool | int | float) and _finite(float(v)):
                p = p.field(f.name, float(v) if isinstance(v, float) else int(v))
            elif isinstance(v, str) and v:
                p = p.tag(f.name, v)
        yield p.time(e.at, WritePrecision.NS)

    return convert


def _pool_sampled(e: PoolSampled) -> Iterable[Point]:
    """A row of the markets' 1 s record: the pool totals, and the signal that drove them
    (``hz`` of a frequency sample or ``afrr_setpoint_kw`` of an aFRR request, tag
    ``signal``); a missing measurement is left out (a gap stays a gap)."""
    p = Point("pool")
    for name in ("reserve_kw", "baseline_kw", "deviation_kw", "setpoint_kw", "measured_kw"):
        v = getattr(e, name)
        if v is not None and _finite(float(v)):
            p = p.field(name, float(v))
    sig = e.signal
    if isinstance(sig, FrequencySample):
        p = p.tag("signal", "frequency").field("hz", float(sig.hz))
    elif isinstance(sig, AfrrRequest):
        p = p.tag("signal", "afrr").field("afrr_setpoint_kw", float(sig.setpoint_kw))
    yield p.time(e.at, WritePrecision.NS)


register_event(PoolSampled, _pool_sampled)
