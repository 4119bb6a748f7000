"""Kafka settings of one replica: client, bootstrap servers, group, topic names, timeouts.

Topic names default to :data:`aggregator.interfaces.DEFAULT_TOPICS` (their one home).
``client`` selects the transport: ``confluent`` (confluent-kafka on librdkafka, the
default) or ``kafka-python`` (``GRIDFLEX_KAFKA__CLIENT=kafka-python``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from aggregator.interfaces import DEFAULT_TOPICS, Topics

__all__ = ["KafkaSettings"]

_T = DEFAULT_TOPICS


class KafkaSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bootstrap: str
    client: Literal["confluent", "kafka-python"] = "confluent"
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
    # topics missing at start are created with these (state compacted); False: fail at once
    create_topics: bool = True
    partitions: int = Field(6, ge=1)
    replication_factor: int = Field(1, ge=1)
    # an idle replica blocks this long in poll (frequency consumer first)
    poll_timeout_s: float = Field(0.1, gt=0, le=1.0)
    # a session's state record at most once per EVSE per this many seconds (start and end
    # are written at once)
    state_interval_s: float = Field(10.0, ge=0)
    # fleet caps split into per-feeder shares (adapters/stream/fleet.py): the control topic
    # (one partition; default: the grid-signals topic's prefix + "fleet-control"), how often
    # a replica reports its feeders' demand there, how often the splitter re-splits (0: the
    # default split by rating only), and the floor each feeder keeps (share of its default)
    fleet_control_topic: str | None = None
    fleet_report_interval_s: float = Field(2.0, gt=0)
    fleet_split_interval_s: float = Field(3.0, ge=0)
    fleet_floor_frac: float = Field(0.2, ge=0, le=1)

    def fleet_control(self) -> str:
        """The fleet control topic: set, or next to the grid-signals topic."""
        if self.fleet_control_topic:
            return self.fleet_control_topic
        gs = self.grid_signals_topic
        head, dot, _ = gs.rpartition(".")
        return f"{head}.fleet-control" if dot else f"{gs}.fleet-control"

    def topics(self) -> Topics:
        return Topics(
            telemetry=self.telemetry_topic,
            grid_signals=self.grid_signals_topic,
            frequency=self.frequency_topic,
            setpoints=self.setpoints_topic,
            state=self.state_topic,
            deadletter=self.deadletter_topic,
        )
