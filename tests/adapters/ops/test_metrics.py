"""Metrics subscribe to the service's typed events (no reads of service attributes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from adapters.ops.metrics import Metrics
from aggregator.fleet import SessionState
from aggregator.service.events import (
    BatchesPublished,
    LimitApplied,
    LimitRejected,
    PlanDiscarded,
    PlanMade,
    SessionChanged,
)

T0 = datetime(2026, 3, 2, 8, tzinfo=UTC)


def value(m: Metrics, name: str, **labels: str) -> float:
    v = m.registry.get_sample_value(name, labels or None)
    return 0.0 if v is None else float(v)


def state(evse: str) -> SessionState:
    return SessionState(
        evse_id=evse,
        session_id="s",
        site_id="s1",
        csms_id="c",
        arrival=T0,
        departure=T0 + timedelta(hours=2),
        last_ts=T0,
        last_meter=T0,
        energy_requested_kwh=10.0,
        energy_kwh=0.0,
        max_power_kw=11.0,
        min_power_kw=0.0,
        power_kw=0.0,
    )


def test_events_feed_the_metrics() -> None:
    m = Metrics()
    m.emit(PlanMade(at=T0, plan_start=T0, sessions=3, build_s=0.2, solve_s=0.3, solver="HIGHS",
                    fallback=None))  # fmt: skip
    m.emit(PlanMade(at=T0, plan_start=T0, sessions=3, build_s=0.1, solve_s=0.1, solver="none",
                    fallback="infeasible"))  # fmt: skip
    m.emit(PlanDiscarded(at=T0, plan_start=T0, reason="older than a limit"))
    assert value(m, "gridflex_plan_solve_seconds_count") == 2
    assert abs(value(m, "gridflex_plan_solve_seconds_sum") - 0.7) < 1e-9
    assert value(m, "gridflex_plans_total", outcome="fallback") == 1
    assert value(m, "gridflex_plans_total", outcome="discarded") == 1
    m.emit(BatchesPublished(at=T0, batches=2, deviation_kw=0.0, elapsed_s=0.004))
    assert value(m, "gridflex_dispatch_seconds_count") == 1
    m.emit(LimitApplied(at=T0, event_id="x", target_type="feeder", target_id="f1", start=T0,
                        end=T0 + timedelta(hours=1), limit_kw=10.0, source="rest"))  # fmt: skip
    m.emit(LimitRejected(at=T0, event_id="y", reason="unknown feeder"))
    assert value(m, "gridflex_limit_events_total", event="applied") == 1
    assert value(m, "gridflex_limit_events_total", event="rejected") == 1
    m.emit(SessionChanged.of(T0, "a", "c", state("a")))
    m.emit(SessionChanged.of(T0, "b", "c", state("b")))
    m.emit(SessionChanged.of(T0, "a", "c", state("a")))
    assert value(m, "gridflex_active_sessions") == 2
    m.emit(SessionChanged.of(T0, "a", "c", None))
    assert value(m, "gridflex_active_sessions") == 1
