"""Keep the DSO intake's book in step with the grid-signals topic (Kafka).

The grid-signals topic is the durable record of every limit and cancellation any
replica's intake published. :class:`GridSignalFollower` reads every partition from its
beginning up to the end offsets taken at start (:meth:`GridSignalFollower.replay`, before
the API answers), then keeps following the topic on a thread of its own; each record goes
to :meth:`~adapters.dso.intake.LimitIntake.observe`. So after a restart ``GET /v1/limits``
lists what is still in force, and with several replicas each one's API lists — and lets
its DSO revise or cancel — the limits posted through the others (within a poll).

What holds: limits whose records are still in the topic (retention must exceed the
longest limit window; the default 7 days does for day-ahead limits) and whose windows are
not over. No consumer group, nothing committed. Records that do not decode are skipped.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from adapters.dso.intake import LimitIntake
from aggregator.errors import InvalidInput, TransientIO
from aggregator.messages import decode_grid_signal

__all__ = ["GridSignalFollower", "replay_grid_signals"]

_log = structlog.get_logger("gridflex.dso")


class GridSignalFollower:
    """Replays, then follows, the grid-signals topic into an intake's book."""

    def __init__(self, bootstrap: str, topic: str, intake: LimitIntake) -> None:
        self.topic = topic
        self.intake = intake
        self.read = 0
        self.skipped = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Any = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "gridflex-intake",  # required by librdkafka; never joined
                "enable.auto.commit": False,
                "topic.metadata.refresh.interval.ms": 10_000,
            }
        )

    def _take(self, msg: Any) -> None:
        self.read += 1
        key = msg.key().decode("utf-8", "replace") if msg.key() else None
        try:
            self.intake.observe(decode_grid_signal(msg.value()), key=key)
        except InvalidInput:
            self.skipped += 1

    def replay(self, timeout_s: float = 30.0) -> int:
        """Read the topic up to its end offsets now; returns how many records were read.
        Raises :class:`TransientIO` when that does not finish within ``timeout_s``."""
        c = self._consumer
        deadline = time.monotonic() + timeout_s
        meta = c.list_topics(self.topic, timeout=timeout_s)
        info = meta.topics.get(self.topic)
        parts = sorted(info.partitions) if info is not None and info.error is None else []
        ends: dict[int, int] = {}
        for p in parts:
            _, high = c.get_watermark_offsets(TopicPartition(self.topic, p), timeout=timeout_s)
            ends[p] = high
        c.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in parts])
        position = {p: 0 for p in parts}
        while any(position[p] < ends[p] for p in parts):
            if time.monotonic() > deadline:
                raise TransientIO(f"replaying {self.topic} did not finish within {timeout_s} s")
            msg = c.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            position[msg.partition()] = msg.offset() + 1
            self._take(msg)
        _log.info("grid_signals_replayed", topic=self.topic, records=self.read)
        return self.read

    def start(self) -> None:
        """Follow the topic from where :meth:`replay` ended, on a daemon thread."""
        self._thread = threading.Thread(target=self._follow, name="grid-signals", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self._consumer.poll(0.5)
            except RuntimeError:  # closed under us
                return
            if msg is not None and msg.error() is None:
                self._take(msg)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._consumer.close()


def replay_grid_signals(
    bootstrap: str, topic: str, intake: LimitIntake, *, timeout_s: float = 30.0
) -> int:
    """Replay the topic into ``intake`` once (no following); returns the records read."""
    follower = GridSignalFollower(bootstrap, topic, intake)
    try:
        return follower.replay(timeout_s)
    finally:
        follower.stop()
