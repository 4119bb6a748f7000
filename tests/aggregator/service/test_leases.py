"""Leases: never past a known cap change they break, ended EVSEs named at 0 kW until their
lease has expired, leases seeded after a takeover count until replaced (issue 15.1, 15.10)."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from aggregator.interfaces import ManualClock
from aggregator.messages import DsoLimitMessage, SessionEnded, SetpointBatch
from aggregator.service.replica import Service, ServiceConfig
from aggregator.sim.csms_reference import ReferenceCsms
from aggregator.topology import Feeder, Site, Topology
from tests.aggregator.service.conftest import T0, FanOut, HeldRunner, ListSink, session

TOPO = Topology(
    feeders=(Feeder("f1", 200.0),),
    sites=(Site("s1", "f1", 120.0, csms_id="cs-a"),),
)
CONFIG = ServiceConfig(horizon_s=4 * 3600.0)


class NoPlans(HeldRunner):
    """Plans never arrive: every session runs on the fast loop's allocation."""


def window(kw: float, start: datetime, minutes: float = 10.0, event: str = "w") -> DsoLimitMessage:
    return DsoLimitMessage(
        ts=T0,
        event_id=event,
        target_type="feeder",
        target_id="f1",
        start=start,
        end=start + timedelta(minutes=minutes),
        limit_kw=kw,
    )


def in_force_kw(csms: ReferenceCsms, evses: list[str], at: datetime) -> float:
    total = 0.0
    for e in evses:
        kw = csms.limit_kw(e, at)
        assert kw is not None, f"{e} unlimited at {at}"
        total += kw
    return total


def test_a_window_opening_1_7_s_after_a_batch_holds_from_its_first_instant() -> None:
    """A feeder charging at 77 kW; a 30 kW window opens 1.7 s after a batch: the setpoints
    in force (lease, then failsafe) never exceed 30 kW inside the window."""
    clock = ManualClock(T0)
    csms = ReferenceCsms("cs-a", clock)
    sink = ListSink()
    svc = Service(TOPO, CONFIG, clock=clock, sink=FanOut(csms, sink), runner=NoPlans())
    evses = [f"e{i}" for i in range(7)]
    for i in range(7):
        svc.handle(session(i, site="s1", csms="cs-a"))
    svc.tick()
    assert in_force_kw(csms, evses, clock.now()) == 77.0
    opens = T0 + timedelta(seconds=31.7)  # the heartbeat goes out at 30 s
    svc.on_grid_signal(window(30.0, opens))
    assert in_force_kw(csms, evses, clock.now()) == 77.0  # not yet in force: keep charging
    issued_before = sink.batches[-1]
    assert issued_before.valid_until == opens  # the lease stops at the known change
    for k in range(1, 12 * 60 * 10):  # 12 minutes in 0.1 s steps, tick every second
        clock.set(T0 + timedelta(seconds=k / 10))
        if k % 10 == 0:
            svc.tick()
        now = clock.now()
        kw = in_force_kw(csms, evses, now)
        if opens <= now < opens + timedelta(minutes=10):
            assert kw <= 30.0 + 1e-6, f"{kw:.3f} kW in force at {now}"
    assert in_force_kw(csms, evses, clock.now()) == 77.0  # the window closed: back to full
    # the heartbeat 1.7 s before the window already respects it (the change is due within
    # CAP_LOOKAHEAD_S), so it keeps its full lease instead of lapsing into the failsafe
    (heartbeat,) = [b for b in sink.batches if b.issued_at == T0 + timedelta(seconds=30)]
    assert sum(heartbeat.power_kw) <= 30.0 + 1e-6
    assert heartbeat.valid_until == heartbeat.issued_at + timedelta(seconds=120)


def test_a_limit_arriving_1_7_s_before_its_window_is_respected_by_the_batch_it_triggers() -> None:
    clock = ManualClock(T0)
    csms = ReferenceCsms("cs-a", clock)
    svc = Service(TOPO, CONFIG, clock=clock, sink=csms, runner=NoPlans())
    evses = [f"e{i}" for i in range(7)]
    for i in range(7):
        svc.handle(session(i, site="s1", csms="cs-a"))
    svc.tick()
    clock.advance(5)
    opens = clock.now() + timedelta(seconds=1.7)
    svc.on_grid_signal(window(30.0, opens))
    # the batch it triggered may reach the CSMS after the window opened: it respects it
    for dt in (0.0, 1.7, 3.0, 60.0):
        assert in_force_kw(csms, evses, clock.now() + timedelta(seconds=dt)) <= 30.0 + 1e-6


def test_a_lease_respecting_the_coming_cap_keeps_its_full_validity() -> None:
    clock = ManualClock(T0)
    sink = ListSink()
    svc = Service(TOPO, CONFIG, clock=clock, sink=sink, runner=NoPlans())
    for i in range(2):
        svc.handle(session(i, site="s1", csms="cs-a"))
    svc.on_grid_signal(window(50.0, T0 + timedelta(seconds=10)))  # 22 kW fits under 50
    assert sink.batches[-1].valid_until == T0 + timedelta(seconds=CONFIG.setpoint_validity_s)


def names(batch: SetpointBatch) -> dict[str, tuple[float, float]]:
    return {
        e: (p, f) for e, p, f in zip(batch.evse_ids, batch.power_kw, batch.failsafe_kw, strict=True)
    }


