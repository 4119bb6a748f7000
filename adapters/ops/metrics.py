"""Prometheus metrics of one replica, in a registry of its own (tests run several).

:class:`Metrics` is an :class:`~aggregator.service.events.EventSink`: it subscribes to the
service's typed events (plan made → ``plan_solve``, batches published → ``dispatch``,
limits applied/cancelled/rejected, sessions changed → ``active_sessions``) instead of
reading service attributes. The stream runner adds what only it sees (records in and out,
rejections by reason, the fast loop from frequency record to flushed batches, readiness).
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from adapters.ops.fleet_metrics import FleetGauges
from aggregator.service.events import (
    BatchesPublished,
    LimitApplied,
    LimitCancelled,
    LimitRejected,
    PlanDiscarded,
    PlanMade,
    ServiceEvent,
    SessionChanged,
)

__all__ = ["Metrics"]

_FAST_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
_PLAN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Messages in/out, rejects by reason, loop latencies, plans, limits, headroom."""

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
            "Frequency record in to setpoint batches flushed",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.dispatch = Histogram(
            "gridflex_dispatch_seconds",
            "One fast-loop dispatch inside the service (batches handed to the sink)",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.plan_solve = Histogram(
            "gridflex_plan_solve_seconds",
            "Slow-loop build and solve",
            buckets=_PLAN_BUCKETS,
            registry=r,
        )
        self.plans = Counter("gridflex_plans", "Plans taken or discarded", ["outcome"], registry=r)
        self.limits = Counter(
            "gridflex_limit_events",
            "DSO limits applied, cancelled, rejected",
            ["event"],
            registry=r,
        )
        self.headroom = Gauge(
            "gridflex_limit_headroom_kw", "Feeder cap minus planned base", ["feeder"], registry=r
        )
        self.ready = Gauge(
            "gridflex_ready", "1 when partitions are assigned and the model loaded", registry=r
        )
        self.sessions = Gauge("gridflex_active_sessions", "Active charging sessions", registry=r)
        self.fleet = FleetGauges(r)  # power, caps, leases per CSMS, consumer lag
        self._live: set[str] = set()
        self._in: dict[str, Counter] = {}

    # ------------------------------------------------------------------ events

    def emit(self, event: ServiceEvent) -> None:
        if isinstance(event, SessionChanged):
            if event.row is None:
                self._live.discard(event.evse_id)
            else:
                self._live.add(event.evse_id)
            self.sessions.set(len(self._live))
        elif isinstance(event, BatchesPublished):
            self.dispatch.observe(event.elapsed_s)
        elif isinstance(event, PlanMade):
            self.plan_solve.observe(event.build_s + event.solve_s)
            self.plans.labels("fallback" if event.fallback else "made").inc()
        elif isinstance(event, PlanDiscarded):
            self.plans.labels("discarded").inc()
        elif isinstance(event, LimitApplied):
            self.limits.labels("applied").inc()
        elif isinstance(event, LimitCancelled):
            self.limits.labels("cancelled").inc()
        elif isinstance(event, LimitRejected):
            self.limits.labels("rejected").inc()

    # ------------------------------------------------------------------ runner side

    def consumed(self, topic: str, n: int = 1) -> None:
        c = self._in.get(topic)
        if c is None:
            c = self._in[topic] = self.messages_in.labels(topic)
        c.inc(n)

    def session_restored(self, evse_id: str) -> None:
        self._live.add(evse_id)
        self.sessions.set(len(self._live))

    def sessions_reset(self) -> None:
        self._live.clear()
        self.sessions.set(0)

    def set_headroom(self, kw_by_feeder: Mapping[str, float]) -> None:
        for feeder, kw in kw_by_feeder.items():
            self.headroom.labels(feeder).set(kw)
