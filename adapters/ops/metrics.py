"""Prometheus metrics of one replica, in a registry of its own (tests run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]

_FAST_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
_PLAN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Messages in/out, rejects by reason, loop latencies, plan time, limit headroom."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages_in = Counter(
            "gridflex_messages_in", "Records consumed", ["topic"], registry=r
        )
        self.messages_out = Counter(
            "gridflex_messages_out", "Records produced", ["topic"], registry=r
        )
        self.rejected = Counter("gridflex_rejected", "Records rejected", ["reason"], registry=r)
        self.fast_loop = Histogram(
            "gridflex_fast_loop_seconds",
            "Signal in to batches sent",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.plan_solve = Histogram(
            "gridflex_plan_solve_seconds",
            "Slow-loop build and solve",
            buckets=_PLAN_BUCKETS,
            registry=r,
        )
        self.headroom = Gauge(
            "gridflex_limit_headroom_kw", "Feeder cap minus planned base", ["feeder"], registry=r
        )
        self.ready = Gauge(
            "gridflex_ready", "1 when partitions are assigned and the model loaded", registry=r
        )
        self.sessions = Gauge("gridflex_active_sessions", "Active charging sessions", registry=r)