def test_an_ended_evse_is_named_at_zero_until_its_last_lease_expired() -> None:
    clock = ManualClock(T0)
    sink = ListSink()
    svc = Service(TOPO, CONFIG, clock=clock, sink=sink, runner=NoPlans())
    for i in range(3):
        svc.handle(session(i, site="s1", csms="cs-a"))
    svc.tick()
    clock.advance(10)
    svc.tick()
    last_lease = max(b.valid_until for b in sink.batches if "e1" in b.evse_ids)
    assert names(sink.batches[-1])["e1"][0] > 0.0
    svc.on_telemetry(
        SessionEnded(
            ts=clock.now(), feeder_id="f1", evse_id="e1", session_id="sess1", energy_kwh=2.0
        )
    )
    for _ in range(300):
        clock.advance(1)
        svc.tick()
    after_end = [b for b in sink.batches if b.issued_at > T0 + timedelta(seconds=10)]
    assert after_end
    for prev, nxt in zip(sink.batches, sink.batches[1:], strict=False):
        # a batch names every EVSE the previous one named, until its lease expired
        for e in set(prev.evse_ids) - set(nxt.evse_ids):
            assert e == "e1" and nxt.issued_at >= last_lease
    for b in after_end:
        if b.issued_at < last_lease:
            assert names(b)["e1"] == (0.0, 0.0)
        else:
            assert "e1" not in b.evse_ids
    assert any(b.issued_at >= last_lease for b in after_end)


def test_seeded_leases_count_until_replaced_and_are_named_until_they_expire() -> None:
    topo = Topology(
        feeders=(Feeder("f1", 60.0),),
        sites=(Site("s1", "f1", 100.0, csms_id="cs-a"),),
    )
    clock = ManualClock(T0)
    sink = ListSink()
    svc = Service(topo, CONFIG, clock=clock, sink=sink, runner=NoPlans())
    for i in range(6):
        svc.handle(session(i, site="s1", csms="cs-a"))
    until = T0 + timedelta(seconds=60)
    kept = svc.seed_leases("cs-a", ["gone1", "e0"], [20.0, 11.0], until)
    assert kept == 2
    # a lease that lapsed 10 s ago: its EVSE holds its failsafe value (3 kW) for 2 h
    lapsed = T0 - timedelta(seconds=10)
    assert svc.seed_leases("cs-b", ["old"], [5.0], lapsed, failsafe_kw=[3.0]) == 1
    long_ago = T0 - timedelta(seconds=CONFIG.failsafe_duration_s + 1)
    assert svc.seed_leases("cs-a", ["older"], [5.0], long_ago) == 0  # failsafe over too
    svc.tick()
    first = sink.batches[-2] if sink.batches[-1].csms_id == "cs-b" else sink.batches[-1]
    got = names(first)
    assert got["gone1"] == (0.0, 0.0)  # the old lease is replaced by 0 kW
    zeroed = [b for b in sink.batches if b.csms_id == "cs-b"]
    assert [names(b) for b in zeroed] == [{"old": (0.0, 0.0)}]  # a batch for its CSMS too
    # the seeded power (20 + 11) still counted while this batch was made; cs-b has no site
    # on this feeder, so its 3 kW counts against the fleet cap only
    assert sum(p for e, (p, _) in got.items() if e.startswith("e")) <= 60.0 - 31.0 + 1e-6
    clock.advance(1)
    svc.tick()
    clock.advance(CONFIG.heartbeat_interval_s)
    svc.tick()
    later = names(sink.batches[-1])
    assert later["gone1"] == (0.0, 0.0)
    assert sum(p for e, (p, _) in later.items() if e.startswith("e")) > 60.0 - 31.0
    assert sum(p for p, _ in later.values()) <= 60.0 + 1e-6
    clock.set(until + timedelta(seconds=1))
    svc.tick()
    svc.dispatch(0.0)
    assert "gone1" not in sink.batches[-1].evse_ids
    assert all(b.csms_id == "cs-a" for b in sink.batches[len(zeroed) + 1 :])  # "old" done
    seqs = [b.seq for b in sink.batches if b.csms_id == "cs-a"]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    fs = np.array(sink.batches[-1].failsafe_kw)
    assert len(fs) == 6
    assert fs.sum() <= 60.0 + 1e-9


def test_an_evse_that_ended_unseen_is_zeroed_once_after_its_lease_lapsed() -> None:
    """Regression (found by the in-force property test): a session ended and no batch went
    out until its lease had lapsed; the EVSE then holds its failsafe value for 2 h, so the
    next batch must still name it at 0 kW, failsafe 0 — once."""
    clock = ManualClock(T0)
    sink = ListSink()
    svc = Service(TOPO, CONFIG, clock=clock, sink=sink, runner=NoPlans())
    svc.handle(session(0, site="s1", csms="cs-a"))
    svc.handle(session(1, site="s1", csms="cs-a"))
    svc.tick()
    assert names(sink.batches[-1])["e0"][1] > 0.0  # a failsafe value is held at the CSMS
    svc.on_telemetry(
        SessionEnded(ts=clock.now(), feeder_id="f1", evse_id="e0", session_id="sess0", energy_kwh=0)
    )
    clock.advance(CONFIG.setpoint_validity_s + 60)  # no batch meanwhile: the lease lapsed
    svc.tick()
    assert names(sink.batches[-1])["e0"] == (0.0, 0.0)
    clock.advance(1)
    svc.dispatch(0.0)
    assert "e0" not in sink.batches[-1].evse_ids
