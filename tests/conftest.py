"""Shared fixtures: real servers the integration tests need, started on demand.

``kafka_bootstrap`` gives the ``host:port`` of a real Kafka broker. With
``GRIDFLEX_KAFKA_BOOTSTRAP`` set, that broker is used as it is; otherwise
``scripts/kafka.sh start`` fetches Apache Kafka from Maven Central (first run only),
starts a single-node KRaft broker on a free loopback port, and the session stops it
again at the end. Only tests that request the fixture start a broker. A start that fails
is retried on fresh ports (another process may take a port between our pick and the
broker's bind) up to :data:`KAFKA_START_ATTEMPTS` times; a broker that still cannot be
started fails the tests that need it with kafka.sh's own explanation — it never skips
them, so the README's single test command really exercises Kafka on every machine, CI
included.

:func:`wait_until` is the one way tests wait: a condition polled until a deadline, and a
failure that says what was awaited, for how long, and what was seen last. Tests never
sleep a fixed time to let something happen.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

REPO = Path(__file__).resolve().parent.parent
KAFKA_SH = REPO / "scripts" / "kafka.sh"
# First run fetches ~45 MB of jars through Maven, then formats and starts the broker.
KAFKA_START_TIMEOUT_S = 900
KAFKA_START_ATTEMPTS = 3
_T = TypeVar("_T")


def wait_until(
    cond: Callable[[], _T],
    timeout_s: float,
    what: str,
    *,
    interval_s: float = 0.05,
    detail: Callable[[], str] | None = None,
) -> _T:
    """Poll ``cond`` until it returns a truthy value (returned) or ``timeout_s`` passes.

    On timeout the test fails with ``what``, the time waited, the last value (or the last
    exception ``cond`` raised) and ``detail()`` (e.g. a log tail). An ``AssertionError``
    from ``cond`` is not waited out: it means the awaited thing can no longer happen (a
    process exited) and fails the test at once. ``cond`` is always
    tried at least once, and once more at the deadline, so a slow machine only makes the
    wait longer, never the answer different.
    """
    start = time.monotonic()
    deadline = start + timeout_s
    last: object = None
    while True:
        try:
            value = cond()
        except AssertionError:
            raise
        except Exception as exc:  # reported below if it never succeeds
            last = exc
        else:
            if value:
                return value
            last = value
        now = time.monotonic()
        if now >= deadline:
            break
        time.sleep(min(interval_s, max(0.0, deadline - now)))
    extra = f"\n{detail()}" if detail is not None else ""
    pytest.fail(
        f"timed out after {time.monotonic() - start:.1f} s waiting for {what} "
        f"(last: {last!r}){extra}",
        pytrace=False,
    )


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[..., object]:
    """:func:`wait_until` as a fixture, for tests that prefer not to import it."""
    return wait_until


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "kafka: needs a real Kafka broker (the kafka_bootstrap fixture starts one)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test on a real broker is ``slow`` too (still run by the plain command)."""
    for item in items:
        if item.get_closest_marker("kafka") is not None and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)


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


def _start_broker() -> tuple[dict[str, str], str | None]:
    """One ``kafka.sh start`` on fresh free ports: its env, and None or the error."""
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
        run_kafka_sh(env, "stop", "--purge", timeout=60)
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
        return env, f"did not finish within {KAFKA_START_TIMEOUT_S} s\n{_tail(err or '')}"
    if started.returncode != 0:
        run_kafka_sh(env, "stop", "--purge", timeout=60)
        # kafka.sh prints the Maven error or the broker log's tail itself.
        return env, f"exit {started.returncode}\n{_tail(started.stderr, 120)}"
    return env, None


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    external = os.environ.get("GRIDFLEX_KAFKA_BOOTSTRAP", "").strip()
    if external:
        yield KafkaBroker(bootstrap=external, env=None)
        return

    failures: list[str] = []
    for attempt in range(1, KAFKA_START_ATTEMPTS + 1):
        env, error = _start_broker()
        if error is None:
            break
        failures.append(f"attempt {attempt}: {error}")
    else:
        pytest.fail(
            "could not start a Kafka broker with scripts/kafka.sh "
            f"({KAFKA_START_ATTEMPTS} attempts on fresh ports):\n" + "\n".join(failures),
            pytrace=False,
        )
    port = env["GRIDFLEX_KAFKA_PORT"]
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


