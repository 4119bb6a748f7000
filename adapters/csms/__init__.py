"""Setpoint sinks: where the service's batches go (a Kafka topic, a recorder; later the
edge: OCPP 2.0.1/2.1 charging profiles and S2 PEBC instructions)."""

from adapters.csms.kafka import KafkaSetpointSink
from adapters.csms.recording import RecordingSink

__all__ = ["KafkaSetpointSink", "RecordingSink"]
