"""Fixtures of the streaming tests: fresh topics, the topology file, replicas, the checker.

Every test gets its own uniquely prefixed topics on the session's broker, so tests never
see each other's records; replicas started through ``replicas`` are stopped (SIGTERM, then
KILL) at the end whatever happens; ``checker`` reads the test's setpoints topic from the
beginning, so every batch any replica published is available to check.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.checker import SetpointChecker
from tests.integration.streaming import TOPOLOGY, Replica, Streams


@pytest.fixture
def streams(kafka_bootstrap: str) -> Streams:
    s = Streams(kafka_bootstrap)
    s.create()
    return s


@pytest.fixture
def topology(tmp_path: Path) -> Path:
    p = tmp_path / "topology.yaml"
    p.write_text(TOPOLOGY)
    return p


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    started: list[Replica] = []
    yield started
    for r in started:
        r.stop()


@pytest.fixture
def checker(streams: Streams) -> Iterator[SetpointChecker]:
    c = SetpointChecker(streams.bootstrap, streams.topic("setpoints")).start()
    yield c
    c.stop()
