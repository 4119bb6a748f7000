"""Typed events out of a service replica, and the sink they go to.

The service never exposes its internals to adapters: everything an adapter needs to know
(metrics, the audit log, the state topic, history) arrives as one of these frozen,
keyword-only values at an injected :class:`EventSink`. Each event carries ``at``, the
service clock's time when it happened (UTC-aware).

Invariants:

* events are emitted on the service's own thread, in the order things happened;
* an event is a value: adapters may keep it, it never changes and holds no arrays that the
  service mutates later (arrays in events are copies or read-only);
* ``SessionChanged`` is emitted for every applied telemetry record that changed a session
  (start, end, expiry, restore excluded), coalescing is the subscriber's business.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, Self, runtime_checkable

from aggregator.fleet import SessionState, SnapshotRow
from aggregator.fleet.table import state_from_row
from aggregator.messages import FrequencySignal

__all__ = [
    "BatchesPublished",
    "EventSink",
    "FanOut",
    "LimitApplied",
    "LimitCancelled",
    "LimitRejected",
    "NullSink",
    "PlanDiscarded",
    "PlanMade",
    "PoolSampled",
    "RecordingEventSink",
    "ServiceEvent",
    "ServiceStatus",
    "SessionChanged",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanMade:
    """A plan was taken into the fast loop's frame."""

    at: datetime
    plan_start: datetime
    sessions: int
    build_s: float
    solve_s: float
    solver: str
    fallback: str | None  # why the proportional fallback was used, or None
    grid_iterations: int = 0
    grid_note: str | None = None
    limits_version: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanDiscarded:
    """A finished plan was not used (computed before a newer limit, or it failed a check)."""

    at: datetime
    plan_start: datetime
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitApplied:
    """A DSO limit now bounds the fast loop's caps (from its window start)."""

    at: datetime
    event_id: str
    target_type: str
    target_id: str | None
    start: datetime
    end: datetime
    limit_kw: float
    source: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitCancelled:
    at: datetime
    event_id: str
    found: bool
    source: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitRejected:
    at: datetime
    event_id: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionChanged:
    """A session started, changed, ended or expired; ``row`` is None once it is gone.

    ``row`` is the session's numbers as a cheap tuple (one per meter value, at 20 000
    records/s); :attr:`state` builds the :class:`SessionState` value when a subscriber
    needs it (the state-topic writer, coalesced, only for what it writes)."""

    at: datetime
    evse_id: str
    csms_id: str
    row: SnapshotRow | None

    @classmethod
    def of(cls, at: datetime, evse_id: str, csms_id: str, state: SessionState | None) -> Self:
        row: SnapshotRow | None = None
        if state is not None:
            row = (
                state.session_id,
                state.site_id,
                state.csms_id,
                state.arrival.timestamp(),
                state.departure.timestamp(),
                state.last_ts.timestamp(),
                state.last_meter.timestamp(),
                state.energy_requested_kwh,
                state.energy_kwh,
                state.max_power_kw,
                state.min_power_kw,
                state.power_kw,
                state.min_charge_kw if state.min_charge_kw is not None else float("nan"),
                *(state.phase_w if state.phase_w is not None else (float("nan"),) * 3),
            )
        return cls(at=at, evse_id=evse_id, csms_id=csms_id, row=row)

    @property
    def session_id(self) -> str | None:
        return None if self.row is None else self.row[0]

    @property
    def state(self) -> SessionState | None:
        return None if self.row is None else state_from_row(self.evse_id, self.row)


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchesPublished:
    """One fast-loop run: setpoint batches handed to the setpoint sink."""

    at: datetime
    batches: int
    deviation_kw: float
    elapsed_s: float
    source_ts: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolSampled:
    """One fast-loop run's pool totals (kW), the rows of the market's 1 s record (the
    service emits at most two per second: the first run of each second, and the first run
    with a signal when the second's first run had none).

    ``signal`` is what was asked (frequency sample or aFRR request; ``None`` for a
    re-dispatch without a new signal), ``reserve_kw`` the reserve held, ``deviation_kw``
    what the activation rule made of it, ``baseline_kw`` the planned pool power (working
    point) and ``setpoint_kw`` the sum of the setpoints sent; ``measured_kw`` is the pool's
    measured power, ``None`` when the emitter has no measurement of that moment.
    """

    at: datetime
    signal: FrequencySignal | None
    reserve_kw: float
    baseline_kw: float
    deviation_kw: float
    setpoint_kw: float
    measured_kw: float | None = None


@dataclass(frozen=True, kw_only=True)
class ServiceStatus:
    """A read-only snapshot for health and metrics."""

    at: datetime
    sessions: int
    plan_age_s: float | None
    planning: bool  # a job was submitted and its result is not in yet
    headroom_kw: dict[str, float]  # per feeder: cap now minus the limit-safe base


ServiceEvent = (
    PlanMade
    | PlanDiscarded
    | LimitApplied
    | LimitCancelled
    | LimitRejected
    | SessionChanged
    | BatchesPublished
    | PoolSampled
)


@runtime_checkable
class EventSink(Protocol):
    def emit(self, event: ServiceEvent) -> None:
        """Take one event (on the service's thread: never block)."""
        ...


class NullSink:
    """Drops every event."""

    def emit(self, event: ServiceEvent) -> None:
        return None


class FanOut:
    """Hands every event to each of several sinks, in order."""

    def __init__(self, sinks: Iterable[EventSink]) -> None:
        self.sinks = tuple(sinks)

    def emit(self, event: ServiceEvent) -> None:
        for sink in self.sinks:
            sink.emit(event)


class RecordingEventSink:
    """Keeps every event in a list (tests, simulations)."""

    def __init__(self) -> None:
        self.events: list[ServiceEvent] = []

    def emit(self, event: ServiceEvent) -> None:
        self.events.append(event)

    def of(self, kind: type[ServiceEvent]) -> list[ServiceEvent]:
        return [e for e in self.events if isinstance(e, kind)]
