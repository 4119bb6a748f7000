"""Fleet state: idempotent, order-robust application of telemetry; envelopes; expiry."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.errors import InvalidInput, Issue
from aggregator.fleet import (
    EVSE_OWNED_BY_OTHER_CSMS,
    SLOT_DTYPE,
    ApplyOutcome,
    ApplyResult,
    FleetState,
    SessionState,
)
from aggregator.messages import (
    EvseHeartbeat,
    MeterValue,
    SessionEnded,
    SessionStarted,
    Telemetry,
    decode_telemetry,
    encode,
)
from aggregator.topology import Feeder, Site, Topology

T0 = datetime(2025, 3, 1, 6, 0, tzinfo=UTC)
TOPOLOGY = Topology(
    feeders=(Feeder("F1", 400.0), Feeder("F2", 250.0)),
    sites=(Site("S1", "F1", 150.0), Site("S2", "F1", 100.0), Site("S3", "F2", 50.0)),
)
FEEDER_OF = {s.site_id: s.feeder_id for s in TOPOLOGY.sites}
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def start(
    evse: str = "E1",
    session: str = "X1",
    t: float = 0,
    *,
    site: str = "S1",
    feeder: str | None = None,
    hours: float = 8,
    requested: float = 30.0,
    max_kw: float = 11.0,
    min_kw: float = 0.0,
    energy: float = 0.0,
    csms: str | None = None,
) -> SessionStarted:
    return SessionStarted(
        ts=at(t),
        feeder_id=feeder or FEEDER_OF.get(site, "F1"),
        site_id=site,
        evse_id=evse,
        csms_id=csms or "C-" + site,
        session_id=session,
        departure=at(t + hours * 3600),
        energy_requested_kwh=requested,
        max_power_kw=max_kw,
        min_power_kw=min_kw,
        energy_kwh=energy,
    )


def meter(
    evse: str = "E1",
    session: str = "X1",
    t: float = 60,
    energy: float = 1.0,
    power: float = 11.0,
    feeder: str = "F1",
) -> MeterValue:
    return MeterValue(
        ts=at(t),
        feeder_id=feeder,
        evse_id=evse,
        session_id=session,
        energy_kwh=energy,
        power_kw=power,
    )


def end(evse: str = "E1", session: str = "X1", t: float = 3600, feeder: str = "F1") -> SessionEnded:
    return SessionEnded(
        ts=at(t), feeder_id=feeder, evse_id=evse, session_id=session, energy_kwh=5.0
    )


def heartbeat(
    evse: str = "E1", t: float = 30, feeder: str = "F1", csms: str = "C-S1"
) -> EvseHeartbeat:
    return EvseHeartbeat(ts=at(t), feeder_id=feeder, evse_id=evse, csms_id=csms)


def replay(msgs: list[Telemetry], **kw: Any) -> FleetState:
    fleet = FleetState(TOPOLOGY, **kw)
    for msg in msgs:
        fleet.apply(msg)
    return fleet


# ---------------------------------------------------------------- stream strategy


@st.composite
def streams(draw: st.DrawFn) -> list[Telemetry]:
    """A realistic, time-ordered telemetry stream: sessions one after another per EVSE."""
    timed: list[tuple[float, Telemetry]] = []
    for e in range(draw(st.integers(1, 4))):
        evse = f"E{e}"
        site = draw(st.sampled_from([s.site_id for s in TOPOLOGY.sites]))
        feeder = FEEDER_OF[site]
        t = float(draw(st.integers(0, 300)))
        for k in range(draw(st.integers(1, 3))):
            session = f"{evse}-X{k}"
            max_kw = draw(st.sampled_from([3.7, 11.0, 22.0, 150.0]))
            min_kw = draw(st.sampled_from([0.0, -max_kw]))
            timed.append(
                (
                    t,
                    start(
                        evse,
                        session,
                        t,
                        site=site,
                        hours=draw(st.integers(1, 12)),
                        requested=draw(st.floats(0, 80)),
                        max_kw=max_kw,
                        min_kw=min_kw,
                        energy=draw(st.floats(-1, 1)),
                    ),
                )
            )
            energy = 0.0
            for _ in range(draw(st.integers(0, 5))):
                t += draw(st.integers(1, 900))
                energy += draw(st.floats(-5, 10))
                power = draw(st.floats(min_kw, max_kw))
                timed.append((t, meter(evse, session, t, energy, power, feeder)))
                if draw(st.booleans()):
                    t += draw(st.integers(1, 60))
                    timed.append((t, heartbeat(evse, t, feeder, "C-" + site)))
            if draw(st.booleans()):
                t += draw(st.integers(1, 600))
                timed.append((t, end(evse, session, t, feeder)))
            t += draw(st.integers(1, 600))
    timed.sort(key=lambda p: p[0])
    return [msg for _, msg in timed]


# ---------------------------------------------------------------- properties


@SETTINGS
@given(streams())
def test_replaying_a_stream_twice_equals_once(stream: list[Telemetry]) -> None:
    once = replay(stream)
    twice = replay(stream)
    second = [twice.apply(msg) for msg in stream]
    assert twice.snapshot() == once.snapshot()
    assert twice.version == once.version
    assert all(r.outcome is not ApplyOutcome.APPLIED for r in second)


@SETTINGS
@given(streams(), st.data())
def test_duplicates_anywhere_have_no_effect(stream: list[Telemetry], data: st.DataObject) -> None:
    noisy = list(stream)
    for _ in range(data.draw(st.integers(1, 2 * len(stream)))):
        copy = data.draw(st.sampled_from(stream))
        noisy.insert(data.draw(st.integers(0, len(noisy))), copy)
    assert replay(noisy).snapshot() == replay(stream).snapshot()


@SETTINGS
@given(
    st.lists(st.integers(1, 10_000), min_size=1, max_size=12, unique=True).flatmap(
        lambda ts: st.permutations(ts)
    ),
    st.floats(-11, 11),
)
def test_meter_values_in_any_order_end_in_newest(times: list[int], power: float) -> None:
    meters = [meter(t=t, energy=t / 1000, power=power * (t % 7) / 7, feeder="F2") for t in times]
    fleet = replay([start(site="S3", min_kw=-11.0), *meters])
    newest = max(meters, key=lambda m: m.ts)
    slot = fleet.slot_of["E1"]
    assert fleet.energy_kwh[slot] == newest.energy_kwh
    assert fleet.power_kw[slot] == newest.power_kw
    assert fleet.last_meter_s[slot] == newest.ts.timestamp()
    in_order = replay([start(site="S3", min_kw=-11.0), *sorted(meters, key=lambda m: m.ts)])
    assert fleet.snapshot() == in_order.snapshot()


BAD: list[tuple[Callable[[int], Telemetry], str]] = [
    (lambda i: start(f"G{i}", "GX", site="S9"), "unknown_site"),
    (lambda i: start(f"G{i}", "GX", site="S3", feeder="F1"), "site_feeder_mismatch"),
    (lambda i: meter(f"G{i}", "GX"), "unknown_session"),
    (lambda i: meter("E0", f"no-such-session-{i}"), "unknown_session"),
    (lambda i: end(f"G{i}", "GX"), "unknown_session"),  # remembered, so ids must differ
    (lambda i: heartbeat(f"G{i}"), "unknown_evse"),
]
MALFORMED = [b"{", b'{"type":"meter_value"}', b"\x00", b'{"type":"unplugged"}']


@SETTINGS
@given(streams(), st.data())
def test_bad_messages_are_counted_and_never_stop_the_stream(
    stream: list[Telemetry], data: st.DataObject
) -> None:
    raws = [encode(msg) for msg in stream]
    expected: Counter[str] = Counter()
    for i in range(data.draw(st.integers(1, 20))):
        if data.draw(st.booleans()):
            make, reason = data.draw(st.sampled_from(BAD))
            expected[f"rejected.{reason}"] += 1
            item = encode(make(i))
        else:
            item = data.draw(st.sampled_from(MALFORMED))
            expected["invalid"] += 1
        raws.insert(data.draw(st.integers(0, len(raws))), item)
    fleet = FleetState(TOPOLOGY)
    seen: Counter[str] = Counter()
    for item in raws:
        try:
            msg = decode_telemetry(item)
        except InvalidInput:
            seen["invalid"] += 1
            continue
        result = fleet.apply(msg)
        if result.outcome is ApplyOutcome.REJECTED:
            seen[f"rejected.{result.reason}"] += 1
    good = replay(stream)
    assert fleet.snapshot() == good.snapshot()
    assert seen == expected
    for key, n in expected.items():
        if key.startswith("rejected."):
            assert fleet.counters[key] - good.counters[key] == n
    assert fleet.counters["applied"] == good.counters["applied"]


@SETTINGS
@given(
    requested=st.floats(0, 100),
    energy=st.floats(-50, 120),
    max_kw=st.floats(0.1, 350),
    bidirectional=st.booleans(),
    dt_s=st.floats(1, 3600),
    elapsed_s=st.floats(0, 3 * 3600),
)
def test_envelope_invariants(
    requested: float,
    energy: float,
    max_kw: float,
    bidirectional: bool,
    dt_s: float,
    elapsed_s: float,
) -> None:
    min_kw = -max_kw if bidirectional else 0.0
    fleet = replay(
        [
            start("E1", hours=2, requested=requested, max_kw=max_kw, min_kw=min_kw),
            meter("E1", t=1, energy=energy, power=0.0),
            start("E2", "X2", requested=20.0, min_kw=-11.0),
            end("E2", "X2", t=2),
        ]
    )
    lo, hi = fleet.envelope(at(elapsed_s), dt_s)
    dt_h = dt_s / 3600
    assert lo.shape == hi.shape == (2,)
    assert np.all(lo <= 0) and np.all(hi >= 0)
    assert lo[1] == hi[1] == 0.0  # ended session
    if elapsed_s >= 2 * 3600:  # departed
        assert lo[0] == hi[0] == 0.0
    assert hi[0] <= max_kw
    assert lo[0] >= min_kw
    assert hi[0] * dt_h <= max(requested - energy, 0.0) + 1e-9
    assert lo[0] * dt_h >= -max(energy, 0.0) - 1e-9
    if not bidirectional:
        assert lo[0] == 0.0


@SETTINGS
@given(streams())
def test_restore_round_trips(stream: list[Telemetry]) -> None:
    fleet = replay(stream)
    rebuilt = FleetState(TOPOLOGY, capacity=1)
    for evse in fleet.evse_ids:
        state = fleet.session_state(evse)
        if state is not None:
            rebuilt.restore(state)
            assert rebuilt.session_state(evse) == state
    assert rebuilt.snapshot() == fleet.snapshot()


# ---------------------------------------------------------------- examples


def test_apply_outcomes_and_counters() -> None:
    fleet = FleetState(TOPOLOGY)
    assert fleet.apply(start()) == ApplyResult(ApplyOutcome.APPLIED)
    assert fleet.apply(start()).outcome is ApplyOutcome.DUPLICATE
    assert fleet.apply(meter(t=60, energy=1.0)).outcome is ApplyOutcome.APPLIED
    assert fleet.apply(meter(t=60, energy=9.0)).outcome is ApplyOutcome.DUPLICATE
    assert fleet.apply(meter(t=30, energy=0.5)).outcome is ApplyOutcome.DUPLICATE
    assert fleet.apply(meter(t=90, power=1000.0)) == ApplyResult(
        ApplyOutcome.REJECTED, "power_out_of_range"
    )
    assert fleet.apply(meter(t=90, feeder="F2")).reason == "site_feeder_mismatch"
    assert fleet.apply(start("E2", site="S3", feeder="F1")).reason == "site_feeder_mismatch"
    assert fleet.apply(start("E2", site="nowhere")).reason == "unknown_site"
    assert fleet.apply(heartbeat("E9")).reason == "unknown_evse"
    assert fleet.apply(object()).reason == "unknown_type"  # type: ignore[arg-type]
    slot = fleet.slot_of["E1"]
    assert fleet.energy_kwh[slot] == 1.0
    assert fleet.counters["applied"] == 2
    assert fleet.counters["duplicate"] == 3
    assert fleet.counters["rejected"] == 6
    assert fleet.counters["rejected.site_feeder_mismatch"] == 2
    assert fleet.counters["rejected.unknown_type"] == 1
    assert "E2" not in fleet.slot_of  # rejected starts allocate no slot


def test_over_request_is_applied_and_counted() -> None:
    fleet = replay([start(requested=10.0), meter(energy=10.4), meter(t=120, energy=10.6)])
    assert fleet.energy_kwh[0] == 10.6
    assert fleet.counters["over_request"] == 1
    assert fleet.counters["applied"] == 3


def test_newer_start_replaces_and_older_is_stale() -> None:
    fleet = replay([start(session="A", t=0), start(session="B", t=100)])
    assert fleet.snapshot()["E1"][0] == "B"
    assert fleet.apply(start(session="C", t=50)).reason == "stale"
    # A was ended by B's start: its late messages are refused.
    assert fleet.apply(start(session="A", t=0)).reason == "ended_session"
    assert fleet.apply(meter(session="A", t=60)).reason == "unknown_session"
    assert fleet.apply(end(session="A")).outcome is ApplyOutcome.DUPLICATE
    assert fleet.snapshot()["E1"][0] == "B"


def test_end_before_start_is_remembered() -> None:
    fleet = FleetState(TOPOLOGY)
    assert fleet.apply(end()).reason == "unknown_session"
    assert fleet.apply(start()).reason == "ended_session"
    assert fleet.snapshot() == {}
    assert fleet.apply(end()).outcome is ApplyOutcome.DUPLICATE


def test_ended_memory_is_bounded() -> None:
    fleet = FleetState(TOPOLOGY, ended_memory=2)
    for k in range(3):
        fleet.apply(end(session=f"X{k}"))
    assert fleet.apply(start(session="X0")).outcome is ApplyOutcome.APPLIED  # forgotten
    assert fleet.apply(start(session="X2", t=10)).reason == "ended_session"


def test_version_changes_with_sessions_not_meters() -> None:
    fleet = FleetState(TOPOLOGY)
    fleet.apply(start())
    v = fleet.version
    fleet.apply(meter())
    fleet.apply(heartbeat())
    fleet.apply(start())
    assert fleet.version == v
    fleet.apply(end())
    assert fleet.version > v


def test_expiry() -> None:
    fleet = FleetState(TOPOLOGY, session_timeout_s=600)
    fleet.apply(start("E1", "X1", 0, hours=8))  # goes silent
    fleet.apply(start("E2", "X2", 0, hours=8))  # keeps talking
    fleet.apply(start("E3", "X3", 0, hours=0.1))  # departs at 360 s
    for t in range(60, 1200, 60):
        fleet.apply(heartbeat("E2", t))
        fleet.apply(heartbeat("E3", t))
    v = fleet.version
    assert fleet.expire(at(500)) == []
    assert sorted(fleet.expire(at(1000))) == ["E1", "E3"]
    assert fleet.counters["expired"] == 2
    assert fleet.version > v
    assert list(fleet.snapshot()) == ["E2"]
    assert fleet.active_slots().tolist() == [fleet.slot_of["E2"]]
    assert fleet.apply(meter("E1", "X1", t=1100)).reason == "unknown_session"
    assert fleet.apply(start("E1", "X1", 0)).reason == "ended_session"
    assert fleet.expire(at(1800)) == ["E2"]
    with pytest.raises(ValueError, match="naive"):
        fleet.expire(datetime(2025, 3, 1))  # noqa: DTZ001


def test_capacity_growth_keeps_earlier_slots() -> None:
    fleet = FleetState(TOPOLOGY, capacity=2)
    fleet.apply(start("E0", "X0", requested=7.0, min_kw=-5.0))
    fleet.apply(meter("E0", "X0", energy=3.0, power=-4.0))
    before = fleet.snapshot()
    lo0, hi0 = fleet.envelope(at(100), 900)
    for e in range(1, 40):
        assert fleet.apply(start(f"E{e}", f"X{e}", e)).outcome is ApplyOutcome.APPLIED
    assert fleet.n_slots == 40
    assert fleet.capacity >= 40
    assert all(len(a) == fleet.capacity for a in (fleet.site, fleet.active, fleet.energy_kwh))
    assert fleet.evse_ids[:3] == ["E0", "E1", "E2"]
    assert [fleet.slot_of[f"E{e}"] for e in range(40)] == list(range(40))
    assert fleet.snapshot()["E0"] == before["E0"]
    lo, hi = fleet.envelope(at(100), 900)
    assert (lo[0], hi[0]) == (lo0[0], hi0[0])
    assert len(lo) == 40


def test_envelope_numbers() -> None:
    fleet = replay(
        [
            start("E1", requested=30.0, max_kw=11.0, min_kw=-11.0),
            meter("E1", energy=29.0, power=11.0),
            start("E2", "X2", requested=30.0, max_kw=22.0, min_kw=-22.0),
            meter("E2", "X2", energy=2.0, power=11.0),
            start("E3", "X3", requested=30.0, max_kw=11.0),
        ]
    )
    lo, hi = fleet.envelope(at(120), 900)  # 15 min: 0.25 h
    np.testing.assert_allclose(hi, [4.0, 22.0, 11.0])  # 1 kWh left / 0.25 h
    np.testing.assert_allclose(lo, [-11.0, -8.0, 0.0])  # 2 kWh charged / 0.25 h
    with pytest.raises(ValueError, match="dt_s"):
        fleet.envelope(at(120), 0.0)


def test_session_state_and_restore() -> None:
    fleet = replay([start(min_kw=-7.0), meter(energy=2.5, power=-3.0), heartbeat(t=90)])
    state = fleet.session_state("E1")
    assert state is not None
    assert state.arrival == T0
    assert state.last_ts == at(90)
    assert state.last_meter == at(60)
    assert state.energy_kwh == 2.5
    assert fleet.session_state("nope") is None
    other = FleetState(TOPOLOGY)
    other.restore(state)
    assert other.snapshot() == fleet.snapshot()
    assert other.apply(meter(t=60)).outcome is ApplyOutcome.DUPLICATE
    with pytest.raises(InvalidInput) as exc:
        other.restore(dataclasses.replace(state, site_id="S9", max_power_kw=0.0))
    assert [(i.field, i.code, i.ids) for i in exc.value.issues] == [
        ("site_id", "unknown_site", ("E1", "S9")),
        ("max_power_kw", "power_range", ("E1",)),
        ("min_charge_kw", "charge_profile", ("E1",)),
    ]
    fleet.apply(end())
    assert fleet.session_state("E1") is None  # tombstone for the compacted topic
    restored = FleetState(TOPOLOGY)
    restored.restore(dataclasses.replace(state, evse_id="E7"))
    assert restored.session_state("E7") == dataclasses.replace(state, evse_id="E7")
    assert isinstance(state, SessionState)


# ---------------------------------------------------------------- EVSE identity (15.11)


def test_a_start_for_a_live_evse_under_another_csms_is_rejected_and_changes_nothing() -> None:
    fleet = replay([start("E1", "REAL", 0, max_kw=22.0), meter("E1", "REAL", 60, 1.0, 11.0)])
    before, version = fleet.snapshot(), fleet.version
    spoof = start("E1", "SPOOF", 120, csms="C-intruder", max_kw=150.0, requested=80.0)
    result = fleet.apply(spoof)
    assert result == ApplyResult(
        ApplyOutcome.REJECTED, EVSE_OWNED_BY_OTHER_CSMS, ("E1", "C-S1", "C-intruder")
    )
    assert result.issue() == Issue(
        field="telemetry",
        code=EVSE_OWNED_BY_OTHER_CSMS,
        ids=("E1", "C-S1", "C-intruder"),
        message=EVSE_OWNED_BY_OTHER_CSMS,
    )
    assert fleet.snapshot() == before
    assert fleet.version == version
    assert fleet.counters[f"rejected.{EVSE_OWNED_BY_OTHER_CSMS}"] == 1
    # the real session's later meter values still apply; the spoofed session has none
    assert fleet.apply(meter("E1", "REAL", 180, 2.5, 20.0)).outcome is ApplyOutcome.APPLIED
    assert fleet.apply(meter("E1", "SPOOF", 190, 9.0, 5.0)).reason == "unknown_session"
    state = fleet.session_state("E1")
    assert state is not None
    assert (state.session_id, state.csms_id, state.energy_kwh, state.power_kw) == (
        "REAL",
        "C-S1",
        2.5,
        20.0,
    )
    assert fleet.csms[fleet.slot_of["E1"]] == "C-S1"
    # the refused start left no trace in the ordering of starts: the owner's next
    # session, started before the spoof's time, is not "stale"
    assert fleet.apply(end("E1", "REAL", 200)).outcome is ApplyOutcome.APPLIED
    assert fleet.apply(start("E1", "NEXT", 100)).outcome is ApplyOutcome.APPLIED


def test_the_binding_outlives_the_session_and_covers_heartbeats() -> None:
    fleet = replay([start("E1", "A", 0), end("E1", "A", 60)])
    assert fleet.owner("E1") == "C-S1"
    assert fleet.owner("E2") is None
    refused = fleet.apply(start("E1", "B", 120, csms="C-other"))
    assert (refused.reason, refused.ids) == (EVSE_OWNED_BY_OTHER_CSMS, ("E1", "C-S1", "C-other"))
    beat = fleet.apply(heartbeat("E1", 130, csms="C-other"))
    assert (beat.reason, beat.ids) == (EVSE_OWNED_BY_OTHER_CSMS, ("E1", "C-S1", "C-other"))
    assert fleet.last_ts_s[fleet.slot_of["E1"]] == at(60).timestamp()
    assert fleet.apply(heartbeat("E1", 130)).outcome is ApplyOutcome.APPLIED
    assert fleet.snapshot() == {}


def test_restore_rebinds_an_evse_to_the_state_topics_csms() -> None:
    fleet = replay([start("E1", "A", 0)])
    state = fleet.session_state("E1")
    assert state is not None
    fleet.restore(dataclasses.replace(state, csms_id="C-new", session_id="B"))
    assert fleet.owner("E1") == "C-new"
    assert fleet.apply(heartbeat("E1", 60, csms="C-new")).outcome is ApplyOutcome.APPLIED
    assert fleet.apply(heartbeat("E1", 90)).reason == EVSE_OWNED_BY_OTHER_CSMS


# ---------------------------------------------------------------- one dtype per table


def test_columns_are_views_of_one_structured_table() -> None:
    fleet = replay([start("E1", max_kw=22.0), meter(power=7.5), start("E2", "X2", site="S3")])
    table = fleet.table
    assert table.dtype == SLOT_DTYPE
    assert table.shape == (2,)
    assert not table.flags.writeable
    for name in ("site", "active", "arrival_s", "energy_kwh", "max_power_kw", "power_kw"):
        assert np.shares_memory(getattr(fleet, name), fleet.table)
    assert table["power_kw"].tolist() == [7.5, 0.0]
    assert table["site"].tolist() == [0, 2]
    assert table["max_power_kw"].tolist() == [22.0, 11.0]
    fleet.power_kw[0] = 3.0  # a column view writes the table (callers keep working)
    assert fleet.table["power_kw"][0] == 3.0
    with pytest.raises(ValueError, match="read-only"):
        table["power_kw"][0] = 1.0


def test_growing_copies_rows_and_rebinds_every_column() -> None:
    fleet = FleetState(TOPOLOGY, capacity=1)
    fleet.apply(start("E0", "X0", min_kw=-5.0))
    fleet.apply(meter("E0", "X0", energy=3.0, power=-4.0))
    row = fleet.table[0].copy()
    fleet.apply(start("E1", "X1", 1))
    fleet.apply(start("E2", "X2", 2))
    assert fleet.capacity == 4
    assert fleet.table[0] == row
    assert all(len(getattr(fleet, c)) == 4 for c in ("site", "active", "power_kw", "energy_kwh"))
    assert np.shares_memory(fleet.energy_kwh, fleet.table)
    assert fleet.active.tolist() == [True, True, True, False]


# ---------------------------------------------------------------- PEBC envelopes


def test_session_envelopes_follow_plug_windows_and_energy() -> None:
    fleet = replay(
        [
            start("E1", "X1", 0, hours=0.5, requested=30.0, max_kw=11.0, min_kw=-11.0),
            meter("E1", "X1", 60, energy=4.0, power=11.0),
            start("E2", "X2", 0, hours=8, requested=10.0, max_kw=22.0),
            start("E3", "X3", 0, hours=8),
            end("E3", "X3", 100),
        ]
    )
    now = at(600)
    env = fleet.session_envelopes(np.arange(3), start=T0, step_s=900.0, steps=4, now=now)
    assert env.evse_ids == ("E1", "E2", "E3")
    assert env.validate() == []
    # E1 leaves at 1800 s: plugged in steps 0 and 1 only
    np.testing.assert_array_equal(env.upper_kw[0], [11.0, 11.0, 0.0, 0.0])
    np.testing.assert_array_equal(env.lower_kw[0], [-11.0, -11.0, 0.0, 0.0])
    np.testing.assert_array_equal(env.upper_kw[1], [22.0] * 4)
    np.testing.assert_array_equal(env.lower_kw[1], [0.0] * 4)
    np.testing.assert_array_equal(env.upper_kw[2], [0.0] * 4)  # ended
    np.testing.assert_array_equal(env.energy_max_kwh, [26.0, 10.0, 0.0])
    np.testing.assert_array_equal(env.energy_min_kwh, [-4.0, 0.0, 0.0])
    one = env.energy_constraint(0)
    assert (one.start, one.end, one.min_kwh, one.max_kwh) == (T0, at(1800), -4.0, 26.0)
    assert env.envelope(1).validate() == []
    later = fleet.session_envelopes(
        np.arange(3), start=at(900), step_s=900.0, steps=2, now=at(1000)
    )
    np.testing.assert_array_equal(later.upper_kw[0], [11.0, 0.0])


def test_bind_keeps_an_owner_for_an_evse_known_only_from_leases() -> None:
    fleet = FleetState(TOPOLOGY)
    assert fleet.bind("E1", "C-S1")
    assert fleet.bind("E1", "C-S1")  # idempotent
    assert not fleet.bind("E1", "C-other")
    assert (fleet.owner("E1"), fleet.n_slots) == ("C-S1", 0)  # no slot, no row
    refused = fleet.apply(start("E1", "SPOOF", 10, csms="C-other"))
    assert (refused.reason, refused.ids) == (EVSE_OWNED_BY_OTHER_CSMS, ("E1", "C-S1", "C-other"))
    assert fleet.n_slots == 0
    assert fleet.apply(start("E1", "REAL", 20)).outcome is ApplyOutcome.APPLIED
    assert fleet.owner("E1") == "C-S1"
    assert not fleet.bind("E1", "C-other")


def test_the_public_surface_is_pinned() -> None:
    import aggregator.fleet as package

    assert sorted(package.__all__) == sorted(
        [
            "EVSE_OWNED_BY_OTHER_CSMS",
            "OVER_REQUEST_TOLERANCE_KWH",
            "POWER_TOLERANCE_KW",
            "POWER_TOLERANCE_REL",
            "SLOT_DTYPE",
            "ApplyOutcome",
            "ApplyResult",
            "FleetState",
            "SessionState",
            "SnapshotRow",
        ]
    )
    assert all(hasattr(package, name) for name in package.__all__)


def test_a_restored_session_keeps_its_cars_phases_and_minimum() -> None:
    # a single-phase car on L2 with a 10 A minimum: after a takeover its load must still
    # count on L2 only and its setpoints stay 0 or >= 2.3 kW (not the default 3 x 6 A car)
    msg = start(max_kw=7.4).model_copy(update={"phases": 1, "phase": "L2", "min_current_a": 10.0})
    fleet = replay([msg])
    state = fleet.session_state("E1")
    assert state is not None and state.phase_w == (0.0, 1.0, 0.0)
    assert state.min_charge_kw == pytest.approx(2.3)
    other = FleetState(TOPOLOGY)
    other.restore(state)
    assert other.snapshot() == fleet.snapshot()
    assert other.min_charge_kw[0] == pytest.approx(2.3)
    # a record from before the profile was carried: the default AC car
    old = dataclasses.replace(state, min_charge_kw=None, phase_w=None)
    third = FleetState(TOPOLOGY)
    third.restore(old)
    assert third.min_charge_kw[0] == pytest.approx(min(3 * 6.0 * 230.0 / 1000.0, 7.4))
    bad = dataclasses.replace(state, phase_w=(0.0, 0.0, 0.0))
    with pytest.raises(InvalidInput) as exc:
        FleetState(TOPOLOGY).restore(bad)
    assert [(i.field, i.code) for i in exc.value.issues] == [("phase_w", "charge_profile")]


# ---------------------------------------------------------- needs told after the start


def test_a_newer_start_of_the_live_session_revises_its_departure_and_energy() -> None:
    first = start(t=0, hours=8, requested=20.0)
    revised = start(t=300, hours=3, requested=35.0)  # the EV's needs, told after the start
    fleet = replay([first, meter(t=120, energy=1.0), revised])
    slot = fleet.slot_of["E1"]
    assert fleet.departure_s[slot] == revised.departure.timestamp()
    assert fleet.energy_requested_kwh[slot] == 35.0
    assert fleet.energy_kwh[slot] == 1.0  # the meter value stands
    assert fleet.arrival_s[slot] == first.ts.timestamp()  # the same session, not a new one
    version = fleet.version
    assert fleet.apply(revised).outcome is ApplyOutcome.DUPLICATE  # again: nothing
    assert fleet.apply(start(t=200, hours=9, requested=5.0)).outcome is ApplyOutcome.DUPLICATE
    assert fleet.energy_requested_kwh[slot] == 35.0 and fleet.version == version  # older: no
    # the other order: the revision first is the start; the older start changes nothing
    other = replay([revised, first])
    assert other.energy_requested_kwh[other.slot_of["E1"]] == 35.0
    assert other.departure_s[other.slot_of["E1"]] == revised.departure.timestamp()


@SETTINGS
@given(streams(), st.lists(st.tuples(st.integers(1, 3000), st.floats(0, 80)), max_size=4))
def test_revisions_are_idempotent_and_the_newest_wins(
    stream: list[Telemetry], revisions: list[tuple[int, float]]
) -> None:
    starts = [m for m in stream if isinstance(m, SessionStarted)]
    base = starts[0]
    extra = [
        base.model_copy(
            update={
                "ts": base.ts + timedelta(seconds=dt),
                "energy_requested_kwh": kwh,
                "departure": base.departure + timedelta(seconds=dt),
            }
        )
        for dt, kwh in revisions
    ]
    once = replay([*stream, *extra])
    twice = replay([*stream, *extra, *stream, *extra])
    assert twice.snapshot() == once.snapshot()
    slot = once.slot_of[base.evse_id]
    if extra and once.session_ids[slot] == base.session_id:
        newest = max(extra, key=lambda m: m.ts)
        if newest.ts > base.ts:
            assert once.energy_requested_kwh[slot] == newest.energy_requested_kwh
