"""``gridflex edge``'s health and metrics: ``/livez``, ``/readyz``, ``/metrics``.

The same small server as ``gridflex serve`` (:class:`~adapters.ops.health.HealthServer`),
on ``http_host:http_port`` when ``http_port`` is set. ``/livez`` is 200 while the edge's
cycle has turned within ``max(10 s, 5 cycles)``; ``/readyz`` is 200 once its targets
(the OCPP endpoint, the S2 listener) have started and until it stops — an edge whose
upstream is gone is still ready: serving stations on its own is its job then.

``/metrics`` (read at scrape time from what the runner noted at its last cycle — the
buffer's sqlite connection belongs to the runner's thread):

=====================================  ===============================================
``gridflex_edge_upstream_online``      1 while the last poll of the upstream answered
``gridflex_edge_mode{mode}``           1 for the mode in force (init, upstream, failsafe …)
``gridflex_edge_buffered_records``     telemetry records waiting for the upstream
``gridflex_edge_buffer_dropped_total`` records the full buffer dropped (oldest first)
``gridflex_edge_events_total{event}``  the runner's counters (batches applied, dropped …)
``gridflex_edge_last_cycle_age_seconds``  since the last completed cycle
=====================================  ===============================================
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from adapters.ops.health import HealthServer

if TYPE_CHECKING:
    from adapters.csms.edge.runner import EdgeRunner

__all__ = ["MODES", "EdgeMetrics", "serve_health"]

MODES = ("init", "upstream", "failsafe", "autonomous")


class _Collector(Collector):
    def __init__(self, runner: EdgeRunner) -> None:
        self.runner = runner

    def collect(self) -> Iterator[Metric]:
        r = self.runner
        yield GaugeMetricFamily(
            "gridflex_edge_upstream_online",
            "1 while the last poll of the upstream answered",
            value=1.0 if r.online else 0.0,
        )
        mode = GaugeMetricFamily("gridflex_edge_mode", "1 for the mode in force", labels=["mode"])
        for m in MODES:
            mode.add_metric([m], 1.0 if r.mode == m else 0.0)
        yield mode
        yield GaugeMetricFamily(
            "gridflex_edge_buffered_records",
            "telemetry records waiting for the upstream",
            value=float(r.buffered),
        )
        yield CounterMetricFamily(
            "gridflex_edge_buffer_dropped",
            "records the full buffer dropped (oldest first)",
            value=float(r.buffer_dropped),
        )
        events = CounterMetricFamily(
            "gridflex_edge_events", "the edge runner's counters", labels=["event"]
        )
        for name, n in sorted(r.counters.items()):
            events.add_metric([name], float(n))
        yield events
        yield GaugeMetricFamily(
            "gridflex_edge_last_cycle_age_seconds",
            "seconds since the last completed cycle",
            value=max(time.monotonic() - r.last_cycle, 0.0),
        )


class EdgeMetrics:
    """A registry holding the edge's metrics, read from ``runner`` at scrape time."""

    def __init__(self, runner: EdgeRunner) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(runner))


def serve_health(runner: EdgeRunner) -> HealthServer | None:
    """Start the health server the settings ask for (``None`` when ``http_port`` is unset)."""
    s = runner.settings
    if s.http_port is None:
        return None
    server = HealthServer(
        s.http_host,
        s.http_port,
        EdgeMetrics(runner),
        ready=lambda: runner.serving,
        last_loop=lambda: runner.last_cycle,
        stall_s=max(10.0, 5 * s.cycle_s),
    )
    server.start()
    return server
