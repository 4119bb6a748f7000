"""The alternative transport: kafka-python (``GRIDFLEX_KAFKA__CLIENT=kafka-python``).

Same clients and invariants as :mod:`adapters.stream.confluent` (see
:mod:`adapters.stream.transport`): a group consumer with manual commits and the ``range``
assignor whose rebalance listener seeks replay partitions to their beginning; a
group-less frequency consumer assigned at the end of every partition; an idempotent
``acks=all`` producer (kafka-python's default partitioner is murmur2); the admin client
for topics. kafka-python runs rebalance callbacks inside ``poll`` on the caller's thread.

Joining a group takes a JoinGroup and a SyncGroup round trip. kafka-python 3 drops a join
that completes between two polls and sends JoinGroup again, and a leader's repeated
JoinGroup starts a new rebalance: with the runner's 5 ms polls two replicas were seen
rebalancing every 100 ms for up to a minute. So from a revocation (which starts every
join) until the next assignment, ``poll`` waits up to :data:`_JOIN_WAIT_MS` and the join
completes inside one poll. Nothing is lost by the wait: a replica publishes nothing
between a revocation and its next assignment.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTP  # noqa: N814
from kafka.admin import NewTopic
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from adapters.stream.settings import KafkaSettings
from adapters.stream.transport import (
    Headers,
    Message,
    PartitionsCallback,
    TopicPartition,
    TopicSpec,
)
from aggregator.errors import TransientIO

__all__ = ["KafkaPythonTransport"]

_TIMEOUT_MS = 10_000
_READ_TIMEOUT_S = 120.0  # a takeover read (state, setpoints) that takes longer fails
_JOIN_WAIT_MS = 500  # a poll's wait while the group (re)joins: see the module docstring


def _message(r: Any) -> Message:
    return Message(
        topic=r.topic,
        partition=r.partition,
        offset=r.offset,
        key=r.key,
        value=r.value,
        timestamp_ms=r.timestamp,
        headers=tuple((k, v or b"") for k, v in r.headers) if r.headers else (),
    )


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self,
        consumer: KafkaConsumer,
        replay: set[str],
        on_assign: PartitionsCallback,
        on_revoke: PartitionsCallback,
    ) -> None:
        self.consumer = consumer
        self.replay = replay
        self.on_assign = on_assign
        self.on_revoke = on_revoke
        self.joining = True  # until the first assignment

    def on_partitions_revoked(self, revoked: Sequence[KTP]) -> None:
        self.joining = True  # kafka-python revokes (maybe nothing) before every join
        self.on_revoke([TopicPartition(p.topic, p.partition) for p in revoked])

    def on_partitions_assigned(self, assigned: Sequence[KTP]) -> None:
        again = [p for p in assigned if p.topic in self.replay]
        if again:
            self.consumer.seek_to_beginning(*again)
        self.joining = False
        self.on_assign([TopicPartition(p.topic, p.partition) for p in assigned])


class KafkaPythonTransport:
    """A replica's Kafka clients on kafka-python (see the module docstring)."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._producer = KafkaProducer(
            bootstrap_servers=settings.bootstrap,
            client_id=f"{settings.client_id}-producer",
            acks="all",
            enable_idempotence=True,
            linger_ms=0,
            max_in_flight_requests_per_connection=5,
        )
        self._consumer = KafkaConsumer(
            bootstrap_servers=settings.bootstrap,
            group_id=settings.group_id,
            client_id=settings.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            max_poll_records=settings.max_poll_records,
            allow_auto_create_topics=False,
        )
        self._admin = KafkaAdminClient(
            bootstrap_servers=settings.bootstrap, client_id=f"{settings.client_id}-admin"
        )
        self._freq: KafkaConsumer | None = None
        self._futures: list[Any] = []
        self._listener: _Listener | None = None

    # ------------------------------------------------------------------ consumer

    def subscribe(
        self,
        topics: Sequence[str],
        *,
        replay: Sequence[str],
        on_assign: PartitionsCallback,
        on_revoke: PartitionsCallback,
    ) -> None:
        self._listener = _Listener(self._consumer, set(replay), on_assign, on_revoke)
        self._consumer.subscribe(list(topics), listener=self._listener)

    def poll(self, timeout_s: float, max_records: int) -> Sequence[Message]:
        try:
            # kafka-python 3 completes a group join only in a poll that may wait: >= 5 ms
            wait_ms = max(5, int(timeout_s * 1000))
            if self._listener is not None and self._listener.joining:
                wait_ms = max(wait_ms, _JOIN_WAIT_MS)
            got = self._consumer.poll(timeout_ms=wait_ms, max_records=max_records)
        except KafkaError as exc:
            raise TransientIO(str(exc)) from exc
        return [_message(r) for records in got.values() for r in records]

    def poll_frequency(self, timeout_s: float) -> Sequence[Message]:
        if self._freq is None:
            topic = self.settings.frequency_topic
            self._freq = KafkaConsumer(
                bootstrap_servers=self.settings.bootstrap,
                group_id=None,
                enable_auto_commit=False,
                client_id=f"{self.settings.client_id}-frequency",
            )
            tps = [KTP(topic, p) for p in self.partitions(topic) or [0]]
            self._freq.assign(tps)
            self._freq.seek_to_end(*tps)
        got = self._freq.poll(timeout_ms=int(timeout_s * 1000))
        return [_message(r) for records in got.values() for r in records]

    def position(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        out: dict[TopicPartition, int] = {}
        assigned = self._consumer.assignment()
        for tp in tps:
            k = KTP(tp.topic, tp.partition)
            if k in assigned:
                out[tp] = int(self._consumer.position(k))
        return out

    def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        got = self._consumer.end_offsets([KTP(tp.topic, tp.partition) for tp in tps])
        return {TopicPartition(k.topic, k.partition): int(v) for k, v in got.items()}

    def beginning_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        got = self._consumer.beginning_offsets([KTP(tp.topic, tp.partition) for tp in tps])
        return {TopicPartition(k.topic, k.partition): int(v) for k, v in got.items()}

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        todo = {
            KTP(tp.topic, tp.partition): OffsetAndMetadata(off, "", -1)
            for tp, off in offsets.items()
        }
        try:
            self._consumer.commit(offsets=todo)
        except KafkaError as exc:
            raise TransientIO(f"commit: {exc}") from exc

    # ------------------------------------------------------------------ producer

    def produce(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers = ()
    ) -> None:
        self._futures.append(
            self._producer.send(topic, key=key, value=value, headers=list(headers) or None)
        )

    def flush(self, timeout_s: float = 30.0) -> None:
        # the records queued so far (others may be queued meanwhile from another thread:
        # a later flush checks them)
        futures, self._futures = self._futures, []
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            raise TransientIO(f"flush: {exc}") from exc
        failed = [f.exception for f in futures if f.failed()]
        if failed or any(not f.is_done for f in futures):
            raise TransientIO(f"records not acknowledged: {failed[:5]}")

    # ------------------------------------------------------------------ topics

    def partitions(self, topic: str) -> list[int] | None:
        try:
            meta = self._admin.describe_topics([topic])
        except KafkaError as exc:
            raise TransientIO(f"metadata of {topic}: {exc}") from exc
        for t in meta:  # kafka-python 2.x names it "topic", 3.x "name"
            name = t.get("name", t.get("topic"))
            if name == topic and not t.get("error_code") and t.get("partitions"):
                return sorted(
                    int(p.get("partition_index", p.get("partition"))) for p in t["partitions"]
                )
        return None

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
        reader = KafkaConsumer(
            bootstrap_servers=self.settings.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            client_id=f"{self.settings.client_id}-reader",
        )
        try:
            tps = [KTP(topic, p) for p in parts]
            reader.assign(tps)
            ends = reader.end_offsets(tps)
            if since_ms is None:
                reader.seek_to_beginning(*tps)
            else:
                found = reader.offsets_for_times(dict.fromkeys(tps, since_ms))
                for tp in tps:
                    hit = found.get(tp)
                    reader.seek(tp, ends[tp] if hit is None else hit.offset)
            deadline = time.monotonic() + _READ_TIMEOUT_S
            while any(reader.position(tp) < ends[tp] for tp in tps):
                if time.monotonic() > deadline:
                    raise TransientIO(f"{topic}: not read to its end in {_READ_TIMEOUT_S} s")
                for records in reader.poll(timeout_ms=200).values():
                    for r in records:
                        if r.offset < ends[KTP(r.topic, r.partition)]:
                            yield _message(r)
        finally:
            reader.close()

    def create_topics(self, specs: Sequence[TopicSpec]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for s in specs:  # one by one: an existing topic must not fail the others
            topic = NewTopic(s.name, s.partitions, s.replication, topic_configs=dict(s.config))
            try:
                self._admin.create_topics([topic], timeout_ms=_TIMEOUT_MS)
                out[s.name] = None
            except TopicAlreadyExistsError:
                out[s.name] = None
            except KafkaError as exc:
                out[s.name] = str(exc)
        return out

    def close(self) -> None:
        self._producer.flush(timeout=10)
        self._consumer.close()
        if self._freq is not None:
            self._freq.close()
        self._producer.close()
        self._admin.close()
