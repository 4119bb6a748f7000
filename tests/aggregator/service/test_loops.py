"""The two loops never wait for each other: the fast loop never plans, plans built before a
newer limit are discarded, limits reach the fast loop at once, late starters get power."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from aggregator.interfaces import ManualClock, Record
from aggregator.limits import Caps
from aggregator.messages import DsoLimitCancel, DsoLimitMessage, FrequencySample, SessionEnded
from aggregator.service.events import (
    BatchesPublished,
    LimitApplied,
    LimitCancelled,
    LimitRejected,
    PlanDiscarded,
    PlanMade,
    RecordingEventSink,
    SessionChanged,
)
from aggregator.service.frame import late_allocation_kw
from aggregator.service.planrunner import PlanEngine
from aggregator.service.replica import Service, ServiceConfig
from aggregator.topology import Feeder, Site, Topology
from markets.activation import ReserveActivation
from tests.aggregator.service.conftest import (
    T0,
    FastPathGuard,
    HeldRunner,
    ListSink,
    SpyPlanner,
    session,
)

TOPO = Topology(
    feeders=(Feeder("f1", 60.0),),
    sites=(Site("s1", "f1", 30.0, csms_id="cs-a"), Site("s2", "f1", 40.0, csms_id="cs-b")),
)
CONFIG = ServiceConfig(horizon_s=4 * 3600.0, reserve_kw=5.0)


def limit(kw: float, *, start_s: float = 0.0, hours: float = 2.0, event: str = "ev1"):  # type: ignore[no-untyped-def]
    start = T0 + timedelta(seconds=start_s)
    return DsoLimitMessage(
        ts=T0,
        event_id=event,
        target_type="feeder",
        target_id="f1",
        start=start,
        end=start + timedelta(hours=hours),
        limit_kw=kw,
    )


def feeder_sum(batches: list, upto: int | None = None) -> float:  # type: ignore[type-arg]
    latest = {}
    for b in batches[:upto]:
        latest[b.csms_id] = b
    return sum(sum(b.power_kw) for b in latest.values())


def test_the_fast_loop_never_calls_the_planner_across_steps_and_limits() -> None:
    guard = FastPathGuard()
    spy = SpyPlanner(guard)
    clock = ManualClock(T0)
    sink = ListSink()
    svc = Service(TOPO, CONFIG, clock=clock, sink=sink, planner=spy, activation=ReserveActivation())
    svc.on_frequency = guard.wrap(svc.on_frequency)  # type: ignore[method-assign]
    svc.dispatch = guard.wrap(svc.dispatch)  # type: ignore[method-assign]
    for i in range(6):
        svc.handle(session(i, site="s1" if i < 3 else "s2", csms="cs-a" if i < 3 else "cs-b"))
    svc.tick()
    assert spy.calls == 1  # the spy is live: tick plans
    # a window that opens later, and crossing two plan-step boundaries with signals only
    svc.on_grid_signal(limit(20.0, start_s=1_000.0))
    calls = spy.calls
    for k in range(1, 200):
        clock.set(T0 + timedelta(seconds=10 * k))
        out = svc.on_frequency(FrequencySample(ts=clock.now(), hz=50.0 + 0.1 * np.sin(k)))
        if 10 * k >= 1_000:  # the frame's caps are the caps of now, without a re-plan
            assert out.setpoints_kw.sum() <= 20.0 + 1e-6
    assert spy.calls == calls  # 1 990 s, two step boundaries, a window opening: no plan
    svc.tick()
    assert spy.calls == calls + 1  # the step boundary is seen by the slow loop


def test_a_plan_built_before_a_newer_limit_is_discarded_and_the_limit_holds_at_once() -> None:
    runner = HeldRunner()
    events = RecordingEventSink()
    clock = ManualClock(T0)
    sink = ListSink()
    svc = Service(TOPO, CONFIG, clock=clock, sink=sink, events=events, runner=runner)
    for i in range(6):
        svc.handle(session(i, site="s1" if i < 3 else "s2", csms="cs-a" if i < 3 else "cs-b"))
    svc.tick()
    (first,) = runner.jobs
    assert svc.plan is None and feeder_sum(sink.batches) > 50.0  # late starters, no plan yet
    n = len(sink.batches)
    assert svc.on_grid_signal(limit(12.0)) is None
    assert len(sink.batches) > n  # published at once, by the fast loop's caps
    assert feeder_sum(sink.batches) <= 12.0 + 1e-6
    second = runner.jobs[-1]
    assert second.limits_version > first.limits_version
    runner.finish(first)
    svc.tick()
    assert svc.plan is None
    assert [type(e) for e in events.of(PlanDiscarded)] == [PlanDiscarded]
    runner.finish(second)
    svc.tick()
    assert svc.plan is not None
    (made,) = events.of(PlanMade)
    assert isinstance(made, PlanMade) and made.limits_version == second.limits_version
    svc.on_frequency(FrequencySample(ts=clock.now(), hz=49.9))
    assert feeder_sum(sink.batches) <= 12.0 + 1e-6
    jobs = len(runner.jobs)
    clock.advance(2_000)  # two step boundaries: only tick may ask for a plan
    svc.on_frequency(FrequencySample(ts=clock.now(), hz=50.1))
    assert len(runner.jobs) == jobs
    svc.tick()
    assert len(runner.jobs) == jobs + 1


def test_a_late_starter_gets_the_headroom_at_once_within_its_envelope() -> None:
    runner = HeldRunner()
    clock = ManualClock(T0)
    sink = ListSink()
    svc = Service(TOPO, CONFIG, clock=clock, sink=sink, runner=runner)
    svc.handle(session(0, site="s1", csms="cs-a"))
    svc.handle(session(1, site="s1", csms="cs-a"))
    svc.tick()
    runner.finish(runner.jobs[-1])
    svc.tick()
    assert svc.plan is not None
    clock.advance(5)
    svc.handle(session(2, site="s1", csms="cs-a", t=clock.now(), kw=7.0))
    svc.tick()  # no plan due yet (min_replan_interval_s), yet a batch goes out now
    assert len(runner.jobs) == 1
    last = sink.batches[-1]
    power = dict(zip(last.evse_ids, last.power_kw, strict=True))
    room = 30.0 - power["e0"] - power["e1"]
    assert power["e2"] == pytest.approx(min(7.0, room), abs=1e-5)
    assert power["e2"] > 0.0
    assert sum(power.values()) <= 30.0 + 1e-6


def test_late_allocation_respects_site_feeder_fleet_and_the_verified_room() -> None:
    def caps(feeder_kw: float, fleet_kw: float) -> Caps:
        return Caps(
            site_kw=np.array([30.0, 40.0]),
            feeder_kw=np.array([feeder_kw]),
            fleet_kw=np.array(fleet_kw),
            site_export_kw=np.array([30.0, 40.0]),
        )

    late = np.array([False, True, True, True])
    hi = np.array([11.0, 11.0, 22.0, 22.0])
    planned = np.array([25.0, 0.0, 0.0, 10.0])

    def alloc(c: Caps, free: np.ndarray | None = None) -> np.ndarray:
        return late_allocation_kw(
            late=late,
            hi_kw=hi,
            planned_kw=planned,
            slot_site=np.array([0, 0, 1, 1]),
            site_feeder=np.array([0, 0]),
            caps=c,
            site_free_kw=free,
        )

    wide = alloc(caps(100.0, 100.0))
    assert wide[0] == 0.0 and wide[1] == pytest.approx(5.0)  # site s1: 30 − 25
    assert wide[2] + wide[3] == pytest.approx(40.0 - 10.0)  # site s2, shared uniformly
    assert wide[2] == pytest.approx(wide[3]) and np.all(wide <= hi)
    feeder = alloc(caps(50.0, 100.0))
    assert feeder.sum() == pytest.approx(50.0 - 35.0)  # the feeder's room
    fleet = alloc(caps(100.0, 45.0))
    assert fleet.sum() == pytest.approx(45.0 - 35.0)  # the fleet's room
    assert not alloc(caps(100.0, 100.0), np.zeros(2)).any()  # grid: nothing unverified
    some = alloc(caps(100.0, 100.0), np.array([2.0, 3.0]))
    assert some[1] == pytest.approx(2.0) and some[2] + some[3] == pytest.approx(3.0)


def test_tick_is_cheap_when_nothing_changed() -> None:
    clock = ManualClock(T0)
    sink = ListSink()
    svc = Service(TOPO, CONFIG, clock=clock, sink=sink)
    svc.handle(session(0, site="s1", csms="cs-a"))
    svc.tick()
    n, plans = len(sink.batches), svc.counters["plans.submitted"]
    for _ in range(5):
        clock.advance(1)
        svc.tick()
    assert len(sink.batches) == n and svc.counters["plans.submitted"] == plans
    clock.advance(CONFIG.heartbeat_interval_s)
    svc.tick()
    assert len(sink.batches) == n + 1  # the heartbeat


def test_typed_events_for_limits_sessions_and_batches() -> None:
    events = RecordingEventSink()
    clock = ManualClock(T0)
    svc = Service(TOPO, CONFIG, clock=clock, sink=ListSink(), events=events)
    svc.handle(session(0, site="s1", csms="cs-a"))
    svc.on_grid_signal(limit(20.0))
    svc.on_grid_signal(DsoLimitCancel(ts=T0, event_id="ev1"))
    bad = DsoLimitMessage(
        ts=T0,
        event_id="ev2",
        target_type="site",
        target_id="nowhere",
        start=T0,
        end=T0 + timedelta(hours=1),
        limit_kw=1.0,
    )
    assert svc.on_grid_signal(bad) is not None
    clock.advance(60)
    svc.on_telemetry(
        SessionEnded(
            ts=clock.now(), feeder_id="f1", evse_id="e0", session_id="sess0", energy_kwh=1.0
        )
    )
    (applied,) = events.of(LimitApplied)
    assert isinstance(applied, LimitApplied) and applied.limit_kw == 20.0
    (cancelled,) = events.of(LimitCancelled)
    assert isinstance(cancelled, LimitCancelled) and cancelled.found
    (rejected,) = events.of(LimitRejected)
    assert isinstance(rejected, LimitRejected) and rejected.event_id == "ev2"
    changes = [e for e in events.of(SessionChanged) if isinstance(e, SessionChanged)]
    assert [(e.evse_id, e.csms_id, e.state is None) for e in changes] == [
        ("e0", "cs-a", False),
        ("e0", "cs-a", True),
    ]
    published = events.of(BatchesPublished)
    assert published and svc.counters["dispatches"] == len(published)
    status = svc.status()
    assert status.sessions == 0 and set(status.headroom_kw) == {"f1"}


def test_engine_solves_a_job_like_the_planner() -> None:
    svc = Service(TOPO, CONFIG, clock=ManualClock(T0), sink=ListSink(), runner=HeldRunner())
    svc.handle(session(0, site="s1", csms="cs-a"))
    svc.tick()
    runner = svc.runner
    assert isinstance(runner, HeldRunner)
    res = PlanEngine.from_config(CONFIG).solve(runner.jobs[0])
    assert res.plan is not None and res.plan.power_kw.shape[0] == 1 and res.error is None


def test_a_session_replaced_at_the_same_instant_gets_nothing_above_its_new_envelope() -> None:
    """Regression (found by the in-force property test): a new session on a slot, with the
    same arrival time as the one it replaced, was dispatched on the old session's frame."""
    clock = ManualClock(T0)
    sink = ListSink()
    svc = Service(TOPO, CONFIG, clock=clock, sink=sink, runner=HeldRunner())
    svc.handle(session(0, site="s1", csms="cs-a", kw=7.4))
    svc.on_frequency(FrequencySample(ts=T0, hz=50.0))
    assert sink.batches[-1].power_kw == [7.4]
    new = session(0, site="s1", csms="cs-a", kw=3.7)
    replaced = Record(new.topic, new.key, new.value.replace(b"sess0", b"sess9"))
    assert svc.handle(replaced) is None
    svc.on_frequency(FrequencySample(ts=T0, hz=50.0))
    assert sink.batches[-1].power_kw[0] <= 3.7
    svc.tick()
    assert sink.batches[-1].power_kw == [3.7]
