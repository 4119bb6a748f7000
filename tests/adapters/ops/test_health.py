"""Health and metrics endpoints: /livez, /readyz, /metrics, and 404 for the rest."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from adapters.ops.health import HealthServer
from adapters.ops.metrics import Metrics


@dataclass
class Loop:
    """What the main loop exposes: readiness and when it last turned."""

    ready: bool = False
    last: float = field(default_factory=time.monotonic)


@dataclass
class Served:
    server: HealthServer
    loop: Loop
    metrics: Metrics

    def get(self, path: str) -> tuple[int, str, str]:
        url = f"http://127.0.0.1:{self.server.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return int(r.status), r.headers.get("Content-Type", ""), r.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.headers.get("Content-Type", ""), exc.read().decode()


@pytest.fixture
def served() -> Iterator[Served]:
    loop = Loop()
    metrics = Metrics()
    server = HealthServer(
        "127.0.0.1",
        0,
        metrics,
        ready=lambda: loop.ready,
        last_loop=lambda: loop.last,
        stall_s=2.0,
    )
    server.start()
    try:
        yield Served(server, loop, metrics)
    finally:
        server.stop()


def test_port_zero_picks_a_free_port(served: Served) -> None:
    assert served.server.port > 0


def test_livez_is_200_while_the_loop_turns_then_503_when_stale(served: Served) -> None:
    served.loop.last = time.monotonic()
    assert served.get("/livez")[::2] == (200, "ok\n")
    served.loop.last = time.monotonic() - 2.5  # older than stall_s
    assert served.get("/livez")[::2] == (503, "stalled\n")
    served.loop.last = time.monotonic()  # the loop turns again
    assert served.get("/livez")[0] == 200


def test_livez_default_stall_is_ten_seconds() -> None:
    last = [time.monotonic() - 9.0]
    server = HealthServer("127.0.0.1", 0, Metrics(), ready=lambda: True, last_loop=lambda: last[0])
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/livez"
        with urllib.request.urlopen(url, timeout=5) as r:
            assert r.status == 200
        last[0] = time.monotonic() - 11.0
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(url, timeout=5)
        assert exc.value.code == 503
    finally:
        server.stop()


def test_readyz_follows_the_ready_callable(served: Served) -> None:
    assert served.get("/readyz")[::2] == (503, "not ready\n")
    served.loop.ready = True
    assert served.get("/readyz")[::2] == (200, "ready\n")
    served.loop.ready = False  # e.g. partitions revoked
    assert served.get("/readyz")[0] == 503


def test_readiness_does_not_depend_on_liveness(served: Served) -> None:
    served.loop.ready = True
    served.loop.last = time.monotonic() - 60
    assert served.get("/readyz")[0] == 200
    assert served.get("/livez")[0] == 503


def test_metrics_in_prometheus_text_format(served: Served) -> None:
    m = served.metrics
    m.messages_in.labels("gridflex.telemetry").inc(3)
    m.messages_out.labels("gridflex.setpoints").inc()
    m.rejected.labels("invalid").inc(2)
    m.fast_loop.observe(0.003)
    m.plan_solve.observe(1.5)
    m.headroom.labels("f1").set(42.0)
    m.ready.set(1)
    m.sessions.set(7)

    code, ctype, body = served.get("/metrics")

    assert code == 200
    assert ctype.startswith("text/plain") and "version=" in ctype
    for name in (
        'gridflex_messages_in_total{topic="gridflex.telemetry"} 3.0',
        'gridflex_messages_out_total{topic="gridflex.setpoints"} 1.0',
        'gridflex_rejected_total{reason="invalid"} 2.0',
        "gridflex_fast_loop_seconds_count 1.0",
        'gridflex_fast_loop_seconds_bucket{le="0.005"} 1.0',
        "gridflex_plan_solve_seconds_sum 1.5",
        'gridflex_limit_headroom_kw{feeder="f1"} 42.0',
        "gridflex_ready 1.0",
        "gridflex_active_sessions 7.0",
    ):
        assert name in body, name
    names = {line.split()[2] for line in body.splitlines() if line.startswith("# TYPE ")}
    assert names and all(n.startswith("gridflex_") for n in names)  # its own registry only


def test_every_replica_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.ready.set(1)
    assert b.ready._value.get() == 0.0  # two replicas in one process do not collide


@pytest.mark.parametrize("path", ["/", "/health", "/livez/", "/metrics/x", "/ready"])
def test_anything_else_is_404(served: Served, path: str) -> None:
    code, _, body = served.get(path)
    assert (code, body) == (404, "not found\n")


def test_stop_closes_the_port() -> None:
    server = HealthServer("127.0.0.1", 0, Metrics(), ready=lambda: True, last_loop=time.monotonic)
    server.start()
    port = server.port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
        assert r.status == 200
    server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2)
