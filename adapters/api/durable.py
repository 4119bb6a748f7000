"""Idempotency keys that survive restarts: the REST API's key store on a Kafka topic.

Why Kafka and not a file: the grid-signals topic is already the source of truth for the
limits (the intake's book is rebuilt from it at start, :mod:`adapters.dso.replay`), every
replica's API reaches the same broker, and a file would be lost with its machine and be
private to one replica — a client retrying through the load balancer on another replica
would then apply its write twice. So each remembered response is also a record on a
**compacted** topic (``cleanup.policy=compact,delete``, ``retention.ms`` = the key TTL,
one partition), keyed by (DSO, Idempotency-Key); at start :meth:`KafkaIdempotencyStore.replay`
reads it to its end before the API answers, then a thread follows it so a key used on one
replica is known on the others within a poll (the replay-then-follow loop is
:class:`adapters.dso.replay.TopicFollower`, shared with the limits' book).

Invariants: :meth:`remember` keeps the response in memory first, then produces and waits
for the broker (``acks=all``); when that fails the failure is logged and the key is still
honoured by this process (the limit itself is already on the grid-signals topic: a write
is never reported failed because its key could not be stored). Records older than the TTL
are ignored on replay, as they are dropped from memory. A record written between a limit's
publication and a crash can be missing: the client's retry then submits the same limit
again, which the intake treats as a revision by its owner (the same values) — the effect
is the same, the status may be 200 instead of 201.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import structlog
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from adapters.api.idempotency import IDEMPOTENCY_TTL, IdempotencyStore, StoredResponse
from adapters.dso.replay import TopicFollower
from aggregator.errors import TransientIO

__all__ = ["KafkaIdempotencyStore", "decode_record", "encode_record"]

_log = structlog.get_logger("gridflex.api")
_FLUSH_S: Final = 10.0


def encode_record(dso: str, key: str, stored: StoredResponse) -> tuple[bytes, bytes]:
    """The topic record (key, value) of one remembered response."""
    value = {
        "fingerprint": stored.fingerprint,
        "status_code": stored.status_code,
        "body_b64": base64.b64encode(stored.body).decode("ascii"),
        "at": stored.at.astimezone(UTC).isoformat(),
    }
    return json.dumps([dso, key]).encode(), json.dumps(value, sort_keys=True).encode()


def decode_record(key: bytes, value: bytes) -> tuple[str, str, StoredResponse]:
    """``(dso, key, response)`` of a record; ``ValueError`` when it is not one."""
    try:
        dso, idem = json.loads(key)
        v = json.loads(value)
        at = datetime.fromisoformat(v["at"])
        if at.tzinfo is None:
            raise ValueError("naive timestamp")
        stored = StoredResponse(
            fingerprint=str(v["fingerprint"]),
            status_code=int(v["status_code"]),
            body=base64.b64decode(v["body_b64"], validate=True),
            at=at,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not an idempotency record: {exc}") from exc
    return str(dso), str(idem), stored


class KafkaIdempotencyStore(IdempotencyStore):
    """:class:`IdempotencyStore` whose entries are also records on a compacted topic."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        ttl: timedelta = IDEMPOTENCY_TTL,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(ttl=ttl)
        self.topic = topic
        self._clock = clock
        self.read = 0
        self.skipped = 0
        self.produce_failures = 0
        self._ensure_topic(bootstrap)
        self._producer: Any = Producer(
            {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True}
        )
        self._follower = TopicFollower(bootstrap, topic, self._take, name="api-idempotency")

    def _ensure_topic(self, bootstrap: str) -> None:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        ttl_ms = str(int(self.ttl.total_seconds() * 1000))
        spec = NewTopic(
            self.topic,
            num_partitions=1,
            config={"cleanup.policy": "compact,delete", "retention.ms": ttl_ms},
        )
        for future in admin.create_topics([spec], request_timeout=30).values():
            try:
                future.result(timeout=30)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise TransientIO(f"cannot create {self.topic}: {exc}") from exc

    def _take(self, msg: Any) -> None:
        self.read += 1
        try:
            dso, key, stored = decode_record(msg.key() or b"", msg.value() or b"")
        except ValueError:
            self.skipped += 1
            return
        if stored.at > self._clock() - self.ttl:
            prior = super().get(dso, key, self._clock())
            if prior is None or prior.at <= stored.at:
                super().remember(dso, key, stored)

    def replay(self, timeout_s: float = 30.0) -> int:
        """Read the topic to its end offset now (before the API answers); records read."""
        self._follower.replay(timeout_s)
        _log.info("idempotency_replayed", topic=self.topic, records=self.read, keys=len(self))
        return self.read

    def start(self) -> None:
        """Follow the topic (keys remembered by other replicas) on a daemon thread."""
        self._follower.start()

    def remember(self, dso: str, key: str, stored: StoredResponse) -> None:
        super().remember(dso, key, stored)
        k, v = encode_record(dso, key, stored)
        try:
            self._producer.produce(self.topic, key=k, value=v)
            left = self._producer.flush(_FLUSH_S)
        except (KafkaException, BufferError) as exc:
            left, error = 1, repr(exc)
        else:
            error = "not acknowledged in time"
        if left:
            self.produce_failures += 1
            _log.error("idempotency_not_stored", dso=dso, error=error)

    def stop(self) -> None:
        self._follower.stop()
        self._producer.flush(_FLUSH_S)
