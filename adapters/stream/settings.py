"""Kafka settings of one replica: bootstrap servers, group, client, topic names, timeouts.

Topic names default to :data:`aggregator.interfaces.DEFAULT_TOPICS` (their one home).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from aggregator.interfaces import DEFAULT_TOPICS, Topics

__all__ = ["KafkaSettings"]

_T = DEFAULT_TOPICS


class KafkaSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bootstrap: str
    group_id: str = "gridflex"
    client_id: str = "gridflex"
    telemetry_topic: str = _T.telemetry
    grid_signals_topic: str = _T.grid_signals
    frequency_topic: str = _T.frequency
    setpoints_topic: str = _T.setpoints
    state_topic: str = _T.state
    deadletter_topic: str = _T.deadletter
    session_timeout_ms: int = Field(6000, ge=1000)
    heartbeat_interval_ms: int = Field(1000, ge=100)
    max_poll_records: int = Field(2000, ge=1)

    def topics(self) -> Topics:
        return Topics(
            telemetry=self.telemetry_topic,
            grid_signals=self.grid_signals_topic,
            frequency=self.frequency_topic,
            setpoints=self.setpoints_topic,
            state=self.state_topic,
            deadletter=self.deadletter_topic,
        )
