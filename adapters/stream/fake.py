"""An in-memory Kafka for unit tests of the stream runner (httpx's ``MockTransport`` idea).

:class:`FakeBroker` holds topics (partitions as lists of :class:`Message`), committed
offsets per consumer group and an ordered **log** of what every client did (``produce``,
``flush``, ``commit``, ``assign``, ``revoke``), so a test can check ordering rules such as
"a commit never precedes the flush of the effects of the records it covers".
:class:`FakeTransport` implements :class:`~adapters.stream.transport.Transport` on it.

What it models: keyed records go to :func:`~adapters.stream.topics.feeder_partition`'s
partition; produced records stay in the client until :meth:`FakeTransport.flush` (so a
record that was never flushed is lost by :meth:`FakeTransport.kill`, as by a SIGKILL);
consumer groups with eager rebalances — :meth:`FakeBroker.rebalance` (called by the test,
or when a member joins or leaves) revokes every member's partitions and assigns new ones,
and each member runs its callbacks at its next :meth:`FakeTransport.poll`.
What it does not: time (timeouts return at once), compaction, transactions, network faults
other than :attr:`FakeTransport.fail_flush`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from adapters.stream.topics import feeder_partition
from adapters.stream.transport import (
    Headers,
    Message,
    PartitionsCallback,
    TopicPartition,
    TopicSpec,
)
from aggregator.errors import TransientIO

__all__ = ["FakeBroker", "FakeTransport", "LogEntry"]


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One thing a client did, in order: ``kind`` and what it concerned."""

    client: str
    kind: str  # produce | flush | commit | assign | revoke
    topic: str = ""
    offsets: tuple[tuple[TopicPartition, int], ...] = ()
    unflushed: int = 0  # records the client still held unflushed at that moment


@dataclass
class _Group:
    members: list[FakeTransport] = field(default_factory=list)
    committed: dict[TopicPartition, int] = field(default_factory=dict)


class FakeBroker:
    """Topics, groups and the operation log shared by every :class:`FakeTransport`."""

    def __init__(self, default_partitions: int = 6) -> None:
        self.default_partitions = default_partitions
        self.topics: dict[str, list[list[Message]]] = {}
        self.configs: dict[str, dict[str, str]] = {}
        self.groups: dict[str, _Group] = {}
        self.log: list[LogEntry] = []
        self.now_ms = 0  # record timestamps (a test may set it)
        self.auto_create = True

    def create_topic(self, name: str, partitions: int | None = None, **config: str) -> None:
        if name not in self.topics:
            self.topics[name] = [[] for _ in range(partitions or self.default_partitions)]
            self.configs[name] = dict(config)

    def append(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers = (),
        partition: int | None = None,
    ) -> Message:
        """Store one record (as a producer's acknowledged write)."""
        if topic not in self.topics:
            if not self.auto_create:
                raise TransientIO(f"unknown topic {topic!r}")
            self.create_topic(topic)
        parts = self.topics[topic]
        if partition is None:
            partition = 0 if key is None else feeder_partition(key.decode(), len(parts))
        msg = Message(
            topic=topic,
            partition=partition,
            offset=len(parts[partition]),
            key=key,
            value=value,
            timestamp_ms=self.now_ms,
            headers=headers,
        )
        parts[partition].append(msg)
        return msg

    def records(self, topic: str) -> list[Message]:
        """Every record of ``topic``, partition by partition."""
        return [m for part in self.topics.get(topic, []) for m in part]

    def committed(self, group: str) -> dict[TopicPartition, int]:
        return dict(self.groups.setdefault(group, _Group()).committed)

    def rebalance(
        self, group: str, assignment: Mapping[FakeTransport, Sequence[int]] | None = None
    ) -> None:
        """Revoke every member's partitions and assign new ones at their next poll:
        ``assignment`` gives each member its partition numbers (of every subscribed topic);
        by default Kafka's ``range`` assignor over the members in join order."""
        g = self.groups.setdefault(group, _Group())
        if assignment is None:
            assignment = self._range(g.members)
        for member in g.members:
            member._pending = sorted(assignment.get(member, ()))

    def _range(self, members: list[FakeTransport]) -> dict[FakeTransport, list[int]]:
        if not members:
            return {}
        topic = members[0]._topics[0]
        n = len(self.topics[topic])
        per, extra = divmod(n, len(members))
        out: dict[FakeTransport, list[int]] = {}
        start = 0
        for i, m in enumerate(members):
            size = per + (1 if i < extra else 0)
            out[m] = list(range(start, start + size))
            start += size
        return out


