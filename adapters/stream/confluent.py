"""The default transport: confluent-kafka on librdkafka.

Clients and their settings (the invariants are those of :mod:`adapters.stream.transport`):

* group consumer: manual commits, ``auto.offset.reset=earliest``, eager ``range``
  assignment (partition *p* of telemetry and grid signals to the same replica); in the
  assignment callback the partitions of the replay topics are assigned at
  ``OFFSET_BEGINNING``;
* frequency consumer: its own random group id (never committed), every partition assigned
  at ``OFFSET_END`` on first use (the topics exist by then);
* producer: ``acks=all``, idempotent, ``linger.ms=0``, ``partitioner=murmur2_random``
  (Kafka's Java default, so a record keyed by feeder lands on
  :func:`~adapters.stream.topics.feeder_partition`); delivery errors are remembered by a
  global delivery callback and raised from :meth:`ConfluentTransport.flush` as
  :class:`~aggregator.errors.TransientIO`;
* topic existence and creation through the ``AdminClient`` (its metadata requests never
  auto-create a topic).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
)
from confluent_kafka import TopicPartition as CTP  # noqa: N814
from confluent_kafka.admin import AdminClient, NewTopic

from adapters.stream.settings import KafkaSettings
from adapters.stream.transport import (
    Headers,
    Message,
    PartitionsCallback,
    TopicPartition,
    TopicSpec,
)
from aggregator.errors import TransientIO

__all__ = ["ConfluentTransport"]

_TIMEOUT_S = 10.0
_READ_TIMEOUT_S = 120.0  # a takeover read (state, setpoints) that takes longer fails


def _watermarks(consumer: Any, tp: Any) -> tuple[int, int]:
    """Low and high watermark, retried while a new topic's leader is being elected."""
    deadline = time.monotonic() + _TIMEOUT_S
    while True:
        try:
            lo, hi = consumer.get_watermark_offsets(tp, timeout=_TIMEOUT_S, cached=False)
            return int(lo), int(hi)
        except KafkaException as exc:
            if time.monotonic() >= deadline:
                raise TransientIO(f"offsets of {tp.topic}:{tp.partition}: {exc}") from exc
            time.sleep(0.1)


def _take(consumer: Any, n: int, timeout_s: float) -> list[Any]:
    """Up to ``n`` messages, returning at the first one: ``consume(n, timeout)`` would wait
    for ``n`` messages until the timeout (half of it on average, per frequency sample)."""
    if timeout_s > 0:
        first = consumer.poll(timeout_s)
        if first is None:
            return []
        return [first, *consumer.consume(num_messages=n - 1, timeout=0)] if n > 1 else [first]
    return list(consumer.consume(num_messages=n, timeout=0))


def _message(m: Any) -> Message:
    headers = m.headers()
    return Message(
        topic=m.topic(),
        partition=m.partition(),
        offset=m.offset(),
        key=m.key(),
        value=m.value(),
        timestamp_ms=m.timestamp()[1],
        headers=tuple((k, v or b"") for k, v in headers) if headers else (),
    )


