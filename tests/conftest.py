"""Shared fixtures: real servers the integration tests need, started on demand.

``kafka_bootstrap`` gives the ``host:port`` of a real Kafka broker. With
``GRIDFLEX_KAFKA_BOOTSTRAP`` set, that broker is used as it is; otherwise
``scripts/kafka.sh start`` fetches Apache Kafka from Maven Central (first run only),
starts a single-node KRaft broker on a free loopback port, and the session stops it
again at the end. Only tests that request the fixture start a broker. A broker that
cannot be started fails the tests that need it; it never skips them, so the README's
single test command really exercises Kafka on every machine, CI included.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
KAFKA_SH = REPO / "scripts" / "kafka.sh"
# First run fetches ~45 MB of jars through Maven, then formats and starts the broker.
KAFKA_START_TIMEOUT_S = 900


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "kafka: needs a real Kafka broker (the kafka_bootstrap fixture starts one)",
    )


@dataclass(frozen=True)
class KafkaBroker:
    """A broker for the test session; ``env`` drives ``scripts/kafka.sh`` for it."""

    bootstrap: str
    env: dict[str, str] | None  # None: an external broker (GRIDFLEX_KAFKA_BOOTSTRAP)

    def script(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        if self.env is None:
            raise RuntimeError("this broker was not started by scripts/kafka.sh")
        return run_kafka_sh(self.env, *args, timeout=timeout)


def run_kafka_sh(
    env: dict[str, str], *args: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(KAFKA_SH), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _free_loopback_ports(n: int) -> list[int]:
    """``n`` distinct ports that were free on 127.0.0.1 a moment ago."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    external = os.environ.get("GRIDFLEX_KAFKA_BOOTSTRAP", "").strip()
    if external:
        yield KafkaBroker(bootstrap=external, env=None)
        return

    port, controller_port = _free_loopback_ports(2)
    env = dict(os.environ)
    env.update(
        GRIDFLEX_KAFKA_PORT=str(port),
        GRIDFLEX_KAFKA_CONTROLLER_PORT=str(controller_port),
        # The readiness probe uses this interpreter's kafka-python.
        GRIDFLEX_KAFKA_PYTHON=os.environ.get("GRIDFLEX_KAFKA_PYTHON", sys.executable),
    )
    try:
        started = run_kafka_sh(env, "start", timeout=KAFKA_START_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        run_kafka_sh(env, "stop", timeout=60)
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
        pytest.fail(
            f"scripts/kafka.sh start did not finish within {KAFKA_START_TIMEOUT_S} s\n"
            f"{_tail(err or '')}",
            pytrace=False,
        )
    if started.returncode != 0:
        run_kafka_sh(env, "stop", timeout=60)
        # kafka.sh prints the Maven error or the broker log's tail itself.
        pytest.fail(
            f"could not start a Kafka broker with scripts/kafka.sh (exit {started.returncode}):\n"
            f"{_tail(started.stderr, 120)}",
            pytrace=False,
        )
    try:
        yield KafkaBroker(bootstrap=f"127.0.0.1:{port}", env=env)
    finally:
        # --purge drops this session's data dir and log (ports differ per session);
        # GRIDFLEX_KAFKA_KEEP_RUN=1 keeps them for a look afterwards.
        purge = [] if os.environ.get("GRIDFLEX_KAFKA_KEEP_RUN") == "1" else ["--purge"]
        stopped = run_kafka_sh(env, "stop", *purge, timeout=60)
        if stopped.returncode != 0:
            pytest.fail(f"scripts/kafka.sh stop failed:\n{_tail(stopped.stderr)}", pytrace=False)


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    """``host:port`` of a real Kafka broker (started for the session unless given)."""
    return kafka_broker.bootstrap
