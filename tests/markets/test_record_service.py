"""The service's PoolSampled events make the pool's 1 s record; a silent second is a gap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aggregator.interfaces import ManualClock, Record, Topics
from aggregator.messages import AfrrRequest, FrequencySample, SessionStarted, encode
from aggregator.service.events import PoolSampled, RecordingEventSink
from aggregator.service.replica import Service, ServiceConfig
from aggregator.topology import Feeder, Site, Topology
from markets.activation import AfrrRamp, ReserveActivation
from markets.record import SecondRecorder
from tests.aggregator.service.conftest import ListSink

T0 = datetime(2026, 1, 14, 17, 0, tzinfo=UTC)
TOPO = Topology(feeders=(Feeder("f1", 60.0),), sites=(Site("s1", "f1", 40.0, csms_id="cs-a"),))


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def started(i: int) -> Record:
    msg = SessionStarted(
        ts=T0,
        feeder_id="f1",
        site_id="s1",
        evse_id=f"e{i}",
        csms_id="cs-a",
        session_id=f"sess{i}",
        departure=T0 + timedelta(hours=6),
        energy_requested_kwh=30.0,
        max_power_kw=11.0,
    )
    return Record(Topics().telemetry, "f1", encode(msg))


def test_service_samples_feed_the_record_and_a_silent_second_is_a_gap() -> None:
    clock = ManualClock(T0)
    rec = SecondRecorder("pool", T0, at(5))
    events = RecordingEventSink()

    class Both:
        def emit(self, event: object) -> None:
            rec.emit(event)  # type: ignore[arg-type]
            events.emit(event)  # type: ignore[arg-type]

    svc = Service(
        TOPO,
        ServiceConfig(reserve_kw=10.0),
        clock=clock,
        sink=ListSink(),
        events=Both(),
        activation=ReserveActivation(afrr=AfrrRamp(ramp_s=100.0)),
    )
    for i in range(3):
        svc.handle(started(i))
    svc.tick()  # the first batch goes out at T0, before any signal
    out = svc.on_frequency(FrequencySample(ts=at(0.2), hz=49.9))
    clock.set(at(0.5))
    svc.on_frequency(FrequencySample(ts=at(0.5), hz=49.8))  # same second: not sampled again
    for s in (1, 3, 4):  # nothing at all happens in second 2
        clock.set(at(s + 0.1))
        svc.on_frequency(AfrrRequest(ts=at(s + 0.1), setpoint_kw=-50.0))
    samples = [e for e in events.events if isinstance(e, PoolSampled)]
    # second 0: one sample without a signal (session starts), one with the first signal
    assert [int((e.at - T0).total_seconds()) for e in samples] == [0, 0, 1, 3, 4]
    first = samples[1]
    assert isinstance(first.signal, FrequencySample) and first.signal.hz == 49.9
    assert first.reserve_kw == 10.0
    assert first.baseline_kw == pytest.approx(float(out.baseline_kw.sum()))
    assert first.setpoint_kw == pytest.approx(float(out.setpoints_kw.sum()))
    assert first.measured_kw == 0.0  # no meter value yet
    r = rec.record()
    assert r.requested_kw[0] == pytest.approx(-10.0 * 0.09 / 0.19)  # the 49.9 Hz order
    assert r.requested_kw[1] == -50.0  # the TSO's order, not the ramp's answer
    assert [(g.start, g.seconds) for g in r.gaps()] == [(at(2), 1)]
