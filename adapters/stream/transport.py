"""The Kafka transport seam: what the stream runner needs from a Kafka client, and nothing more.

:class:`~adapters.stream.runner.StreamRunner` runs on this protocol only (the way httpx's
client runs on ``BaseTransport``). Three implementations:

* :class:`~adapters.stream.confluent.ConfluentTransport` — confluent-kafka (librdkafka), the
  default;
* :class:`~adapters.stream.kafkapython.KafkaPythonTransport` — kafka-python, selected with
  ``GRIDFLEX_KAFKA__CLIENT=kafka-python``;
* :class:`~adapters.stream.fake.FakeTransport` — in memory, for unit tests (partitions,
  offsets, consumer groups, rebalances triggered by the test, an ordered log of flushes and
  commits).

A transport holds three clients: a **group consumer** over telemetry and grid signals
(manual commits, eager ``range`` assignment so that partition *p* of both topics goes to
the same replica), a **group-less consumer** of the frequency topic that starts at its end,
and one **producer** (idempotent, ``acks=all``, murmur2 partitioner as Kafka's Java client,
so records keyed by feeder land where :func:`~adapters.stream.topics.feeder_partition`
says). A short-lived **reader** reads the state and setpoints topics up to their end
offsets.

Invariants every implementation keeps:

* assignment and revocation callbacks run inside :meth:`Transport.poll`, on the caller's
  thread, before any record of the new assignment is returned;
* on assignment, partitions of the ``replay`` topics given to :meth:`Transport.subscribe`
  start at their beginning (grid signals: limits are idempotent by event id); the others
  at the group's committed offset (earliest when none);
* :meth:`Transport.commit` stores exactly the offsets given (the next offset to read);
  the runner calls it only after :meth:`Transport.flush` returned for the records' effects;
* :meth:`Transport.flush` returns only when every record produced before it is
  acknowledged, and raises :class:`~aggregator.errors.TransientIO` when one is not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = [
    "Headers",
    "Message",
    "PartitionsCallback",
    "TopicPartition",
    "TopicSpec",
    "Transport",
]

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True, order=True)
class TopicPartition:
    topic: str
    partition: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """One consumed record; ``timestamp_ms`` is the record's (producer or log append) time."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int = 0
    headers: Headers = ()

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicSpec:
    """A topic the service needs: name, partitions, and its broker-side configuration."""

    name: str
    partitions: int
    replication: int = 1
    config: Mapping[str, str] = field(default_factory=dict)


PartitionsCallback = Callable[[Sequence[TopicPartition]], None]


@runtime_checkable
class Transport(Protocol):
    """A replica's Kafka clients (see the module docstring for the invariants)."""

    def subscribe(
        self,
        topics: Sequence[str],
        *,
        replay: Sequence[str],
        on_assign: PartitionsCallback,
        on_revoke: PartitionsCallback,
    ) -> None:
        """Join the group over ``topics``; partitions of ``replay`` start at the beginning."""
        ...

    def poll(self, timeout_s: float, max_records: int) -> Sequence[Message]:
        """Records of the group consumer (runs rebalance callbacks); ``[]`` after the timeout."""
        ...

    def poll_frequency(self, timeout_s: float) -> Sequence[Message]:
        """New records of the frequency topic (group-less, from its end at start)."""
        ...

    def position(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The group consumer's next offset to read, per assigned partition."""
        ...

    def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The offset the next record produced to each partition will get (high watermark)."""
        ...

    def beginning_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]: ...

    def produce(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers = ()
    ) -> None:
        """Queue one record (``value=None`` is a tombstone); never blocks for long."""
        ...

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every queued record is acknowledged (raises ``TransientIO`` if not)."""
        ...

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Store the group's committed offsets (synchronously)."""
        ...

    def partitions(self, topic: str) -> list[int] | None:
        """The topic's partition ids, or ``None`` when the topic does not exist."""
        ...

    def read(
        self,
        topic: str,
        *,
        since_ms: int | None = None,
        partitions: Sequence[int] | None = None,
    ) -> Iterator[Message]:
        """Every record of ``topic`` (of ``partitions``, default all) from the beginning, or
        from the first record at or after ``since_ms`` (epoch ms), up to the end offsets
        taken at the call."""
        ...

    def create_topics(self, specs: Sequence[TopicSpec]) -> dict[str, str | None]:
        """Create the topics; per name, ``None`` when created (or already there) or why not."""
        ...

    def close(self) -> None: ...
