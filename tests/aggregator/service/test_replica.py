"""The service on in-process parts: bad input is rejected and counted, batches are safe."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.interfaces import ManualClock, Record, Topics
from aggregator.messages import (
    AfrrRequest,
    DsoLimitCancel,
    DsoLimitMessage,
    FrequencySample,
    MeterValue,
    SessionStarted,
    decode_setpoints,
    encode,
)
from aggregator.service.replica import Service, ServiceConfig
from aggregator.topology import Feeder, Site, Topology
from markets.activation import ReserveActivation
from tests.aggregator.service.conftest import ListSink

T0 = datetime(2026, 1, 14, 17, 0, tzinfo=UTC)
TOPICS = Topics()
TOPO = Topology(
    feeders=(Feeder("f1", 60.0),),
    sites=(Site("s1", "f1", 40.0, csms_id="cs-a"), Site("s2", "f1", 30.0, csms_id="cs-b")),
)


def make(reserve_kw: float = 10.0) -> tuple[Service, ListSink, ManualClock]:
    clock = ManualClock(T0)
    sink = ListSink()
    svc = Service(
        TOPO,
        ServiceConfig(reserve_kw=reserve_kw),
        clock=clock,
        sink=sink,
        activation=ReserveActivation(),
    )
    return svc, sink, clock


def start(i: int, site: str, t: datetime = T0, kw: float = 11.0, v2g: bool = False) -> Record:
    msg = SessionStarted(
        ts=t,
        feeder_id="f1",
        site_id=site,
        evse_id=f"e{i}",
        csms_id="cs-a" if site == "s1" else "cs-b",
        session_id=f"sess{i}",
        departure=t + timedelta(hours=6),
        energy_requested_kwh=30.0,
        max_power_kw=kw,
        min_power_kw=-kw if v2g else 0.0,
    )
    return Record(TOPICS.telemetry, "f1", encode(msg))


def freq(hz: float, t: datetime = T0) -> Record:
    return Record(TOPICS.frequency, None, encode(FrequencySample(ts=t, hz=hz)))


def limit(
    kw: float,
    target: str = "feeder",
    target_id: str = "f1",
    event: str = "ev1",
    start: datetime = T0,
    hours: float = 3.0,
    direction: str = "import",
) -> Record:
    msg = DsoLimitMessage(
        ts=T0,
        event_id=event,
        target_type=target,
        target_id=target_id,  # type: ignore[arg-type]
        start=start,
        end=start + timedelta(hours=hours),
        limit_kw=kw,
        direction=direction,  # type: ignore[arg-type]
    )
    return Record(TOPICS.grid_signals, target_id, encode(msg))


def sums_of_last_batches(sink: ListSink, svc: Service) -> tuple[dict[str, float], float]:
    latest = {}
    for b in sink.batches:
        latest[b.csms_id] = b
    site: dict[str, float] = {s.site_id: 0.0 for s in TOPO.sites}
    for b in latest.values():
        for e, p in zip(b.evse_ids, b.power_kw, strict=True):
            slot = svc.fleet.slot_of[e]
            site[TOPO.sites[int(svc.fleet.site[slot])].site_id] += p
    return site, sum(site.values())


def test_malformed_records_are_rejected_with_reason_and_the_stream_goes_on() -> None:
    svc, sink, _ = make()
    bad = [
        Record(TOPICS.telemetry, "f1", b"{not json"),
        Record(TOPICS.telemetry, "f1", b'{"v": 1, "type": "meter_value"}'),
        Record(
            TOPICS.frequency,
            None,
            b'{"v": 2, "type": "frequency", "ts": "2026-01-14T17:00:00Z", "hz": 50}',
        ),
        Record("gridflex.unknown", None, b"{}"),
    ]
    reasons = [svc.handle(r) for r in bad]
    assert all(r for r in reasons)
    assert "json" in reasons[0]  # type: ignore[operator]
    assert "ts" in reasons[1] and "session_id" in reasons[1]  # type: ignore[operator]
    assert svc.counters["rejected.gridflex.telemetry.invalid"] == 2
    assert svc.counters["rejected.gridflex.frequency.invalid"] == 1
    assert svc.counters["rejected.unknown_topic"] == 1
    # good records after the bad ones still flow
    assert svc.handle(start(1, "s1")) is None
    assert svc.handle(freq(50.0)) is None
    assert sink.batches and sink.batches[-1].evse_ids == ["e1"]


def test_unknown_site_is_rejected_by_reason() -> None:
    svc, _, _ = make()
    rec = start(1, "nowhere")
    assert svc.handle(rec) == "unknown_site"
    assert svc.fleet.counters["rejected.unknown_site"] == 1


def test_batches_are_valid_sequenced_and_carry_validity_and_source_time() -> None:
    svc, sink, clock = make()
    for i in range(4):
        svc.handle(start(i, "s1" if i < 2 else "s2"))
    svc.handle(freq(50.0))
    clock.advance(10)
    svc.handle(freq(49.9, clock.now()))
    by_csms: dict[str, list[int]] = {}
    for b in sink.batches:
        by_csms.setdefault(b.csms_id, []).append(b.seq)
        again = decode_setpoints(encode(b))  # the wire form validates
        assert again.valid_until == b.issued_at + timedelta(seconds=120)
        # a frequency-driven batch names its signal; a heartbeat batch has none
        assert again.source_ts in (None, b.issued_at)
    assert set(by_csms) == {"cs-a", "cs-b"}
    assert any(b.source_ts is not None for b in sink.batches)
    for seqs in by_csms.values():
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_dso_limit_holds_in_the_next_batches_and_cancel_releases_it() -> None:
    svc, sink, clock = make(reserve_kw=0.0)
    for i in range(6):
        svc.handle(start(i, "s1" if i < 3 else "s2"))
    svc.handle(freq(50.0))
    _, total = sums_of_last_batches(sink, svc)
    assert total > 20.0
    assert svc.handle(limit(12.0)) is None
    svc.handle(freq(50.0))
    _site, total = sums_of_last_batches(sink, svc)
    assert total <= 12.0 + 1e-6
    svc.handle(Record(TOPICS.grid_signals, "f1", encode(DsoLimitCancel(ts=T0, event_id="ev1"))))
    clock.advance(1)
    svc.handle(freq(50.0, clock.now()))
    _, total = sums_of_last_batches(sink, svc)
    assert total > 12.0


def test_limit_for_unknown_target_is_rejected() -> None:
    svc, _, _ = make()
    reason = svc.handle(limit(5.0, target="site", target_id="nope"))
    assert reason is not None and "unknown site" in reason
    assert not svc.limits.limits


def test_failsafe_limits_respect_every_cap_together() -> None:
    svc, sink, _ = make()
    for i in range(10):
        svc.handle(start(i, "s1" if i < 8 else "s2"))
    svc.handle(limit(20.0, start=T0 + timedelta(minutes=30)))  # in the failsafe window
    svc.handle(freq(50.0))
    latest = {b.csms_id: b for b in sink.batches}
    fs = {e: f for b in latest.values() for e, f in zip(b.evse_ids, b.failsafe_kw, strict=True)}
    s1 = sum(f for e, f in fs.items() if int(e[1:]) < 8)
    assert s1 <= 40.0 + 1e-9
    assert sum(fs.values()) <= 20.0 + 1e-9
    assert max(fs.values()) <= 4.2


def test_default_failsafe_is_4_2_kw_when_caps_allow() -> None:
    svc, sink, _ = make()
    svc.handle(start(1, "s1"))
    svc.handle(freq(50.0))
    assert sink.batches[-1].failsafe_kw == [4.2]


def test_fcr_and_afrr_move_the_fleet_in_the_right_direction() -> None:
    svc, _, _clock = make(reserve_kw=10.0)
    for i in range(4):
        svc.handle(start(i, "s1" if i < 2 else "s2", kw=7.4))
    base = svc.on_frequency(FrequencySample(ts=T0, hz=50.0)).setpoints_kw.sum()
    low = svc.on_frequency(FrequencySample(ts=T0, hz=49.8)).setpoints_kw.sum()
    high = svc.on_frequency(FrequencySample(ts=T0, hz=50.2)).setpoints_kw.sum()
    assert low == pytest.approx(base - 10.0, abs=1e-6)
    assert high == pytest.approx(min(base + 10.0, 4 * 7.4), abs=1e-6)
    # aFRR is ramp-limited (full reserve in 120 s) and clipped to the committed reserve
    first = svc.on_frequency(AfrrRequest(ts=T0, setpoint_kw=-50.0))
    assert first.deviation_kw == pytest.approx(-10.0 * 4 / 120)
    for k in range(1, 31):
        afrr = svc.on_frequency(AfrrRequest(ts=T0 + timedelta(seconds=4 * k), setpoint_kw=-50.0))
    assert afrr.deviation_kw == pytest.approx(-10.0)


def test_meter_values_update_state_and_sessions_finish() -> None:
    svc, _, clock = make()
    svc.handle(start(1, "s1"))
    clock.advance(3600)
    mv = MeterValue(
        ts=clock.now(),
        feeder_id="f1",
        evse_id="e1",
        session_id="sess1",
        energy_kwh=30.0,
        power_kw=11.0,
    )
    assert svc.handle(Record(TOPICS.telemetry, "f1", encode(mv))) is None
    out = svc.on_frequency(FrequencySample(ts=clock.now(), hz=50.0))
    assert out.setpoints_kw.sum() == 0.0  # nothing left to deliver


@st.composite
def event_streams(draw: st.DrawFn) -> list[tuple[str, object]]:
    events: list[tuple[str, object]] = []
    for _ in range(draw(st.integers(3, 25))):
        kind = draw(st.sampled_from(["start", "freq", "limit", "site_limit", "export", "tick"]))
        if kind == "start":
            events.append(
                (
                    "start",
                    (
                        draw(st.integers(0, 15)),
                        draw(st.sampled_from(["s1", "s2"])),
                        draw(st.sampled_from([3.7, 11.0, 22.0])),
                        draw(st.booleans()),
                    ),
                )
            )
        elif kind == "freq":
            events.append(("freq", draw(st.floats(49.5, 50.5))))
        elif kind == "limit":
            events.append(("limit", draw(st.floats(0.0, 80.0))))
        elif kind in ("site_limit", "export"):
            events.append((kind, (draw(st.sampled_from(["s1", "s2"])), draw(st.floats(0.0, 40.0)))))
        else:
            events.append(("tick", draw(st.integers(1, 1200))))
    return events


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_streams())
def test_no_batch_ever_exceeds_a_site_feeder_or_dso_limit(events: list[tuple[str, object]]) -> None:
    svc, sink, clock = make(reserve_kw=15.0)
    for kind, arg in events:
        now = clock.now()
        if kind == "start":
            i, site, kw, v2g = arg  # type: ignore[misc]
            svc.handle(start(i, site, now, kw, v2g))
        elif kind == "limit":
            svc.handle(limit(float(arg), event="feeder", start=now))  # type: ignore[arg-type]
        elif kind == "site_limit":
            site, kw = arg  # type: ignore[misc]
            svc.handle(limit(kw, target="site", target_id=site, event=f"site-{site}", start=now))
        elif kind == "export":
            site, kw = arg  # type: ignore[misc]
            svc.handle(limit(kw, "site", site, f"exp-{site}", start=now, direction="export"))
        elif kind == "tick":
            clock.advance(float(arg))  # type: ignore[arg-type]
            svc.tick()
        else:
            n_before = len(sink.batches)
            svc.handle(freq(float(arg), now))  # type: ignore[arg-type]
            if len(sink.batches) == n_before:
                continue
            caps = svc.limits.caps_at(now)
            site, total = sums_of_last_batches(sink, svc)
            for k, s in enumerate(TOPO.sites):
                assert site[s.site_id] <= caps.site_kw[k] + 1e-6
                assert site[s.site_id] >= -caps.site_export_kw[k] - 1e-6
            assert total <= float(caps.feeder_kw[0]) + 1e-6
            latest = {b.csms_id: b for b in sink.batches}
            for b in latest.values():
                for e, p in zip(b.evse_ids, b.power_kw, strict=True):
                    slot = svc.fleet.slot_of[e]
                    assert (
                        svc.fleet.min_power_kw[slot] - 1e-6
                        <= p
                        <= svc.fleet.max_power_kw[slot] + 1e-6
                    )
    assert np.isfinite(svc.counters["dispatches"])


def test_heartbeat_batches_go_out_without_frequency_signals() -> None:
    svc, sink, clock = make()
    svc.handle(start(1, "s1"))
    svc.handle(freq(50.0))
    n = len(sink.batches)
    for _ in range(10):  # 10 × 10 s, no frequency signal at all
        clock.advance(10)
        svc.tick()
    beats = sink.batches[n:]
    assert len(beats) >= 3 and all(b.source_ts is None for b in beats)
    # every lease is renewed before it runs out
    gaps = [(b.issued_at - a.issued_at).total_seconds() for a, b in pairwise(beats)]
    assert max(gaps) <= 30.0 < 120.0


def test_feeder_headroom_is_cap_minus_base() -> None:
    svc, _, _ = make(reserve_kw=0.0)
    assert svc.feeder_headroom_kw() == {}
    for i in range(3):
        svc.handle(start(i, "s1"))
    svc.handle(limit(20.0))
    svc.handle(freq(50.0))
    head = svc.feeder_headroom_kw()
    assert set(head) == {"f1"} and -1e-6 <= head["f1"] <= 20.0


def test_timing_history_is_bounded() -> None:
    from aggregator.service.replica import HISTORY

    svc, _, _ = make()
    svc.handle(start(1, "s1"))
    svc.tick()  # the slow loop plans in tick, never in the fast loop
    for _ in range(3):
        svc.handle(freq(50.0))
    assert len(svc.dispatch_s) >= 3 and svc.dispatch_s.maxlen == HISTORY
    assert svc.plan_s.maxlen == HISTORY
    assert svc.counters["plans.solved"] == len(svc.plan_s) >= 1


def test_a_site_export_cap_reaches_the_fast_loop_frame_at_once() -> None:
    """An export DSO limit (OpenADR 3 EXPORT_CAPACITY_LIMIT, REST ``direction=export``)
    read from the grid-signals record tightens the site's export cap in the frame the fast
    loop dispatches on, from the record on, without a plan; its cancellation releases it.
    (That the fast loop keeps every site within its frame's export cap whatever the
    activation is the dispatch property test in tests/aggregator/test_dispatch.py.)"""
    svc, _sink, clock = make()
    for i in range(2):
        svc.handle(start(i, "s1", clock.now(), 11.0, v2g=True))
    svc.tick()
    svc.handle(freq(50.0, clock.now()))
    frame = svc._frame
    assert frame is not None
    assert list(frame.dispatch.site_export_kw) == pytest.approx([40.0, 30.0], abs=1e-5)
    svc.handle(limit(5.0, "site", "s1", "x1", start=clock.now(), direction="export"))
    svc.handle(freq(50.0, clock.now()))
    frame = svc._frame
    assert frame is not None
    assert list(frame.dispatch.site_export_kw) == pytest.approx([5.0, 30.0], abs=1e-5)
    assert list(frame.dispatch.site_cap_kw) == pytest.approx([40.0, 30.0], abs=1e-5)
    assert list(svc.limits.caps_at(clock.now()).site_export_kw) == [5.0, 30.0]
    cancel = DsoLimitCancel(ts=clock.now(), event_id="x1")
    svc.handle(Record(TOPICS.grid_signals, "s1", encode(cancel)))
    svc.handle(freq(50.0, clock.now()))
    frame = svc._frame
    assert frame is not None
    assert list(frame.dispatch.site_export_kw) == pytest.approx([40.0, 30.0], abs=1e-5)
