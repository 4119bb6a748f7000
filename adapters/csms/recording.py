"""A setpoint sink that keeps every batch it is given (tests, small demos, embedded serve)."""

from __future__ import annotations

from aggregator.messages import SetpointBatch

__all__ = ["RecordingSink"]


class RecordingSink:
    """Keeps every setpoint batch it is given, in order."""

    def __init__(self) -> None:
        self.batches: list[SetpointBatch] = []

    def publish(self, batch: SetpointBatch) -> None:
        self.batches.append(batch)