class FakeTransport:
    """One replica's clients on a :class:`FakeBroker` (see the module docstring)."""

    _ids = itertools.count()

    def __init__(self, broker: FakeBroker, *, group_id: str, frequency_topic: str) -> None:
        self.broker = broker
        self.group_id = group_id
        self.client = f"fake-{next(self._ids)}"
        self.frequency_topic = frequency_topic
        self.fail_flush = False
        self._unflushed: list[tuple[str, bytes | None, bytes | None, Headers]] = []
        self._topics: list[str] = []
        self._replay: set[str] = set()
        self._on_assign: PartitionsCallback | None = None
        self._on_revoke: PartitionsCallback | None = None
        self._assigned: list[TopicPartition] = []
        self._pending: list[int] | None = None
        self._position: dict[TopicPartition, int] = {}
        broker.create_topic(frequency_topic)
        self._freq = {p: len(part) for p, part in enumerate(broker.topics[frequency_topic])}
        self.closed = False

    def __hash__(self) -> int:
        return id(self)

    # ------------------------------------------------------------------ consumer

    def subscribe(
        self,
        topics: Sequence[str],
        *,
        replay: Sequence[str],
        on_assign: PartitionsCallback,
        on_revoke: PartitionsCallback,
    ) -> None:
        self._topics = list(topics)
        self._replay = set(replay)
        self._on_assign, self._on_revoke = on_assign, on_revoke
        for t in topics:
            self.broker.create_topic(t)
        self.broker.groups.setdefault(self.group_id, _Group()).members.append(self)
        self.broker.rebalance(self.group_id)

    def _run_rebalance(self) -> None:
        new, self._pending = self._pending, None
        assert new is not None and self._on_assign is not None and self._on_revoke is not None
        if self._assigned:
            self.broker.log.append(LogEntry(self.client, "revoke"))
            self._on_revoke(list(self._assigned))
        committed = self.broker.groups[self.group_id].committed
        self._assigned = [TopicPartition(t, p) for t in self._topics for p in new]
        self._position = {}
        for tp in self._assigned:
            self._position[tp] = 0 if tp.topic in self._replay else committed.get(tp, 0)
        self.broker.log.append(LogEntry(self.client, "assign"))
        self._on_assign(list(self._assigned))

    def poll(self, timeout_s: float, max_records: int) -> Sequence[Message]:
        if self._pending is not None:
            self._run_rebalance()
        out: list[Message] = []
        for tp in self._assigned:
            log = self.broker.topics[tp.topic][tp.partition]
            pos = self._position[tp]
            take = log[pos : pos + max_records - len(out)]
            out.extend(take)
            self._position[tp] = pos + len(take)
            if len(out) >= max_records:
                break
        return out

    def poll_frequency(self, timeout_s: float) -> Sequence[Message]:
        out: list[Message] = []
        for p, part in enumerate(self.broker.topics[self.frequency_topic]):
            out.extend(part[self._freq.get(p, 0) :])
            self._freq[p] = len(part)
        return out

    def position(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self._position[tp] for tp in tps if tp in self._position}

    def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.broker.topics[tp.topic][tp.partition]) for tp in tps}

    def beginning_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, 0)

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.broker.groups[self.group_id].committed.update(offsets)
        self.broker.log.append(
            LogEntry(
                self.client,
                "commit",
                offsets=tuple(sorted(offsets.items())),
                unflushed=len(self._unflushed),
            )
        )

    # ------------------------------------------------------------------ producer

    def produce(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers = ()
    ) -> None:
        self._unflushed.append((topic, key, value, headers))
        self.broker.log.append(
            LogEntry(self.client, "produce", topic=topic, unflushed=len(self._unflushed))
        )

    def flush(self, timeout_s: float = 30.0) -> None:
        if self.fail_flush:
            raise TransientIO("fake flush failure")
        pending, self._unflushed = self._unflushed, []
        for topic, key, value, headers in pending:
            self.broker.append(topic, key, value, headers)
        self.broker.log.append(LogEntry(self.client, "flush"))

    # ------------------------------------------------------------------ topics

    def partitions(self, topic: str) -> list[int] | None:
        parts = self.broker.topics.get(topic)
        return None if parts is None else list(range(len(parts)))

    def read(
        self,
        topic: str,
        *,
        since_ms: int | None = None,
        partitions: Sequence[int] | None = None,
    ) -> Iterator[Message]:
        parts = self.broker.topics.get(topic, [])
        ends = [len(p) for p in parts]
        for p, part in enumerate(parts):
            if partitions is not None and p not in partitions:
                continue
            for m in part[: ends[p]]:
                if since_ms is None or m.timestamp_ms >= since_ms:
                    yield m

    def create_topics(self, specs: Sequence[TopicSpec]) -> dict[str, str | None]:
        for s in specs:
            self.broker.create_topic(s.name, s.partitions, **dict(s.config))
        return {s.name: None for s in specs}

    # ------------------------------------------------------------------ lifecycle

    def _leave(self) -> None:
        g = self.broker.groups.get(self.group_id)
        if g is not None and self in g.members:
            g.members.remove(self)
            self.broker.rebalance(self.group_id)

    def close(self) -> None:
        """Leave the group cleanly (after the runner flushed and committed)."""
        self.closed = True
        self._leave()

    def kill(self) -> None:
        """A SIGKILL: unflushed records are lost, no callback runs, the group rebalances."""
        self._unflushed = []
        self.closed = True
        self._assigned = []
        self._leave()
