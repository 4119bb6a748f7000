"""In-process implementations of the core's interfaces: the embedded default.

* :class:`InProcessBus` — topics as append-only lists with offsets; each subscriber
  reads from its own position, like a Kafka consumer group of one.
* :class:`RecordingSink` — keeps setpoint batches (its home is :mod:`adapters.csms`;
  re-exported here for older imports).
* :class:`InMemoryHistory` — keeps time-series points.
* :class:`SystemClock` — the wall clock, UTC.

Nothing here needs a server: this is what ``gridflex demo`` and ``gridflex simulate``
run on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from adapters.csms.recording import RecordingSink
from aggregator.interfaces import Record

__all__ = ["InMemoryHistory", "InProcessBus", "Point", "RecordingSink", "SystemClock"]


class InProcessBus:
    """An in-memory bus with per-topic offsets; ``poll`` returns what is new, oldest first.

    ``subscribe`` limits ``poll`` to some topics (default: every topic). Records keep
    their offsets, so a consumer can be rewound (``seek``) to replay, as after a restart.
    """

    def __init__(self, topics: Iterable[str] | None = None) -> None:
        self._log: dict[str, list[Record]] = defaultdict(list)
        self._position: dict[str, int] = defaultdict(int)
        self._order: list[tuple[str, int]] = []
        self._cursor = 0
        self._subscribed: set[str] | None = set(topics) if topics is not None else None

    def subscribe(self, topics: Iterable[str]) -> None:
        self._subscribed = set(topics)

    def publish(self, topic: str, key: str | None, value: bytes) -> None:
        log = self._log[topic]
        log.append(Record(topic=topic, key=key, value=value, offset=len(log)))
        self._order.append((topic, len(log) - 1))

    def poll(self, max_records: int = 10_000) -> Sequence[Record]:
        out: list[Record] = []
        while self._cursor < len(self._order) and len(out) < max_records:
            topic, offset = self._order[self._cursor]
            self._cursor += 1
            if self._subscribed is not None and topic not in self._subscribed:
                continue
            if offset < self._position[topic]:
                continue
            self._position[topic] = offset + 1
            out.append(self._log[topic][offset])
        return out

    def records(self, topic: str) -> Sequence[Record]:
        return tuple(self._log[topic])

    def seek(self, topic: str, offset: int) -> None:
        """Re-deliver ``topic`` from ``offset`` on the next polls."""
        self._position[topic] = offset
        self._order.extend((topic, o) for o in range(offset, len(self._log[topic])))


@dataclass(frozen=True, slots=True)
class Point:
    measurement: str
    time: datetime
    fields: Mapping[str, float]
    tags: Mapping[str, str]


class InMemoryHistory:
    """Keeps time-series points in a list."""

    def __init__(self) -> None:
        self.points: list[Point] = []

    def record(
        self,
        measurement: str,
        time: datetime,
        fields: Mapping[str, float],
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.points.append(Point(measurement, time, dict(fields), dict(tags or {})))


class SystemClock:
    """The wall clock, UTC-aware."""

    def now(self) -> datetime:
        return datetime.now(UTC)