INFLUXDB_SH = REPO / "scripts" / "influxdb.sh"
# First run builds influxd 1.8 from the Go module proxy (~2.5 min seen on 2 busy cores).
INFLUXDB_START_TIMEOUT_S = 1800


@pytest.fixture(scope="session")
def influxdb_url() -> Iterator[str]:
    """URL of a real InfluxDB (1.8, v2 write/Flux API) with database ``gridflex``:
    ``GRIDFLEX_INFLUXDB_URL`` as it is, else ``scripts/influxdb.sh start`` on a free port
    (built on first use, stopped and purged at the end). A failed start fails, never skips."""
    external = os.environ.get("GRIDFLEX_INFLUXDB_URL", "").strip()
    if external:
        yield external
        return
    port = str(_free_loopback_ports(1)[0])
    cmd = ["bash", str(INFLUXDB_SH)]
    try:
        started = subprocess.run(
            [*cmd, "start", port],
            capture_output=True,
            text=True,
            timeout=INFLUXDB_START_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        subprocess.run([*cmd, "stop", port, "--purge"], check=False, timeout=60)
        pytest.fail(f"scripts/influxdb.sh start did not finish in {INFLUXDB_START_TIMEOUT_S} s")
    if started.returncode != 0:
        subprocess.run([*cmd, "stop", port, "--purge"], check=False, timeout=60)
        pytest.fail(
            f"could not start InfluxDB with scripts/influxdb.sh:\n{_tail(started.stderr, 80)}",
            pytrace=False,
        )
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([*cmd, "stop", port, "--purge"], check=False, timeout=60)


OPENLEADR_VTN_SH = REPO / "scripts" / "openleadr-vtn.sh"
# First run builds openleadr-vtn with cargo (-j 1, nice 10): tens of minutes on 2 busy cores.
OPENLEADR_VTN_START_TIMEOUT_S = 3600


@dataclass(frozen=True)
class OpenAdr3Vtn:
    """A real OpenADR 3.1 VTN (openleadr-vtn + PostgreSQL) and its admin (BL) client."""

    url: str
    token_url: str
    admin_client_id: str
    admin_client_secret: str
    env: dict[str, str]


@pytest.fixture(scope="session")
def openleadr_vtn() -> Iterator[OpenAdr3Vtn]:
    """``scripts/openleadr-vtn.sh start`` on free ports (built on first use), stopped and
    purged at the end. A failed start fails the tests that need it, never skips them."""
    vtn_port, pg_port = _free_loopback_ports(2)
    env = dict(os.environ)
    env.update(
        GRIDFLEX_OADR3_PORT=str(vtn_port),
        GRIDFLEX_OADR3_PG_PORT=str(pg_port),
        GRIDFLEX_OADR3_PYTHON=os.environ.get("GRIDFLEX_OADR3_PYTHON", sys.executable),
    )
    cmd = ["bash", str(OPENLEADR_VTN_SH)]

    def script(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cmd, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
        )

    try:
        started = script("start", timeout=OPENLEADR_VTN_START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        script("stop", "--purge")
        pytest.fail(f"scripts/openleadr-vtn.sh start took over {OPENLEADR_VTN_START_TIMEOUT_S} s")
    if started.returncode != 0:
        script("stop", "--purge")
        pytest.fail(
            f"could not start openleadr-vtn with scripts/openleadr-vtn.sh:\n"
            f"{_tail(started.stderr, 80)}",
            pytrace=False,
        )
    values = dict(
        line.split("=", 1) for line in started.stdout.splitlines() if line.startswith("OADR3_")
    )
    try:
        yield OpenAdr3Vtn(
            url=values["OADR3_VTN_URL"],
            token_url=values["OADR3_TOKEN_URL"],
            admin_client_id=values["OADR3_ADMIN_CLIENT_ID"],
            admin_client_secret=values["OADR3_ADMIN_CLIENT_SECRET"],
            env=env,
        )
    finally:
        script("stop", "--purge")
