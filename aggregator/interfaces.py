"""The small interfaces the core depends on; adapters implement them.

* :class:`Clock` — where "now" comes from (never ``datetime.now()`` inside the core).
* :class:`SetpointSink` — where setpoint batches go (Kafka topic, OCPP, S2, a simulator).
* :class:`HistorySink` — where time series go (InfluxDB, memory).
* :class:`MessageBus` — records in and out by topic (in-process or Kafka).

:class:`ManualClock` is the one implementation kept in the core: simulations and tests
advance it by hand, so it is pure logic, not I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from aggregator.messages import SetpointBatch
from aggregator.pebc import is_utc

__all__ = [
    "DEFAULT_TOPICS",
    "Clock",
    "HistorySink",
    "ManualClock",
    "MessageBus",
    "Record",
    "SetpointSink",
    "Topics",
]


@runtime_checkable
class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, UTC-aware."""
        ...


@runtime_checkable
class SetpointSink(Protocol):
    def publish(self, batch: SetpointBatch) -> bool | None:
        """Deliver one CSMS's setpoint batch; ``False`` means it was dropped (e.g. a closed
        gate during a takeover), so the service does not count it as in force."""
        ...


@runtime_checkable
class HistorySink(Protocol):
    def record(
        self,
        measurement: str,
        time: datetime,
        fields: Mapping[str, float],
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Append one point of a time series."""
        ...


@dataclass(frozen=True, slots=True)
class Record:
    """One message on a bus: topic, key (e.g. feeder id), raw value bytes, position."""

    topic: str
    key: str | None
    value: bytes
    offset: int = -1
    partition: int = 0


@runtime_checkable
class MessageBus(Protocol):
    def publish(self, topic: str, key: str | None, value: bytes) -> None:
        """Append a record to ``topic``."""
        ...

    def poll(self, max_records: int = 10_000) -> Sequence[Record]:
        """Records not yet consumed by this subscriber, oldest first."""
        ...


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names (configurable; these are the defaults of DESIGN.md)."""

    telemetry: str = "gridflex.telemetry"
    grid_signals: str = "gridflex.grid-signals"
    frequency: str = "gridflex.frequency"
    setpoints: str = "gridflex.setpoints"
    state: str = "gridflex.state"
    deadletter: str = "gridflex.deadletter"


DEFAULT_TOPICS = Topics()


class ManualClock:
    """A clock that only moves when told to (simulation, tests)."""

    def __init__(self, start: datetime) -> None:
        if not is_utc(start):
            raise ValueError("ManualClock needs a UTC-aware start")
        self._now = start

    def now(self) -> datetime:
        return self._now

    def set(self, t: datetime) -> None:
        if not is_utc(t):
            raise ValueError("time must be UTC-aware")
        self._now = t

    def advance(self, seconds: float) -> datetime:
        self._now = self._now + timedelta(seconds=seconds)
        return self._now