class ConfluentTransport:
    """A replica's Kafka clients on confluent-kafka (see the module docstring)."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        # Nagle off: a lone small record (a batch, a frequency sample) is sent at once, not
        # after the peer's delayed ACK (kafka-python sets TCP_NODELAY by default too)
        common = {"bootstrap.servers": settings.bootstrap, "socket.nagle.disable": True}
        self._errors: list[str] = []
        self._producer = Producer(
            {
                **common,
                "client.id": f"{settings.client_id}-producer",
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 0,
                "partitioner": "murmur2_random",
                "on_delivery": self._delivered,
            }
        )
        self._consumer = Consumer(
            {
                **common,
                "client.id": settings.client_id,
                "group.id": settings.group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": settings.session_timeout_ms,
                "heartbeat.interval.ms": settings.heartbeat_interval_ms,
                "partition.assignment.strategy": "range",
                "allow.auto.create.topics": False,
            }
        )
        self._admin = AdminClient(common)
        self._freq: Any = None

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()}: {err}")

    # ------------------------------------------------------------------ consumer

    def subscribe(
        self,
        topics: Sequence[str],
        *,
        replay: Sequence[str],
        on_assign: PartitionsCallback,
        on_revoke: PartitionsCallback,
    ) -> None:
        again = set(replay)

        def assigned(consumer: Any, parts: list[Any]) -> None:
            for p in parts:
                if p.topic in again:
                    p.offset = OFFSET_BEGINNING
            consumer.assign(parts)
            on_assign([TopicPartition(p.topic, p.partition) for p in parts])

        def revoked(consumer: Any, parts: list[Any]) -> None:
            on_revoke([TopicPartition(p.topic, p.partition) for p in parts])

        self._consumer.subscribe(list(topics), on_assign=assigned, on_revoke=revoked)

    def poll(self, timeout_s: float, max_records: int) -> Sequence[Message]:
        try:
            raw = _take(self._consumer, max_records, timeout_s)
        except KafkaException as exc:
            raise TransientIO(str(exc)) from exc
        return [_message(m) for m in raw if m.error() is None]

    def poll_frequency(self, timeout_s: float) -> Sequence[Message]:
        if self._freq is None:
            topic = self.settings.frequency_topic
            self._freq = Consumer(
                {
                    "bootstrap.servers": self.settings.bootstrap,
                    "socket.nagle.disable": True,
                    "client.id": f"{self.settings.client_id}-frequency",
                    "group.id": f"{self.settings.group_id}-frequency-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                    "allow.auto.create.topics": False,
                }
            )
            parts = self.partitions(topic) or [0]
            self._freq.assign([CTP(topic, p, OFFSET_END) for p in parts])
        raw = _take(self._freq, 1000, timeout_s)
        return [_message(m) for m in raw if m.error() is None]

    def position(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        got = self._consumer.position([CTP(tp.topic, tp.partition) for tp in tps])
        return {TopicPartition(p.topic, p.partition): p.offset for p in got}

    def _watermarks(self, tps: Sequence[TopicPartition], high: bool) -> dict[TopicPartition, int]:
        out: dict[TopicPartition, int] = {}
        for tp in tps:
            lo, hi = _watermarks(self._consumer, CTP(tp.topic, tp.partition))
            out[tp] = hi if high else lo
        return out

    def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return self._watermarks(tps, high=True)

    def beginning_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return self._watermarks(tps, high=False)

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        parts = [CTP(tp.topic, tp.partition, off) for tp, off in offsets.items()]
        try:
            self._consumer.commit(offsets=parts, asynchronous=False)
        except KafkaException as exc:
            raise TransientIO(f"commit: {exc}") from exc

    # ------------------------------------------------------------------ producer

    def produce(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers = ()
    ) -> None:
        while True:
            try:
                if headers:
                    self._producer.produce(topic, value=value, key=key, headers=list(headers))
                else:
                    self._producer.produce(topic, value=value, key=key)
                return
            except BufferError:  # the local queue is full: let deliveries drain
                self._producer.poll(0.05)

    def flush(self, timeout_s: float = 30.0) -> None:
        left = self._producer.flush(timeout_s)
        if left or self._errors:
            errors, self._errors = self._errors, []
            raise TransientIO(f"{left} records unacknowledged; errors: {errors[:5]}")

    # ------------------------------------------------------------------ topics

    def partitions(self, topic: str) -> list[int] | None:
        try:  # all topics: a metadata request naming one may auto-create it on the broker
            meta = self._admin.list_topics(timeout=_TIMEOUT_S)
        except KafkaException as exc:
            raise TransientIO(f"metadata of {topic}: {exc}") from exc
        t = meta.topics.get(topic)
        if t is None or t.error is not None or not t.partitions:
            return None
        return sorted(t.partitions)

    def read(
        self,
        topic: str,
        *,
        since_ms: int | None = None,
        partitions: Sequence[int] | None = None,
    ) -> Iterator[Message]:
        parts = self.partitions(topic) or []
        if partitions is not None:
            parts = [p for p in parts if p in partitions]
        if not parts:
            return
        reader = Consumer(
            {
                "bootstrap.servers": self.settings.bootstrap,
                "client.id": f"{self.settings.client_id}-reader",
                "group.id": f"{self.settings.group_id}-reader-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "allow.auto.create.topics": False,
                "enable.partition.eof": True,  # ends a partition whose tail is a gap
            }
        )
        try:
            tps = [CTP(topic, p) for p in parts]
            ends = {}
            for tp in tps:
                _lo, hi = _watermarks(reader, tp)
                ends[tp.partition] = hi
            if since_ms is None:
                start = [CTP(topic, p, OFFSET_BEGINNING) for p in parts]
            else:
                found = reader.offsets_for_times(
                    [CTP(topic, p, since_ms) for p in parts], timeout=_TIMEOUT_S
                )
                start = [CTP(topic, t.partition, ends[t.partition] if t.offset < 0 else t.offset)
                         for t in found]  # fmt: skip
            todo = {t.partition for t in start if t.offset < ends[t.partition]}
            if not todo:
                return
            reader.assign(start)
            deadline = time.monotonic() + _READ_TIMEOUT_S
            while todo:
                if time.monotonic() > deadline:
                    raise TransientIO(f"{topic}: not read to its end in {_READ_TIMEOUT_S} s")
                for m in _take(reader, 1000, 1.0):
                    if m.error() is not None:
                        if m.error().code() == KafkaError._PARTITION_EOF:
                            todo.discard(m.partition())
                        continue
                    if m.offset() < ends[m.partition()]:
                        yield _message(m)
                    if m.offset() + 1 >= ends[m.partition()]:
                        todo.discard(m.partition())
        finally:
            reader.close()

    def create_topics(self, specs: Sequence[TopicSpec]) -> dict[str, str | None]:
        new = [
            NewTopic(
                s.name,
                num_partitions=s.partitions,
                replication_factor=s.replication,
                config=dict(s.config),
            )
            for s in specs
        ]
        out: dict[str, str | None] = {}
        for name, future in self._admin.create_topics(new, request_timeout=_TIMEOUT_S).items():
            try:
                future.result()
                out[name] = None
            except KafkaException as exc:
                err = exc.args[0]
                exists = err.code() == KafkaError.TOPIC_ALREADY_EXISTS
                out[name] = None if exists else str(err)
        return out

    def close(self) -> None:
        self._producer.flush(10.0)
        self._consumer.close()
        if self._freq is not None:
            self._freq.close()
