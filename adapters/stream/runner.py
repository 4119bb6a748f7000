"""The service on a real Kafka cluster (kafka-python): ingest, feeder partitions, resync.

:class:`StreamRunner` drives one :class:`~aggregator.service.replica.Service` replica:

* a consumer in the group ``group_id`` over telemetry and grid signals; records are keyed
  by feeder id, so each replica owns whole feeders — the feeders whose key hashes (Kafka's
  murmur2, as the default partitioner) to its assigned partitions;
* a group-less consumer over the frequency topic from its end: every replica applies its
  own participation factors to the same signal (decentralised FCR);
* an idempotent producer (``acks=all``) for setpoint batches (one record per CSMS per
  cycle, keyed by CSMS id), the compacted state topic (latest session per EVSE, keyed by
  EVSE id; a tombstone when the session ends) and the dead-letter topic (bad records
  with the reason in a header; the stream never stops).

Offsets are committed manually, only after the effects of the records (setpoints, state,
dead letters) are flushed to the broker. On partition assignment the replica builds a
fresh service for the feeders it now owns, restores their sessions from the state topic,
replays grid signals from the start (limits are idempotent by event id) and resumes
telemetry from the committed offsets (idempotent too). On revocation it flushes, commits
and stops publishing until the next assignment.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.partitioner.default import murmur2
from pydantic import TypeAdapter

from adapters.ops.metrics import Metrics
from adapters.stream.settings import KafkaSettings
from aggregator.errors import InvalidInput
from aggregator.fleet import SessionState
from aggregator.interfaces import Clock, Record
from aggregator.messages import SetpointBatch, encode
from aggregator.service.replica import Service, ServiceConfig
from aggregator.topology import Topology

__all__ = ["KafkaSetpointSink", "StreamRunner", "feeder_partition", "owned_topology"]

_STATE = TypeAdapter(SessionState)
log = structlog.get_logger("gridflex.kafka")


def feeder_partition(feeder_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner puts a record keyed ``feeder_id`` in."""
    return int(murmur2(feeder_id.encode()) & 0x7FFFFFFF) % partitions


def owned_topology(topology: Topology, partitions: int, owned: set[int]) -> Topology:
    """The part of ``topology`` whose feeders hash to the ``owned`` partitions."""
    feeders = tuple(
        f for f in topology.feeders if feeder_partition(f.feeder_id, partitions) in owned
    )
    ids = {f.feeder_id for f in feeders}
    sites = tuple(s for s in topology.sites if s.feeder_id in ids)
    return Topology(feeders, sites, topology.fleet_limit_kw)


class KafkaSetpointSink:
    """Publishes setpoint batches, one record per CSMS, keyed by CSMS id."""

    def __init__(self, producer: KafkaProducer, topic: str, metrics: Metrics) -> None:
        self.producer = producer
        self.topic = topic
        self.metrics = metrics

    def publish(self, batch: SetpointBatch) -> None:
        self.producer.send(self.topic, key=batch.csms_id.encode(), value=encode(batch))
        self.metrics.messages_out.labels(self.topic).inc()


@dataclass
class _Assignment:
    partitions: int
    owned: set[int]


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: StreamRunner) -> None:
        self.runner = runner

    def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self.runner._on_revoked(revoked)

    def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self.runner._on_assigned(assigned)


