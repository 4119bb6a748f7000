"""``gridflex serve`` start-up and shutdown: readiness, SIGTERM, committed offsets.

On Kafka (a real broker from ``scripts/kafka.sh``): a replica subprocess becomes ready
once it has its partitions, consumes, and on SIGTERM stops polling, flushes, commits and
exits 0 with the group's committed offsets at the end of the telemetry topic. In-process,
``/readyz`` is 503 until the partitions are assigned. Embedded (no bootstrap): the
service answers its probes and stops on SIGTERM with exit code 0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from adapters.ops.health import HealthServer
from adapters.ops.metrics import Metrics
from adapters.serve.settings import load_topology
from adapters.stream.inprocess import SystemClock
from adapters.stream.runner import StreamRunner
from adapters.stream.settings import KafkaSettings
from aggregator.service.replica import ServiceConfig
from tests.conftest import wait_until
from tests.integration.streaming import (
    SITE_OF,
    Replica,
    Streams,
    free_port,
    now,
    send,
    session,
)

N = 12


def http_get(port: int, path: str) -> int:
    """Status of ``GET path``; 0 while nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def telemetry_in(replica: Replica, topic: str) -> float:
    prefix = f'gridflex_messages_in_total{{topic="{topic}"}} '
    for line in replica.metrics().splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return 0.0


def events(log: str) -> list[str]:
    out = []
    for line in log.splitlines():
        try:
            out.append(str(json.loads(line).get("event")))
        except ValueError:
            continue
    return out


@pytest.mark.kafka
@pytest.mark.slow
def test_sigterm_flushes_commits_and_exits_zero(
    streams: Streams, topology: Path, tmp_path: Path
) -> None:
    group = "lifecycle"
    replica = Replica(streams, topology, group, tmp_path / "replica.log")
    try:
        # /readyz: nothing listening (0) or 503 until the partitions are assigned, then 200
        seen: list[int] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert replica.proc.poll() is None, replica.log.read_text()[-3000:]
            seen.append(replica.get("/readyz"))
            if seen[-1] == 200:
                break
            time.sleep(0.05)
        assert seen[-1] == 200, replica.log.read_text()[-3000:]
        assert set(seen[:-1]) <= {0, 503}, seen
        assert replica.get("/livez") == 200

        tel = streams.topic("telemetry")
        prod = streams.producer()
        t = now()
        for i in range(N):
            msg = session(i, SITE_OF[f"e{i:02d}"], t)
            send(prod, tel, msg.feeder_id, msg)
        prod.send(tel, key=b"f1", value=b"not json")  # dead-lettered, committed all the same
        prod.flush()
        prod.close()
        wait_until(
            lambda: telemetry_in(replica, tel) >= N + 1,
            60,
            f"{N + 1} telemetry records consumed",
            detail=replica.tail,
        )
        assert telemetry_in(replica, tel) == N + 1, replica.tail()
    finally:
        code = replica.stop()  # SIGTERM, then wait

    log = replica.log.read_text()
    assert code == 0, log[-3000:]
    names = events(log)
    assert "signal" in names and names[-1] == "stopped", names
    assert "Traceback" not in log

    probe = KafkaConsumer(
        bootstrap_servers=streams.bootstrap, group_id=group, enable_auto_commit=False
    )
    try:
        tps = [TopicPartition(tel, p) for p in sorted(probe.partitions_for_topic(tel) or ())]
        end = probe.end_offsets(tps)
        committed = {tp: probe.committed(tp) for tp in tps}
    finally:
        probe.close()
    assert sum(end.values()) == N + 1
    for tp in tps:
        if end[tp]:
            assert committed[tp] == end[tp], (tp, committed, end)
        else:
            assert committed[tp] in (None, 0), (tp, committed)


@pytest.mark.kafka
@pytest.mark.slow
def test_readyz_is_503_until_partitions_are_assigned(streams: Streams, topology: Path) -> None:
    settings = KafkaSettings(
        bootstrap=streams.bootstrap,
        group_id="lifecycle-inprocess",
        telemetry_topic=streams.topic("telemetry"),
        grid_signals_topic=streams.topic("grid-signals"),
        frequency_topic=streams.topic("frequency"),
        setpoints_topic=streams.topic("setpoints"),
        state_topic=streams.topic("state"),
        deadletter_topic=streams.topic("deadletter"),
    )
    metrics = Metrics()
    runner = StreamRunner(
        load_topology(topology),
        ServiceConfig(reserve_kw=10),
        settings,
        clock=SystemClock(),
        metrics=metrics,
    )
    http = HealthServer(
        "127.0.0.1",
        0,
        metrics,
        ready=lambda: runner.ready,
        last_loop=lambda: runner.last_loop,
    )
    http.start()
    try:
        # connected, topics found, but no poll yet: no partitions, not ready
        assert http_get(http.port, "/readyz") == 503
        assert http_get(http.port, "/livez") == 200
        deadline = time.monotonic() + 60
        while not runner.ready and time.monotonic() < deadline:
            runner.poll_once()
        assert runner.ready
        assert http_get(http.port, "/readyz") == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{http.port}/metrics", timeout=5) as r:
            assert "gridflex_ready 1.0" in r.read().decode()
        assert runner.service is not None  # both feeders owned by the only replica
        assert {f.feeder_id for f in runner.service.topology.feeders} == {"f1", "f2"}
    finally:
        runner.close()
        http.stop()


@pytest.fixture
def embedded(tmp_path: Path, topology: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("GRIDFLEX_")}
    env.update(
        GRIDFLEX_TOPOLOGY=str(topology),
        GRIDFLEX_HTTP_PORT=str(port),
        GRIDFLEX_TICK_S="0.2",
        GRIDFLEX_LOG_FORMAT="json",
    )
    log = tmp_path / "embedded.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from adapters.cli.main import main; main()", "serve"],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc, port, log
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_embedded_mode_answers_probes_and_stops_on_sigterm(
    embedded: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    proc, port, log = embedded

    def ready() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        return http_get(port, "/readyz") == 200

    wait_until(ready, 60, "embedded serve ready", detail=lambda: log.read_text()[-3000:])
    assert http_get(port, "/livez") == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert "gridflex_ready 1.0" in r.read().decode()
    assert http_get(port, "/nothing") == 404

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0, log.read_text()[-3000:]
    names = events(log.read_text())
    assert "serving" in names and names[-1] == "stopped", names
    assert http_get(port, "/livez") == 0  # the port is closed


def test_embedded_mode_rejects_a_bad_topology_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "topology.yaml"
    bad.write_text("feeders:\n  - {id: f1}\nsites: []\n")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("GRIDFLEX_")}
    env.update(GRIDFLEX_TOPOLOGY=str(bad), GRIDFLEX_HTTP_PORT="0", GRIDFLEX_LOG_FORMAT="json")
    done = subprocess.run(
        [sys.executable, "-c", "from adapters.cli.main import main; main()", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "invalid_configuration" in done.stderr
    assert "feeders[0]" in done.stderr and "Traceback" not in done.stderr
