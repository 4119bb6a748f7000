"""Replay a Kafka topic to its end, then follow it: the book of DSO limits, and any other
view rebuilt from a topic (the REST API's idempotency keys, :mod:`adapters.api.durable`).

:class:`TopicFollower` is the one replay-then-follow loop: it reads every partition of a
topic from its beginning up to the end offsets taken at start (:meth:`TopicFollower.replay`,
before the caller answers anyone), then keeps following on a daemon thread; each record
goes to the ``take`` callback. No consumer group is joined and nothing is committed.

:class:`GridSignalFollower` keeps the DSO intake's book in step with the grid-signals
topic, the durable record of every limit and cancellation any replica's intake published:
each record goes to :meth:`~adapters.dso.intake.LimitIntake.observe`. So after a restart
``GET /v1/limits`` lists what is still in force, and with several replicas each one's API
lists — and lets its DSO revise or cancel — the limits posted through the others (within a
poll). What holds: limits whose records are still in the topic (retention must exceed the
longest limit window; the default 7 days does for day-ahead limits) and whose windows are
not over. Records that do not decode are skipped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from adapters.dso.intake import LimitIntake
from aggregator.errors import InvalidInput, TransientIO
from aggregator.messages import decode_grid_signal

__all__ = ["GridSignalFollower", "TopicFollower", "replay_grid_signals"]

_log = structlog.get_logger("gridflex.dso")


class TopicFollower:
    """Replays a topic to the end offsets taken now, then follows it on a thread."""

    def __init__(
        self, bootstrap: str, topic: str, take: Callable[[Any], None], *, name: str
    ) -> None:
        self.topic = topic
        self.name = name
        self._take = take
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.consumer: Any = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"gridflex-{name}",  # required by librdkafka; never joined
                "enable.auto.commit": False,
                "topic.metadata.refresh.interval.ms": 10_000,
            }
        )

    def replay(self, timeout_s: float = 30.0) -> None:
        """Read every partition up to its end offset now; :class:`TransientIO` when that
        does not finish within ``timeout_s``."""
        c = self.consumer
        deadline = time.monotonic() + timeout_s
        meta = c.list_topics(self.topic, timeout=timeout_s)
        info = meta.topics.get(self.topic)
        parts = sorted(info.partitions) if info is not None and info.error is None else []
        ends: dict[int, int] = {}
        for p in parts:
            _, high = c.get_watermark_offsets(TopicPartition(self.topic, p), timeout=timeout_s)
            ends[p] = high
        c.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in parts])
        position = dict.fromkeys(parts, 0)
        while any(position[p] < ends[p] for p in parts):
            if time.monotonic() > deadline:
                raise TransientIO(f"replaying {self.topic} did not finish within {timeout_s} s")
            msg = c.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            position[msg.partition()] = msg.offset() + 1
            self._take(msg)

    def start(self) -> None:
        """Follow the topic from where :meth:`replay` ended, on a daemon thread."""
        self._thread = threading.Thread(target=self._follow, name=self.name, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.consumer.poll(0.5)
            except RuntimeError:  # closed under us
                return
            if msg is not None and msg.error() is None:
                self._take(msg)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.consumer.close()


class GridSignalFollower:
    """Replays, then follows, the grid-signals topic into an intake's book."""

    def __init__(self, bootstrap: str, topic: str, intake: LimitIntake) -> None:
        self.topic = topic
        self.intake = intake
        self.read = 0
        self.skipped = 0
        self._follower = TopicFollower(bootstrap, topic, self._take, name="intake")

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
        self._follower.replay(timeout_s)
        _log.info("grid_signals_replayed", topic=self.topic, records=self.read)
        return self.read

    def start(self) -> None:
        """Follow the topic from where :meth:`replay` ended, on a daemon thread."""
        self._follower.start()

    def stop(self) -> None:
        self._follower.stop()


def replay_grid_signals(
    bootstrap: str, topic: str, intake: LimitIntake, *, timeout_s: float = 30.0
) -> int:
    """Replay the topic into ``intake`` once (no following); returns the records read."""
    follower = GridSignalFollower(bootstrap, topic, intake)
    try:
        return follower.replay(timeout_s)
    finally:
        follower.stop()