class StreamRunner:
    """One replica: consume, apply, publish, commit (see the module docstring)."""

    def __init__(
        self,
        topology: Topology,
        config: ServiceConfig,
        kafka: KafkaSettings,
        *,
        clock: Clock,
        metrics: Metrics,
        make_service: Callable[[Topology], Service] | None = None,
        events: Callable[[str, dict[str, object], datetime], None] | None = None,
    ) -> None:
        self.topology = topology
        self.config = config
        self.kafka = kafka
        self.topics = kafka.topics()
        self.clock = clock
        self.metrics = metrics
        self.service: Service | None = None
        self.ready = False
        self.last_loop = time.monotonic()
        self._make_service = make_service
        self._events = events
        self._last_tick = 0.0
        self._assigned: list[TopicPartition] | None = None
        self._plans_seen = 0
        self.producer = KafkaProducer(
            bootstrap_servers=kafka.bootstrap,
            client_id=f"{kafka.client_id}-producer",
            acks="all",
            enable_idempotence=True,
            linger_ms=0,
            max_in_flight_requests_per_connection=5,
        )
        self.sink = KafkaSetpointSink(self.producer, self.topics.setpoints, metrics)
        self.consumer = KafkaConsumer(
            bootstrap_servers=kafka.bootstrap,
            group_id=kafka.group_id,
            client_id=kafka.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=kafka.session_timeout_ms,
            heartbeat_interval_ms=kafka.heartbeat_interval_ms,
            max_poll_records=kafka.max_poll_records,
        )
        self.consumer.subscribe(
            [self.topics.telemetry, self.topics.grid_signals], listener=_Listener(self)
        )
        self.frequency = KafkaConsumer(
            bootstrap_servers=kafka.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            client_id=f"{kafka.client_id}-frequency",
        )
        fparts = self._partitions(self.frequency, self.topics.frequency)
        tps = [TopicPartition(self.topics.frequency, p) for p in fparts]
        self.frequency.assign(tps)
        self.frequency.seek_to_end(*tps)

    # ----------------------------------------------------------------- rebalance

    @staticmethod
    def _partitions(consumer: KafkaConsumer, topic: str) -> list[int]:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            parts = consumer.partitions_for_topic(topic)
            if parts:
                return sorted(parts)
            consumer.topics()  # refresh metadata (auto-creates the topic on a dev broker)
            time.sleep(0.2)
        raise InvalidInput(f"topic {topic!r} has no partitions (does it exist?)")

    def _on_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        # runs on kafka-python's IO thread: no blocking calls here. Every record polled so
        # far was committed at the end of its cycle, so nothing is left to commit.
        self.ready = False
        self.metrics.ready.set(0)
        self.service = None  # stop publishing for the feeders we may lose
        log.info("partitions_revoked", partitions=[f"{p.topic}:{p.partition}" for p in revoked])

    def _on_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        # IO thread too: only note the assignment; poll_once rebuilds on the main thread
        self._assigned = list(assigned)

    def _rebuild(self, assigned: list[TopicPartition]) -> None:
        """A fresh service for the feeders now owned, restored from the state topic."""
        n = len(self._partitions(self.consumer, self.topics.telemetry))
        owned = {p.partition for p in assigned if p.topic == self.topics.telemetry}
        topo = owned_topology(self.topology, n, owned)
        svc: Service | None = None
        restored = 0
        if topo.sites:  # a replica may own partitions no feeder hashes to: it idles, ready
            if self._make_service is not None:
                svc = self._make_service(topo)
            else:
                svc = Service(
                    topo,
                    self.config,
                    clock=self.clock,
                    sink=self.sink,
                    topics=self.topics,
                    events=self._events,
                )
            restored = self._restore(svc)
        signals = [p for p in assigned if p.topic == self.topics.grid_signals]
        if signals:
            self.consumer.seek_to_beginning(*signals)  # limits are idempotent by event id
        self.service = svc
        self._plans_seen = 0
        self.ready = True
        self.metrics.ready.set(1)
        feeders = [f.feeder_id for f in topo.feeders]
        log.info(
            "partitions_assigned",
            partitions=sorted(owned),
            feeders=feeders,
            restored_sessions=restored,
        )

    def _restore(self, svc: Service) -> int:
        """Sessions of the owned feeders from the compacted state topic."""
        reader = KafkaConsumer(
            bootstrap_servers=self.kafka.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            client_id=f"{self.kafka.client_id}-resync",
        )
        try:
            tps = [
                TopicPartition(self.topics.state, p)
                for p in self._partitions(reader, self.topics.state)
            ]
            reader.assign(tps)
            reader.seek_to_beginning(*tps)
            end = reader.end_offsets(tps)
            latest: dict[str, bytes | None] = {}
            while any(reader.position(tp) < end[tp] for tp in tps):
                for records in reader.poll(timeout_ms=200).values():
                    for r in records:
                        latest[r.key.decode()] = r.value
        finally:
            reader.close()
        sites = svc.topology.site_index
        count = 0
        for value in latest.values():
            if value is None:
                continue
            try:
                state = _STATE.validate_json(value)
            except ValueError:
                continue
            if state.site_id in sites:
                svc.fleet.restore(state)
                count += 1
        return count

    # ----------------------------------------------------------------- loop

    def poll_once(self, timeout_ms: int = 5) -> int:
        """One cycle: frequency first (fast path), then telemetry and grid signals."""
        self.last_loop = time.monotonic()
        done = self._frequency()
        batch = self.consumer.poll(
            timeout_ms=0 if done else timeout_ms, max_records=self.kafka.max_poll_records
        )
        if self._assigned is not None:
            assigned, self._assigned = self._assigned, None
            self._rebuild(assigned)
        svc = self.service
        for tp, records in batch.items():
            for r in records:
                self.metrics.messages_in.labels(tp.topic).inc()
                reason = (
                    "not_ready"
                    if svc is None
                    else svc.handle(
                        Record(
                            tp.topic,
                            r.key.decode() if r.key else None,
                            r.value,
                            r.offset,
                            tp.partition,
                        )
                    )
                )
                if reason is not None:
                    self._dead_letter(tp.topic, tp.partition, r, reason)
                done += 1
        if svc is not None:
            now = time.monotonic()
            if now - self._last_tick >= 1.0:
                self._last_tick = now
                svc.tick()
                self.metrics.sessions.set(int(svc.fleet.active[: svc.fleet.n_slots].sum()))
                for feeder, kw in svc.feeder_headroom_kw().items():
                    self.metrics.headroom.labels(feeder).set(kw)
            self._write_state(svc)
            self._drain_history(svc)
        if batch:
            self.producer.flush()  # effects first ...
            self.consumer.commit()  # ... then the offsets
        return done

    def _frequency(self) -> int:
        polled = self.frequency.poll(timeout_ms=0)
        records = [r for rs in polled.values() for r in rs]
        if not records:
            return 0
        self.metrics.messages_in.labels(self.topics.frequency).inc(len(records))
        newest = max(records, key=lambda r: r.timestamp)  # stale samples are superseded
        svc = self.service
        if svc is None:
            return len(records)
        t0 = time.perf_counter()
        reason = svc.handle(Record(self.topics.frequency, None, newest.value, newest.offset))
        if reason is not None:
            self._dead_letter(self.topics.frequency, 0, newest, reason)
        self.producer.flush()
        self.metrics.fast_loop.observe(time.perf_counter() - t0)
        return len(records)

    def _drain_history(self, svc: Service) -> None:
        """New plan times into the ``plan_solve`` histogram (the service keeps a bounded
        history of them; ``plans.solved`` counts every one)."""
        new = svc.counters["plans.solved"] - self._plans_seen
        if new > 0:
            for seconds in list(svc.plan_s)[-new:]:
                self.metrics.plan_solve.observe(seconds)
        self._plans_seen = svc.counters["plans.solved"]

    def _dead_letter(self, topic: str, partition: int, r: Any, reason: str) -> None:
        self.metrics.rejected.labels(reason.split(":", 1)[0][:40]).inc()
        headers = [
            ("reason", reason.encode()[:1000]),
            ("source-topic", topic.encode()),
            ("source-partition", str(partition).encode()),
            ("source-offset", str(r.offset).encode()),
        ]
        self.producer.send(self.topics.deadletter, key=r.key, value=r.value, headers=headers)
        self.metrics.messages_out.labels(self.topics.deadletter).inc()
        log.info(
            "record_rejected",
            topic=topic,
            partition=partition,
            offset=r.offset,
            reason=reason[:200],
        )

    def _write_state(self, svc: Service) -> None:
        if not svc.changed_evses:
            return
        for evse in svc.changed_evses:
            state = svc.fleet.session_state(evse)
            value = None if state is None else _STATE.dump_json(state)
            self.producer.send(self.topics.state, key=evse.encode(), value=value)
        self.metrics.messages_out.labels(self.topics.state).inc(len(svc.changed_evses))
        svc.changed_evses.clear()

    def close(self) -> None:
        """Stop polling, publish, commit, close (the SIGTERM path)."""
        self.producer.flush()
        try:
            self.consumer.commit()
        except Exception as exc:
            log.warning("final_commit_failed", error=str(exc))
        self.consumer.close()
        self.frequency.close()
        self.producer.close()
