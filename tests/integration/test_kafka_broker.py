"""A real Kafka broker (``scripts/kafka.sh``): topics, keyed produce, group consume, commit."""

from __future__ import annotations

import os
import re
import time
import uuid
from collections import Counter, defaultdict

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from tests.conftest import KafkaBroker, run_kafka_sh

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 6
RECORDS = 100
KEYS = 12


def _create_topic(bootstrap: str, partitions: int = PARTITIONS) -> str:
    topic = f"gridflex.it.{uuid.uuid4().hex[:12]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="gridflex-it-admin")
    try:
        admin.create_topics([NewTopic(name=topic, num_partitions=partitions, replication_factor=1)])
        assert topic in admin.list_topics()
    finally:
        admin.close()
    return topic


def test_keyed_records_round_trip_through_a_consumer_group(kafka_bootstrap: str) -> None:
    topic = _create_topic(kafka_bootstrap)

    producer = KafkaProducer(
        bootstrap_servers=kafka_bootstrap,
        acks="all",
        linger_ms=5,
    )
    sent_partition: dict[str, set[int]] = defaultdict(set)
    try:
        assert producer.partitions_for(topic) == set(range(PARTITIONS))
        futures = []
        for i in range(RECORDS):
            key = f"evse-{i % KEYS:03d}"
            futures.append((key, producer.send(topic, key=key.encode(), value=str(i).encode())))
        producer.flush(timeout=30)
        for key, future in futures:
            sent_partition[key].add(future.get(timeout=10).partition)
    finally:
        producer.close(timeout=10)
    # The default partitioner hashes the key: one key, one partition.
    assert all(len(parts) == 1 for parts in sent_partition.values()), sent_partition
    assert len({next(iter(p)) for p in sent_partition.values()}) > 1  # keys spread out

    group = f"gridflex-it-{uuid.uuid4().hex[:8]}"
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    received: list[tuple[str, str, int]] = []
    try:
        deadline = time.monotonic() + 30
        while len(received) < RECORDS and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                received.extend((r.key.decode(), r.value.decode(), r.partition) for r in records)
        consumer.commit()
        committed = {
            p: consumer.committed(TopicPartition(topic, p)) or 0 for p in range(PARTITIONS)
        }
    finally:
        consumer.close(autocommit=False)

    assert sorted(int(value) for _, value, _ in received) == list(range(RECORDS))
    for key, _, partition in received:
        assert sent_partition[key] == {partition}, (key, partition, sent_partition[key])
    # The group's committed offsets account for every record, per partition.
    per_partition = Counter(partition for _, _, partition in received)
    assert committed == {p: per_partition.get(p, 0) for p in range(PARTITIONS)}


def test_kafka_sh_status_reports_the_running_broker(kafka_broker: KafkaBroker) -> None:
    if kafka_broker.env is None:
        # an external broker (GRIDFLEX_KAFKA_BOOTSTRAP) is not kafka.sh's to report on:
        # check that it answers a real request instead
        admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
        assert isinstance(admin.list_topics(), list)
        admin.close()
        return
    status = kafka_broker.script("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"{kafka_broker.bootstrap}" in status.stdout


def test_kafka_sh_cluster_ids_come_from_kafka_and_never_start_with_a_dash() -> None:
    # the storage tool reads an id starting with '-' as an option: one start in two failed
    # with the old home-made id; kafka.sh now asks Kafka's own random-uuid (and checks it)
    env = {**os.environ, "GRIDFLEX_KAFKA_PORT": "1"}
    ids = set()
    for _ in range(8):
        done = run_kafka_sh(env, "cluster-id", timeout=120)
        assert done.returncode == 0, done.stderr
        ids.add(done.stdout.strip())
    assert len(ids) == 8
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", i) for i in ids), ids
