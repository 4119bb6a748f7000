"""The plan runners: a real worker process solves a small plan; newer jobs supersede
waiting ones; the inline runner is deterministic."""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta

import numpy as np

from aggregator.interfaces import ManualClock
from aggregator.pebc.sessions import check_plan_against_pebc
from aggregator.planning.fallback import proportional_plan
from aggregator.planning.request import Plan, PlanRequest
from aggregator.service.planrunner import (
    EngineFactory,
    InlinePlanRunner,
    PlanEngine,
    PlanJob,
    PlanResult,
    PlanRunner,
    ProcessPlanRunner,
)
from aggregator.service.replica import Service, ServiceConfig
from aggregator.topology import Feeder, Site, Topology
from tests.aggregator.service.conftest import T0, HeldRunner, ListSink, session
from tests.conftest import wait_until

TOPO = Topology(
    feeders=(Feeder("f1", 60.0),),
    sites=(Site("s1", "f1", 30.0, csms_id="cs-a"),),
)
CONFIG = ServiceConfig(horizon_s=2 * 3600.0)
DEADLINE_S = 180.0  # a worker process imports cvxpy first: generous on a busy machine


def jobs(n: int) -> list[PlanJob]:
    """``n`` jobs from a service on a held runner, one more session each time."""
    held = HeldRunner()
    clock = ManualClock(T0)
    svc = Service(TOPO, CONFIG, clock=clock, sink=ListSink(), runner=held)
    out = []
    for i in range(n):
        svc.handle(session(i, site="s1", csms="cs-a", kwh=5.0))
        clock.advance(CONFIG.min_replan_interval_s)
        svc.tick()
        out.append(held.jobs[-1])
    return out


def wait_for(runner: PlanRunner) -> PlanResult:
    return wait_until(runner.poll, DEADLINE_S, "a plan from the worker")  # poll never blocks


def test_a_worker_process_solves_a_small_plan_and_superseded_jobs_are_skipped() -> None:
    first, second, third = jobs(3)
    runner = ProcessPlanRunner(EngineFactory(CONFIG))
    try:
        assert isinstance(runner, PlanRunner)
        t0 = time.monotonic()
        runner.submit(first)
        runner.submit(second)  # waits behind the first ...
        runner.submit(third)  # ... and is superseded by the third
        assert time.monotonic() - t0 < 5.0  # submit never waits for a solve
        assert runner.superseded == 1
        got = [wait_for(runner), wait_for(runner)]
        assert [r.job.job_id for r in got] == [first.job_id, third.job_id]
        for res in got:
            assert res.error is None and res.plan is not None
            assert res.plan.power_kw.shape == (res.job.slots.size, res.job.request.steps)
            inline = PlanEngine.from_config(CONFIG).solve(res.job).plan
            assert inline is not None
            np.testing.assert_allclose(res.plan.energy_kwh, inline.energy_kwh, atol=1e-3)
        assert runner.poll() is None and not runner.busy
    finally:
        runner.close()


def test_a_service_on_a_worker_keeps_dispatching_while_it_plans() -> None:
    clock = ManualClock(T0)
    sink = ListSink()
    svc = Service(
        TOPO,
        CONFIG,
        clock=clock,
        sink=sink,
        runner=ProcessPlanRunner(EngineFactory(CONFIG)),
    )
    try:
        svc.handle(session(0, site="s1", csms="cs-a"))
        svc.tick()  # submits, returns at once
        assert svc.plan is None and sink.batches  # the late starter is served meanwhile

        def planned() -> bool:
            clock.advance(0.5)
            svc.tick()
            return svc.plan is not None

        wait_until(planned, DEADLINE_S, "the service taking the worker's plan")
        assert svc.plan is not None and svc.counters["plans.solved"] == 1
    finally:
        svc.close()


def test_the_inline_runner_solves_at_submit() -> None:
    (job,) = jobs(1)
    runner = InlinePlanRunner(PlanEngine.from_config(CONFIG))
    assert runner.poll() is None
    runner.submit(job)
    res = runner.poll()
    assert res is not None and res.plan is not None and res.job is job
    assert runner.poll() is None
    assert res.plan.start <= job.made_at < res.plan.start + timedelta(seconds=CONFIG.plan_step_s)


def test_close_does_not_wait_for_a_running_solve() -> None:
    first, *_ = jobs(1)
    runner = ProcessPlanRunner(EngineFactory(CONFIG))
    runner.submit(first)
    t0 = time.monotonic()
    runner.close()
    assert time.monotonic() - t0 < 10.0
    assert runner.poll() is None


class _OverMaxPlanner:
    """A planner whose plans ask every session for twice its maximum power."""

    def plan(self, req: PlanRequest, *, min_charge_kw: object = None) -> Plan:
        plan = proportional_plan(req, "unused")
        frac = req.plugged_fraction()
        over = np.where(frac > 0, 2.0 * req.max_power_kw[:, None], 0.0)
        return dataclasses.replace(plan, power_kw=over, fallback=None, solver="SPY")


def test_a_plan_outside_the_pebc_envelopes_is_never_used() -> None:
    (job,) = jobs(1)
    assert job.envelopes is not None  # built from the fleet, not from the request
    engine = PlanEngine(_OverMaxPlanner())  # type: ignore[arg-type]
    res = engine.solve(job)
    assert res.pebc_rejected is not None and "power_outside_envelope" in res.pebc_rejected
    assert res.plan is not None and res.plan.fallback is not None  # the proportional plan
    assert check_plan_against_pebc(res.plan, job.request, job.envelopes) == []
    assert float(res.plan.power_kw.max()) <= float(job.request.max_power_kw.max()) + 1e-9


def test_the_service_counts_a_plan_the_pebc_check_replaced() -> None:
    clock = ManualClock(T0)
    engine = PlanEngine(_OverMaxPlanner())  # type: ignore[arg-type]
    svc = Service(TOPO, CONFIG, clock=clock, sink=ListSink(), runner=InlinePlanRunner(engine))
    svc.handle(session(0, site="s1", csms="cs-a", kwh=5.0))
    svc.tick()
    assert svc.counters["plans.pebc_rejected"] >= 1
    assert svc.counters["plans.fallback"] >= 1
