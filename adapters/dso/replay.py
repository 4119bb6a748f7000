"""Rebuild the DSO intake's book from the grid-signals topic (Kafka), at start.

The grid-signals topic is the durable record of every limit and cancellation the intake
published. :func:`replay_grid_signals` reads every partition from its beginning up to the
end offsets taken when it starts (no consumer group, nothing committed) and hands each
record to :meth:`~adapters.dso.intake.LimitIntake.observe`, so that after a restart
``GET /v1/limits`` lists what is still in force, and a DSO can still revise or cancel it.

What holds: limits whose records are still in the topic (its retention must exceed the
longest limit window; the default 7 days does for day-ahead limits) and whose windows
are not over. Records that do not decode are skipped and counted in the log line.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from confluent_kafka import Consumer, TopicPartition

from adapters.dso.intake import LimitIntake
from aggregator.errors import InvalidInput, TransientIO
from aggregator.messages import decode_grid_signal

__all__ = ["replay_grid_signals"]

_log = structlog.get_logger("gridflex.dso")


def replay_grid_signals(
    bootstrap: str, topic: str, intake: LimitIntake, *, timeout_s: float = 30.0
) -> int:
    """Feed every record of ``topic`` (to its end at call time) to ``intake.observe``;
    returns how many records were read. Raises :class:`TransientIO` when the broker does
    not answer within ``timeout_s``."""
    consumer: Any = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "gridflex-intake-replay",  # required by librdkafka; never committed
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    deadline = time.monotonic() + timeout_s
    read = skipped = 0
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s)
        info = meta.topics.get(topic)
        if info is None or info.error is not None:
            return 0  # no topic yet: nothing was ever published
        ends: dict[int, int] = {}
        for p in info.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            if high > low:
                ends[p] = high
        if not ends:
            return 0
        position = {p: 0 for p in ends}
        consumer.assign([TopicPartition(topic, p, -2) for p in ends])  # from the beginning
        while any(position[p] < ends[p] for p in ends):
            if time.monotonic() > deadline:
                raise TransientIO(f"replaying {topic} did not finish within {timeout_s} s")
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            p = msg.partition()
            position[p] = msg.offset() + 1
            if msg.offset() >= ends.get(p, 0):
                continue
            read += 1
            key = msg.key().decode("utf-8", "replace") if msg.key() else None
            try:
                intake.observe(decode_grid_signal(msg.value()), key=key)
            except InvalidInput:
                skipped += 1
    finally:
        consumer.close()
    _log.info("grid_signals_replayed", topic=topic, records=read, skipped=skipped)
    return read
