"""Topics: which exist, which to create, and which partition a feeder's records land in.

* :func:`feeder_partition` is Kafka's default partitioner (murmur2 of the key, as the Java
  client, kafka-python and librdkafka's ``murmur2_random``): a replica owns the feeders
  whose id hashes to its assigned partitions (:func:`owned_topology`).
* :func:`ensure_topics` runs at start: every topic the service needs is created when missing
  (the state topic with ``cleanup.policy=compact``, the others with the default policy;
  ``partitions`` and replication from the settings), or, with ``create_topics=False`` or a
  broker that refuses, start-up fails at once with a :class:`~aggregator.errors.ConfigError`
  naming each missing topic and the command that creates it.

Invariant: telemetry and grid signals have the same partition count (a feeder's telemetry
and limits must go to the same replica); a mismatch is reported the same way.
"""

from __future__ import annotations

from adapters.stream.settings import KafkaSettings
from adapters.stream.transport import TopicSpec, Transport
from aggregator.errors import ConfigError, Issue
from aggregator.topology import Topology

__all__ = ["ensure_topics", "feeder_partition", "murmur2", "owned_topology", "topic_specs"]

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (``org.apache.kafka.common.utils.Utils.murmur2``), unsigned."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    for i in range(length // 4):
        k = int.from_bytes(data[4 * i : 4 * i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & ~3
    extra = length % 4
    if extra >= 3:
        h ^= data[tail + 2] << 16
    if extra >= 2:
        h ^= data[tail + 1] << 8
    if extra >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def feeder_partition(feeder_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner puts a record keyed ``feeder_id`` in."""
    return (murmur2(feeder_id.encode()) & 0x7FFFFFFF) % partitions


def owned_topology(topology: Topology, partitions: int, owned: set[int]) -> Topology:
    """The part of ``topology`` whose feeders hash to the ``owned`` partitions.

    Its fleet limit is unbounded: the static fleet cap is never copied whole into a part
    (N replicas would draw N times it); each feeder's share of it is a feeder limit instead
    (:func:`adapters.stream.fleet.static_share_limits`, replaced by the splitter's)."""
    feeders = tuple(
        f for f in topology.feeders if feeder_partition(f.feeder_id, partitions) in owned
    )
    ids = {f.feeder_id for f in feeders}
    sites = tuple(s for s in topology.sites if s.feeder_id in ids)
    return Topology(feeders, sites)


def topic_specs(settings: KafkaSettings) -> list[TopicSpec]:
    """Every topic a replica reads or writes, with the settings it must be created with."""
    t = settings.topics()
    plain = (t.telemetry, t.grid_signals, t.frequency, t.setpoints, t.deadletter)
    specs = [
        TopicSpec(
            name=name, partitions=settings.partitions, replication=settings.replication_factor
        )
        for name in plain
    ]
    specs.append(  # the fleet splitter's: one partition, so one owner splits
        TopicSpec(
            name=settings.fleet_control(), partitions=1, replication=settings.replication_factor
        )
    )
    specs.append(
        TopicSpec(
            name=t.state,
            partitions=settings.partitions,
            replication=settings.replication_factor,
            config={"cleanup.policy": "compact"},
        )
    )
    return specs


def _how(spec: TopicSpec, bootstrap: str) -> str:
    extra = "".join(f" --config {k}={v}" for k, v in spec.config.items())
    return (
        f"kafka-topics.sh --bootstrap-server {bootstrap} --create --topic {spec.name} "
        f"--partitions {spec.partitions} --replication-factor {spec.replication}{extra}"
    )


def ensure_topics(transport: Transport, settings: KafkaSettings) -> list[str]:
    """Create the missing topics (or fail at once, naming them); returns the created ones."""
    specs = topic_specs(settings)
    missing = [s for s in specs if transport.partitions(s.name) is None]
    issues: list[Issue] = []
    created: list[str] = []
    if missing and settings.create_topics:
        result = transport.create_topics(missing)
        for spec in missing:
            error = result.get(spec.name, "no answer from the broker")
            if error is None:
                created.append(spec.name)
            else:
                issues.append(
                    Issue(
                        field="kafka.topics",
                        code="topic_not_created",
                        ids=(spec.name,),
                        message=f"could not create it ({error}); create it with: "
                        + _how(spec, settings.bootstrap),
                    )
                )
    elif missing:
        issues.extend(
            Issue(
                field="kafka.topics",
                code="topic_missing",
                ids=(spec.name,),
                message="topic does not exist (create_topics is off); create it with: "
                + _how(spec, settings.bootstrap),
            )
            for spec in missing
        )
    t = settings.topics()
    tel, sig = transport.partitions(t.telemetry), transport.partitions(t.grid_signals)
    if tel is not None and sig is not None and len(tel) != len(sig):
        issues.append(
            Issue(
                field="kafka.topics",
                code="partition_mismatch",
                ids=(t.telemetry, t.grid_signals),
                message=f"{t.telemetry} has {len(tel)} partitions and {t.grid_signals} "
                f"{len(sig)}: a feeder's telemetry and limits must go to the same replica",
            )
        )
    if issues:
        raise ConfigError(issues)
    return created
