"""Shared parts for the service tests: a recording sink, test-controlled plan runners and
a planner spy that proves the fast loop never plans."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aggregator.interfaces import Record, Topics
from aggregator.messages import SessionStarted, SetpointBatch, encode
from aggregator.planning.optimizer import Planner
from aggregator.planning.request import Plan, PlanRequest
from aggregator.service.planrunner import PlanEngine, PlanJob, PlanResult

T0 = datetime(2026, 1, 14, 17, 0, tzinfo=UTC)
TOPICS = Topics()


class ListSink:
    """Keeps every published batch."""

    def __init__(self) -> None:
        self.batches: list[SetpointBatch] = []

    def publish(self, batch: SetpointBatch) -> None:
        self.batches.append(batch)


class FanOut:
    """Hands every batch to several setpoint sinks."""

    def __init__(self, *sinks: object) -> None:
        self.sinks = sinks

    def publish(self, batch: SetpointBatch) -> None:
        for sink in self.sinks:
            sink.publish(batch)  # type: ignore[attr-defined]


class FastPathGuard:
    """Marks when the fast loop runs; a spy planner raises if it is called meanwhile."""

    def __init__(self) -> None:
        self.inside = False

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            self.inside = True
            try:
                return fn(*args, **kwargs)
            finally:
                self.inside = False

        return run


class SpyPlanner(Planner):
    """A real planner that records its calls and refuses to run inside the fast loop."""

    def __init__(self, guard: FastPathGuard) -> None:
        super().__init__("HIGHS")
        self.guard = guard
        self.calls = 0

    def plan(self, req: PlanRequest, *, min_charge_kw: object = None) -> Plan:
        if self.guard.inside:
            raise AssertionError("the planner was called from the fast loop")
        self.calls += 1
        return super().plan(req)


class HeldRunner:
    """A plan runner the test drives: jobs wait until :meth:`finish` solves them."""

    def __init__(self, engine: PlanEngine | None = None) -> None:
        self.engine = engine or PlanEngine(Planner("HIGHS"))
        self.jobs: list[PlanJob] = []
        self._done: list[PlanResult] = []

    def submit(self, job: PlanJob) -> None:
        self.jobs.append(job)

    def finish(self, job: PlanJob) -> None:
        self._done.append(self.engine.solve(job))

    def poll(self) -> PlanResult | None:
        return self._done.pop(0) if self._done else None

    def close(self) -> None:
        self.jobs.clear()


def session(
    i: int,
    *,
    site: str,
    csms: str,
    feeder: str = "f1",
    t: datetime = T0,
    kw: float = 11.0,
    kwh: float = 60.0,
    hours: float = 8.0,
) -> Record:
    msg = SessionStarted(
        ts=t,
        feeder_id=feeder,
        site_id=site,
        evse_id=f"e{i}",
        csms_id=csms,
        session_id=f"sess{i}",
        departure=t + timedelta(hours=hours),
        energy_requested_kwh=kwh,
        max_power_kw=kw,
        min_power_kw=0.0,
    )
    return Record(TOPICS.telemetry, feeder, encode(msg))
