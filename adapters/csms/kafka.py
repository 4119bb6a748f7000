"""Setpoint batches to Kafka: one record per CSMS batch, keyed by CSMS id (so a CSMS reads
its batches in order from one partition), on any :class:`~adapters.stream.transport.Transport`.

The sink only queues the record; the stream runner flushes (the fast loop at once after a
frequency record, the rest at the end of each cycle, before it commits offsets).
"""

from __future__ import annotations

from adapters.ops.metrics import Metrics
from adapters.stream.transport import Transport
from aggregator.messages import SetpointBatch, encode

__all__ = ["KafkaSetpointSink"]


class KafkaSetpointSink:
    """Publishes setpoint batches, one record per CSMS, keyed by CSMS id."""

    def __init__(self, transport: Transport, topic: str, metrics: Metrics) -> None:
        self.transport = transport
        self.topic = topic
        self.metrics = metrics
        self._out = metrics.messages_out.labels(topic)

    def publish(self, batch: SetpointBatch) -> None:
        self.transport.produce(self.topic, batch.csms_id.encode(), encode(batch))
        self._out.inc()
