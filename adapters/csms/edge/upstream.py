"""The edge's link to gridflex: setpoint batches in, buffered records out (embedded or Kafka).

:class:`Upstream` is all the runner needs: ``poll_batches`` (raw ``gridflex.setpoints``
records keyed by this edge's CSMS id, oldest first) and ``send`` (records from the
durable buffer, in order; returns only when upstream acknowledged every one). Both raise
:class:`~aggregator.errors.TransientIO` when upstream cannot be reached: the runner then
keeps the records buffered and runs on its own.

Buffered records name a *kind* (``telemetry``, ``grid_signals``, ``edge_reports``); an
upstream maps kinds to topic names. Every record carries the header
``gridflex-idempotency-key: <edge id>:<seq>`` (Kafka) so its reader can drop a repeat: one
happens after a crash between acknowledgement and the buffer's ``ack``, or when Kafka did
not confirm part of a send in time (the whole send is retried; some of it may have landed).

:class:`EdgeReport` is the edge's own upstream message (kind ``edge_reports``, keyed by
CSMS id): a Rejected profile, a rounding, a GetCompositeSchedule check, a mode change.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from adapters.csms.edge.buffer import Buffered
from adapters.stream.inprocess import InProcessBus
from aggregator.errors import TransientIO
from aggregator.interfaces import DEFAULT_TOPICS, Topics

__all__ = ["EDGE_REPORTS_TOPIC", "EdgeReport", "EmbeddedUpstream", "KafkaUpstream", "Upstream"]

EDGE_REPORTS_TOPIC = "gridflex.edge-reports"
IDEMPOTENCY_HEADER = "gridflex-idempotency-key"


class EdgeReport(BaseModel):
    """What the edge tells upstream about its own actions (one record per fact)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    v: Literal[1] = 1
    type: Literal["edge_report"] = "edge_report"
    ts: datetime
    csms_id: str
    kind: str
    station_id: str = ""
    evse_id: str = ""
    purpose: str = ""
    requested_kw: float = 0.0
    applied_kw: float = 0.0
    detail: str = ""


class Upstream(Protocol):
    def poll_batches(self) -> list[bytes]: ...

    def send(self, records: Sequence[Buffered]) -> None: ...


def _topic_of(kind: str, topics: Topics, reports_topic: str) -> str:
    if kind == "telemetry":
        return topics.telemetry
    if kind == "grid_signals":
        return topics.grid_signals
    return reports_topic


class EmbeddedUpstream:
    """Upstream on the in-process bus (``gridflex serve`` embedded, tests)."""

    def __init__(
        self,
        bus: InProcessBus,
        csms_id: str,
        *,
        topics: Topics = DEFAULT_TOPICS,
        reports_topic: str = EDGE_REPORTS_TOPIC,
    ) -> None:
        self.bus = bus
        self.csms_id = csms_id
        self.topics = topics
        self.reports_topic = reports_topic
        self._offset = 0

    def poll_batches(self) -> list[bytes]:
        records = self.bus.records(self.topics.setpoints)
        new = records[self._offset :]
        self._offset = len(records)
        return [r.value for r in new if r.key == self.csms_id]

    def send(self, records: Sequence[Buffered]) -> None:
        for r in records:
            self.bus.publish(_topic_of(r.topic, self.topics, self.reports_topic), r.key, r.value)


class KafkaUpstream:
    """Upstream on Kafka (confluent-kafka): a consumer of the setpoints topic in its own
    group (``gridflex-edge-<csms id>``, committed after each poll: a restarted edge
    continues where it stopped) and an idempotent producer (``acks=all``)."""

    def __init__(
        self,
        bootstrap: str,
        csms_id: str,
        edge_id: str,
        *,
        topics: Topics = DEFAULT_TOPICS,
        reports_topic: str = EDGE_REPORTS_TOPIC,
        flush_timeout_s: float = 10.0,
    ) -> None:
        from confluent_kafka import Consumer, Producer

        self.csms_id = csms_id
        self.edge_id = edge_id
        self.topics = topics
        self.reports_topic = reports_topic
        self.flush_timeout_s = flush_timeout_s
        common: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "client.id": f"gridflex-edge-{edge_id}",
        }
        self._producer = Producer(
            {
                **common,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": int(flush_timeout_s * 1000),
                "partitioner": "murmur2_random",
            }
        )
        self._consumer = Consumer(
            {
                **common,
                "group.id": f"gridflex-edge-{csms_id}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        self._consumer.subscribe([topics.setpoints])

    def poll_batches(self) -> list[bytes]:
        out: list[bytes] = []
        msgs = self._consumer.consume(num_messages=1000, timeout=0.05)
        for m in msgs:
            if m.error() is not None:
                raise TransientIO(f"setpoints consumer: {m.error()}")
            if m.key() is not None and m.key().decode() == self.csms_id and m.value() is not None:
                out.append(bytes(m.value()))
        if msgs:
            self._consumer.commit(asynchronous=True)
        return out

    def send(self, records: Sequence[Buffered]) -> None:
        failed: list[str] = []

        def done(err: Any, _msg: Any) -> None:
            if err is not None:
                failed.append(str(err))

        for r in records:
            self._producer.produce(
                _topic_of(r.topic, self.topics, self.reports_topic),
                key=r.key.encode(),
                value=r.value,
                headers=[(IDEMPOTENCY_HEADER, r.idempotency_key(self.edge_id).encode())],
                on_delivery=done,
            )
        left = self._producer.flush(self.flush_timeout_s)
        if left or failed:
            raise TransientIO(f"upstream did not acknowledge {left or len(failed)} records")

    def close(self) -> None:
        self._consumer.close()
        self._producer.flush(self.flush_timeout_s)
