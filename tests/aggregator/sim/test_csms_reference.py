"""The reference CSMS: leases, failsafe and recovery, end to end with the real service.

"Stop the service mid-event": the service dispatches under DSO limits, then nobody calls
it any more while the clock runs on. Every EVSE must stay at or under its failsafe limit
from ``valid_until`` for the whole failsafe duration, the failsafe limits of a site (and
of the feeder) must respect the caps, and a batch after the restart must bring the EVSEs
back under control.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters.stream.inprocess import RecordingSink
from aggregator.errors import InvalidInput
from aggregator.interfaces import ManualClock, Record, Topics
from aggregator.messages import (
    DsoLimitMessage,
    FrequencySample,
    MeterValue,
    SessionStarted,
    SetpointBatch,
    encode,
)
from aggregator.service.replica import Service, ServiceConfig
from aggregator.sim.csms_reference import ReferenceCsms
from aggregator.sim.lpc import LpcStateName
from aggregator.topology import Feeder, Site, Topology

T0 = datetime(2026, 1, 14, 17, 0, tzinfo=UTC)
TOPICS = Topics()
TOPO = Topology(
    feeders=(Feeder("f1", 60.0),),
    sites=(Site("s1", "f1", 40.0, csms_id="cs-a"), Site("s2", "f1", 30.0, csms_id="cs-b")),
)
CSMS_OF = {"s1": "cs-a", "s2": "cs-b"}
SITE_OF = {f"e{i}": "s1" if i < 4 else "s2" for i in range(7)}  # 4 EVSEs on s1, 3 on s2
FEEDER_LIMIT_KW = 25.0
SITE_S2_LIMIT_KW = 9.0
FAILSAFE_S = 7_200.0
TOL = 1e-9

LIMITED = LpcStateName.LIMITED
FAILSAFE = LpcStateName.FAILSAFE
AUTONOMOUS = LpcStateName.UNLIMITED_AUTONOMOUS


class FanOut:
    """A setpoint sink handing every batch to several sinks (each CSMS keeps its own)."""

    def __init__(self, *sinks: ReferenceCsms | RecordingSink) -> None:
        self.sinks = sinks

    def publish(self, batch: SetpointBatch) -> None:
        for sink in self.sinks:
            sink.publish(batch)


class Rig:
    """The service, two reference CSMSs and a recorder on one manual clock."""

    def __init__(self) -> None:
        self.clock = ManualClock(T0)
        self.csms = {cs: ReferenceCsms(cs, self.clock) for cs in ("cs-a", "cs-b")}
        self.recorder = RecordingSink()
        self.svc = Service(
            TOPO,
            ServiceConfig(reserve_kw=10.0),
            clock=self.clock,
            sink=FanOut(*self.csms.values(), self.recorder),
        )

    def csms_of(self, evse_id: str) -> ReferenceCsms:
        return self.csms[CSMS_OF[SITE_OF[evse_id]]]

    def handle(self, record: Record) -> None:
        assert self.svc.handle(record) is None

    def start_sessions(self) -> None:
        for i, (evse_id, site) in enumerate(SITE_OF.items()):
            msg = SessionStarted(
                ts=self.clock.now(),
                feeder_id="f1",
                site_id=site,
                evse_id=evse_id,
                csms_id=CSMS_OF[site],
                session_id=f"sess{i}",
                departure=self.clock.now() + timedelta(hours=8),
                energy_requested_kwh=40.0,
                max_power_kw=11.0,
                min_power_kw=-11.0 if i in (0, 4) else 0.0,  # two V2G sessions
            )
            self.handle(Record(TOPICS.telemetry, "f1", encode(msg)))

    def meter_values(self, energy_kwh: float) -> None:
        for i, evse_id in enumerate(SITE_OF):
            msg = MeterValue(
                ts=self.clock.now(),
                feeder_id="f1",
                evse_id=evse_id,
                session_id=f"sess{i}",
                energy_kwh=energy_kwh,
                power_kw=1.0,
            )
            self.handle(Record(TOPICS.telemetry, "f1", encode(msg)))

    def dso_limit(self, event_id: str, target_type: str, target_id: str, kw: float) -> None:
        msg = DsoLimitMessage(
            ts=self.clock.now(),
            event_id=event_id,
            target_type=target_type,
            target_id=target_id,
            start=T0,
            end=T0 + timedelta(hours=3),
            limit_kw=kw,
        )
        self.handle(Record(TOPICS.grid_signals, target_id, encode(msg)))

    def frequency(self, hz: float) -> None:
        msg = FrequencySample(ts=self.clock.now(), hz=hz)
        self.handle(Record(TOPICS.frequency, None, encode(msg)))

    def last_batches(self) -> dict[str, SetpointBatch]:
        return {b.csms_id: b for b in self.recorder.batches}

    def last_lease(self) -> dict[str, tuple[float, float, datetime]]:
        """EVSE → (setpoint, failsafe, valid_until) of the last batch that named it."""
        out: dict[str, tuple[float, float, datetime]] = {}
        for b in self.recorder.batches:
            for e, p, fs in zip(b.evse_ids, b.power_kw, b.failsafe_kw, strict=True):
                out[e] = (p, fs, b.valid_until)
        return out


@pytest.fixture
def rig() -> Rig:
    """Mid-event: sessions, a feeder and a site DSO limit, a few dispatches."""
    r = Rig()
    r.start_sessions()
    r.dso_limit("ev-feeder", "feeder", "f1", FEEDER_LIMIT_KW)
    r.dso_limit("ev-site", "site", "s2", SITE_S2_LIMIT_KW)
    for hz in (50.0, 49.9, 50.1, 49.95):
        r.clock.advance(10)
        r.frequency(hz)
    return r


def site_sums(values: dict[str, float]) -> dict[str, float]:
    sums = {s.site_id: 0.0 for s in TOPO.sites}
    for e, v in values.items():
        sums[SITE_OF[e]] += v
    return sums


def test_leases_hold_the_setpoints_until_valid_until(rig: Rig) -> None:
    lease = rig.last_lease()
    assert set(lease) == set(SITE_OF)
    valid_until = max(v for _, _, v in lease.values())
    for t in (rig.clock.now(), valid_until - timedelta(seconds=1)):
        for e, (p, _, _) in lease.items():
            assert rig.csms_of(e).state(e, t) is LIMITED
            assert rig.csms_of(e).limit_kw(e, t) == pytest.approx(p)
    # the dispatched setpoints respect the DSO limits while leased
    sums = site_sums({e: p for e, (p, _, _) in lease.items()})
    assert sums["s2"] <= SITE_S2_LIMIT_KW + 1e-6
    assert sum(sums.values()) <= FEEDER_LIMIT_KW + 1e-6
    sent = [b.csms_id for b in rig.recorder.batches]  # dispatches and heartbeats
    assert rig.csms["cs-a"].counters["applied"] == sent.count("cs-a") >= 4
    assert rig.csms["cs-a"].counters["dropped.other_csms"] == sent.count("cs-b")


def test_service_stopped_mid_event_every_evse_holds_its_failsafe(rig: Rig) -> None:
    lease = rig.last_lease()
    valid_until = {e: v for e, (_, _, v) in lease.items()}
    end = max(valid_until.values())
    failsafe = {e: fs for e, (_, fs, _) in lease.items()}
    # the service computed failsafe limits that hold when every EVSE falls back together
    caps = rig.svc.limits.caps_at(end)
    for site, total in site_sums(failsafe).items():
        cap = float(caps.site_kw[TOPO.site_index[site]])
        assert total <= cap + TOL, (site, total, cap)
    assert site_sums(failsafe)["s2"] <= SITE_S2_LIMIT_KW + TOL
    assert sum(failsafe.values()) <= FEEDER_LIMIT_KW + TOL
    assert all(0.0 <= fs <= 4.2 for fs in failsafe.values())

    # the service is stopped: nobody calls it; only time passes at the CSMSs
    for after_s in (0.0, 1.0, 60.0, 600.0, 1_800.0, 3_600.0, 5_400.0, FAILSAFE_S - 1.0):
        t = end + timedelta(seconds=after_s)
        rig.clock.set(t)
        allowed: dict[str, float] = {}
        for e, fs in failsafe.items():
            csms = rig.csms_of(e)
            assert csms.state(e) is FAILSAFE, (e, after_s)
            kw = csms.limit_kw(e)
            assert kw is not None and 0.0 <= kw <= fs + TOL
            allowed[e] = kw
        for site, total in site_sums(allowed).items():
            cap = float(rig.svc.limits.caps_at(t).site_kw[TOPO.site_index[site]])
            assert total <= cap + TOL
        assert sum(allowed.values()) <= FEEDER_LIMIT_KW + TOL

    # the failsafe duration counts from valid_until; after it the EVSEs are autonomous
    for e, v in valid_until.items():
        assert rig.csms_of(e).state(e, v + timedelta(seconds=FAILSAFE_S - 0.001)) is FAILSAFE
        assert rig.csms_of(e).state(e, v + timedelta(seconds=FAILSAFE_S)) is AUTONOMOUS
        assert rig.csms_of(e).limit_kw(e, v + timedelta(seconds=FAILSAFE_S)) is None
        assert rig.csms_of(e).lpc(e).entered_at == v + timedelta(seconds=FAILSAFE_S)


def test_restart_during_the_failsafe_brings_every_evse_back_under_control(rig: Rig) -> None:
    end = max(v for _, _, v in rig.last_lease().values())
    rig.clock.set(end + timedelta(minutes=30))
    assert {rig.csms_of(e).state(e) for e in SITE_OF} == {FAILSAFE}
    seqs = {cs: b.seq for cs, b in rig.last_batches().items()}
    rig.frequency(50.0)  # the service is back: one dispatch
    for cs, b in rig.last_batches().items():
        assert b.seq > seqs[cs]
    lease = rig.last_lease()
    for e, (p, _, _) in lease.items():
        assert rig.csms_of(e).state(e) is LIMITED
        assert rig.csms_of(e).limit_kw(e) == pytest.approx(p)


def test_restart_after_the_failsafe_ended_brings_autonomous_evses_back(rig: Rig) -> None:
    end = max(v for _, _, v in rig.last_lease().values())
    rig.clock.set(end + timedelta(seconds=FAILSAFE_S + 600))
    assert {rig.csms_of(e).state(e) for e in SITE_OF} == {AUTONOMOUS}
    assert all(rig.csms_of(e).limit_kw(e) is None for e in SITE_OF)
    rig.meter_values(energy_kwh=8.0)  # the CSMS reports in again; sessions are alive
    rig.frequency(50.0)
    lease = rig.last_lease()
    for e, (p, fs, v) in lease.items():
        assert v > rig.clock.now()
        assert rig.csms_of(e).state(e) is LIMITED
        assert rig.csms_of(e).limit_kw(e) == pytest.approx(p)
        assert rig.csms_of(e).lpc(e).failsafe_kw == pytest.approx(fs)


def test_a_new_service_instance_continues_above_the_old_seq(rig: Rig) -> None:
    """A replica started from scratch (restart, or failover to another replica) numbers
    its batches above every earlier one (epoch-millisecond floor), so the CSMSs accept it
    and leave failsafe at once instead of dropping its batches as replays."""
    end = max(v for _, _, v in rig.last_lease().values())
    rig.clock.set(end + timedelta(minutes=5))
    assert {rig.csms_of(e).state(e) for e in SITE_OF} == {FAILSAFE}
    fresh = Service(
        TOPO, ServiceConfig(reserve_kw=10.0), clock=rig.clock, sink=FanOut(*rig.csms.values())
    )
    rig.svc = fresh
    rig.start_sessions()
    rig.frequency(50.0)
    assert rig.csms["cs-a"].counters["dropped.stale_seq"] == 0
    assert FAILSAFE not in {rig.csms_of(e).state(e) for e in SITE_OF}


def test_stale_and_replayed_batches_are_dropped(rig: Rig) -> None:
    csms = rig.csms["cs-a"]
    old = [b for b in rig.recorder.batches if b.csms_id == "cs-a"]
    before = {e: csms.lpc(e) for e in csms.evse_ids}
    for b in old:  # replay the whole history: every batch is stale now
        assert csms.apply(b) == "stale_seq"
    assert csms.counters["dropped.stale_seq"] == len(old)
    assert {e: csms.lpc(e) for e in csms.evse_ids} == before
    # a stale batch does not count as a heartbeat either: the lease still ends on time
    end = max(b.valid_until for b in old)
    assert csms.state("e1", end) is FAILSAFE


# ------------------------------------------------------------------ unit behaviour


def batch(
    seq: int,
    issued_at: datetime,
    power: dict[str, float],
    failsafe_kw: float = 3.0,
    validity_s: float = 120.0,
    csms_id: str = "cs-x",
) -> SetpointBatch:
    return SetpointBatch(
        csms_id=csms_id,
        seq=seq,
        issued_at=issued_at,
        valid_until=issued_at + timedelta(seconds=validity_s),
        evse_ids=list(power),
        power_kw=list(power.values()),
        failsafe_kw=[failsafe_kw] * len(power),
    )


def test_v2g_setpoint_is_leased_as_is_and_the_failsafe_never_exports() -> None:
    clock = ManualClock(T0)
    csms = ReferenceCsms("cs-x", clock)
    assert csms.apply(batch(1, T0, {"a": -7.5, "b": 6.0})) is None
    assert csms.limit_kw("a") == -7.5 and csms.limit_kw("b") == 6.0
    clock.advance(120)
    assert csms.state("a") is FAILSAFE
    assert csms.limits_kw() == {"a": 3.0, "b": 3.0}


def test_an_unknown_evse_starts_in_init_at_the_default_failsafe() -> None:
    clock = ManualClock(T0)
    csms = ReferenceCsms("cs-x", clock, default_failsafe_kw=2.0)
    assert csms.state("new") is LpcStateName.INIT and csms.limit_kw("new") == 2.0
    clock.advance(120)
    assert csms.state("new") is AUTONOMOUS and csms.limit_kw("new") is None
    assert csms.evse_ids == ()
    csms.apply(batch(1, clock.now(), {"new": 5.0}))
    assert csms.state("new") is LIMITED and csms.limit_kw("new") == 5.0


def test_heartbeats_do_not_extend_a_lease_and_their_loss_ends_a_long_one() -> None:
    clock = ManualClock(T0)
    csms = ReferenceCsms("cs-x", clock)
    csms.apply(batch(1, T0, {"a": 5.0}, validity_s=100))
    for _ in range(5):
        clock.advance(30)
        csms.heartbeat()
    assert csms.state("a") is FAILSAFE
    assert csms.lpc("a").entered_at == T0 + timedelta(seconds=100)
    # a lease longer than the heartbeat timeout ends with the heartbeat
    csms.apply(batch(2, clock.now(), {"a": 5.0}, validity_s=600))
    start = clock.now()
    clock.advance(119)
    assert csms.state("a") is LIMITED
    clock.advance(1)
    assert csms.state("a") is FAILSAFE
    assert csms.lpc("a").entered_at == start + timedelta(seconds=120)


def test_other_csms_expired_and_invalid_failsafe_values() -> None:
    clock = ManualClock(T0)
    csms = ReferenceCsms("cs-x", clock)
    assert csms.apply(batch(1, T0, {"a": 5.0}, csms_id="cs-y")) == "other_csms"
    clock.advance(200)
    assert csms.apply(batch(1, T0, {"a": 5.0})) == "expired"
    assert csms.last_seq is None and csms.evse_ids == ()
    bad = SetpointBatch.model_construct(
        csms_id="cs-x",
        seq=2,
        issued_at=clock.now(),
        valid_until=clock.now() + timedelta(seconds=120),
        evse_ids=["a"],
        power_kw=[5.0],
        failsafe_kw=[-1.0],
    )
    assert csms.apply(bad) is None
    assert csms.counters["rejected.failsafe_kw"] == 1
    assert csms.lpc("a").failsafe_kw == 4.2  # the default is kept
    assert csms.counters == {
        "dropped.other_csms": 1,
        "dropped.expired": 1,
        "rejected.failsafe_kw": 1,
        "applied": 1,
        "heartbeats": 1,
    }


def test_invalid_configuration_is_rejected_with_every_issue() -> None:
    with pytest.raises(InvalidInput) as exc:
        ReferenceCsms(
            "cs-x",
            ManualClock(T0),
            heartbeat_timeout_s=0,
            failsafe_duration_s=3_600,
            default_failsafe_kw=-1,
        )
    assert {i.field for i in exc.value.issues} == {
        "heartbeat_timeout_s",
        "failsafe_duration_s",
        "failsafe_kw",
    }
