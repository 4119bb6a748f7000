"""``gridflex edge``'s /livez, /readyz and /metrics (adapters/csms/edge/health.py)."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from adapters.csms.edge.health import serve_health
from adapters.csms.edge.runner import EdgeRunner
from adapters.csms.edge.settings import load_edge_settings
from adapters.csms.edge.upstream import EmbeddedUpstream
from adapters.stream.inprocess import InProcessBus
from aggregator.interfaces import ManualClock
from aggregator.messages import SetpointBatch, encode

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_edge_is_live_ready_while_serving_and_exports_its_state(tmp_path: Path) -> None:
    settings = load_edge_settings(
        None,
        csms_id="c1",
        state_dir=tmp_path,
        http_port=0,
        ocpp={"port": 0, "security_profile": 1},
        sites=[{"id": "s1", "feeder": "f1", "cap_kw": 20.0, "stations": ["a1"]}],
        stations=[{"id": "a1", "password": "pw-a1", "max_power_kw": 11.0}],
    )
    clock = ManualClock(T0)
    bus = InProcessBus()
    runner = EdgeRunner(settings, clock, EmbeddedUpstream(bus, "c1"))
    health = serve_health(runner)
    assert health is not None
    try:
        assert get(health.port, "/livez")[0] == 200
        assert get(health.port, "/readyz") == (503, "not ready\n")  # targets not started
        bus.publish(
            settings.topics().setpoints,
            "c1",
            encode(
                SetpointBatch(
                    csms_id="c1",
                    seq=1,
                    issued_at=T0,
                    valid_until=T0 + timedelta(seconds=120),
                    evse_ids=["a1-1"],
                    power_kw=[7.0],
                    failsafe_kw=[4.2],
                )
            ),
        )

        async def serve() -> None:
            await runner.start()
            await runner.step()
            assert await asyncio.to_thread(get, health.port, "/readyz") == (200, "ready\n")
            status, text = await asyncio.to_thread(get, health.port, "/metrics")
            assert status == 200
            assert "gridflex_edge_upstream_online 1.0" in text
            assert 'gridflex_edge_mode{mode="upstream"} 1.0' in text
            assert 'gridflex_edge_events_total{event="batches.applied"} 1.0' in text
            assert "gridflex_edge_buffered_records 0.0" in text  # the mode report went up
            await runner.stop()

        asyncio.run(serve())
        assert get(health.port, "/readyz")[0] == 503
        runner.last_cycle -= 3600  # a loop that stopped turning
        assert get(health.port, "/livez") == (503, "stalled\n")
    finally:
        health.stop()
    assert serve_health(EdgeRunner(settings.model_copy(update={"http_port": None}), clock,
                                   EmbeddedUpstream(bus, "c1"))) is None  # fmt: skip
