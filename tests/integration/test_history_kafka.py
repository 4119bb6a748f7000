"""A ``gridflex serve`` replica on Kafka with history on writes to a real InfluxDB: its
fast-loop runs, the plan, the caps in force and the setpoint sums of the batches it
published to Kafka, read back with Flux."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from influxdb_client import InfluxDBClient
from kafka import KafkaProducer

from aggregator.messages import FrequencySample
from tests.adapters.ops.test_history import fresh_database
from tests.conftest import wait_until
from tests.integration.streaming import SITE_FEEDER, Replica, Streams, now, send, session


def flux_rows(url: str, bucket: str, measurement: str) -> list[dict[str, Any]]:
    flux = (
        f'from(bucket: "{bucket}/autogen") |> range(start: -1h) '
        f'|> filter(fn: (r) => r._measurement == "{measurement}")'
    )
    with InfluxDBClient(url=url, token="", org="-") as client:
        return [r.values for t in client.query_api().query(flux) for r in t.records]


@pytest.mark.kafka
@pytest.mark.slow
def test_a_replica_on_kafka_writes_its_history(
    streams: Streams,
    topology: Path,
    tmp_path: Path,
    replicas: list[Replica],
    influxdb_url: str,
) -> None:
    bucket = fresh_database(influxdb_url)
    history_env = {
        "GRIDFLEX_HISTORY__URL": influxdb_url,
        "GRIDFLEX_HISTORY__BUCKET": bucket,
        "GRIDFLEX_HISTORY__SAMPLE_S": "0.2",
        "GRIDFLEX_HISTORY__FLUSH_S": "0.1",
    }
    replica = Replica(streams, topology, "g-history", tmp_path / "r.log", extra_env=history_env)
    replicas.append(replica)
    replica.wait_ready()
    producer: KafkaProducer = streams.producer()
    t = now()
    for i, site in enumerate(["s1", "s2", "s3"]):
        send(producer, streams.topic("telemetry"), SITE_FEEDER[site], session(i, site, t))
    producer.flush()

    def written() -> bool:
        send(producer, streams.topic("frequency"), None, FrequencySample(ts=now(), hz=49.9))
        producer.flush()
        fields = {r["_field"] for r in flux_rows(influxdb_url, bucket, "power")}
        activations = flux_rows(influxdb_url, bucket, "activation")
        return bool(activations) and {"cap_kw", "setpoint_kw"} <= fields

    wait_until(
        written, 90, "the Kafka replica's history in InfluxDB", interval_s=1.0, detail=replica.tail
    )
    caps = {
        r["id"]: r["_value"]
        for r in flux_rows(influxdb_url, bucket, "power")
        if r["_field"] == "cap_kw"
    }
    assert (caps["f1"], caps["f2"], caps["s1"]) == (60.0, 80.0, 40.0)
    fields = {r["_field"] for r in flux_rows(influxdb_url, bucket, "power")}
    assert {"measured_kw", "setpoint_kw"} <= fields
    assert replica.counter("history_dropped_total") == 0.0
    assert replica.counter("history_points_written_total") > 0
