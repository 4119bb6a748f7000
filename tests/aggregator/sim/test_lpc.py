"""The LPC state machine: every documented transition, and its invariants under random input."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.errors import InvalidInput
from aggregator.sim.lpc import (
    CONNECTED,
    FailsafeValues,
    Heartbeat,
    LimitDeactivated,
    LimitReceived,
    LpcEvent,
    LpcState,
    LpcStateName,
    Tick,
    advance,
    allowed_power_kw,
    has_contact,
    initial_state,
    next_deadline,
    step,
)

T0 = datetime(2026, 1, 14, 17, 0, tzinfo=UTC)
NAIVE = datetime(2026, 1, 14, 18, 0)  # noqa: DTZ001 - deliberately naive
SETTINGS = settings(max_examples=300, deadline=None)

INIT = LpcStateName.INIT
LIMITED = LpcStateName.LIMITED
CONTROLLED = LpcStateName.UNLIMITED_CONTROLLED
AUTONOMOUS = LpcStateName.UNLIMITED_AUTONOMOUS
FAILSAFE = LpcStateName.FAILSAFE


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


@dataclass(frozen=True)
class Limit:
    """A limit write whose ``until`` is relative to the time it is sent."""

    kw: float
    until_s: float | None = None
    lease: bool = False
    active: bool = True

    def at(self, now: datetime) -> LimitReceived:
        until = None if self.until_s is None else now + timedelta(seconds=self.until_s)
        return LimitReceived(self.kw, active=self.active, until=until, lease=self.lease)


Script = Sequence[tuple[float, LpcEvent | Limit]]

HB = Heartbeat()
OFF = LimitDeactivated()
TICK = Tick()


def run(script: Script, state: LpcState | None = None) -> LpcState:
    s = state if state is not None else initial_state(T0)
    for t_s, ev in script:
        now = at(t_s)
        s = step(s, ev.at(now) if isinstance(ev, Limit) else ev, now)
    return s


# Scripts that lead to a state (times in seconds from T0):
TO_LIMITED: Script = [(0, HB), (1, Limit(11.0))]  # limited, heartbeat at 0
TO_CONTROLLED: Script = [(0, HB), (1, OFF)]  # controlled, heartbeat at 0
TO_FAILSAFE: Script = [*TO_LIMITED, (120, TICK)]  # failsafe since 120
TO_AUTONOMOUS: Script = [(120, TICK)]  # autonomous since 120 (init timed out)
FS_END = 120 + 7200  # the failsafe entered at 120 ends here

# (ref, script, expected state, expected allowed power, expected entered_at in s or None)
TRANSITIONS: list[tuple[str, Script, LpcStateName, float | None, float | None]] = [
    ("start: init at the failsafe limit (LPC-901/1)", [], INIT, 4.2, 0),
    ("init -> limited (LPC-904)", [(10, HB), (20, Limit(11.0))], LIMITED, 11.0, 20),
    ("init -> controlled, limit not applicable (LPC-902)", [(10, HB), (20, Limit(math.nan))],
     CONTROLLED, None, 20),
    ("init -> controlled, deactivated (LPC-905)", [(10, HB), (20, OFF)], CONTROLLED, None, 20),
    ("init stays: write without heartbeat (LPC-TS-036)", [(10, Limit(5.0))], INIT, 4.2, 0),
    ("init stays: write 61 s after the heartbeat", [(0, HB), (61, Limit(5.0))], INIT, 4.2, 0),
    ("init stays until the init timeout", [(0, HB), (119.9, TICK)], INIT, 4.2, 0),
    ("init -> autonomous at 120 s (LPC-906)", [(120, TICK)], AUTONOMOUS, None, 120),
    ("init -> autonomous, heartbeat alone (LPC-906)", [(100, HB), (130, TICK)], AUTONOMOUS,
     None, 120),
    ("limited -> limited, new limit (LPC-910)", [*TO_LIMITED, (30, Limit(7.0))], LIMITED, 7.0,
     1),
    ("limited stays, limit not applicable (LPC-907/2)", [*TO_LIMITED, (30, Limit(math.inf))],
     LIMITED, 11.0, 1),
    ("limited stays, limit already ended (LPC-907/2)", [*TO_LIMITED, (30, Limit(3.0, -1))],
     LIMITED, 11.0, 1),
    ("limited -> controlled, deactivated (LPC-909)", [*TO_LIMITED, (30, OFF)], CONTROLLED, None,
     30),
    ("limited -> controlled, active=False (LPC-909)", [*TO_LIMITED, (30, Limit(3.0, active=False))],
     CONTROLLED, None, 30),
    ("limited -> controlled, duration ended (LPC-908)",
     [(0, HB), (1, Limit(5.0, until_s=60)), (90, TICK)], CONTROLLED, None, 61),
    ("limited -> failsafe, lease ended (gridflex lease)",
     [(0, HB), (1, Limit(5.0, until_s=60, lease=True)), (90, TICK)], FAILSAFE, 4.2, 61),
    ("limited -> failsafe, heartbeat lost (LPC-912)", [*TO_LIMITED, (500, TICK)], FAILSAFE, 4.2,
     120),
    ("limited, tie of lease end and heartbeat loss -> failsafe",
     [(0, HB), (0, Limit(5.0, until_s=120)), (121, TICK)], FAILSAFE, 4.2, 120),
    ("limited stays with heartbeats", [*TO_LIMITED, (100, HB), (200, TICK)], LIMITED, 11.0, 1),
    ("controlled -> limited (LPC-910)", [*TO_CONTROLLED, (30, Limit(6.0))], LIMITED, 6.0, 30),
    ("controlled -> failsafe, heartbeat lost (LPC-911)", [*TO_CONTROLLED, (120, TICK)], FAILSAFE,
     4.2, 120),
    ("controlled -> failsafe after a duration ended (LPC-908, 911)",
     [(0, HB), (1, Limit(5.0, until_s=30)), (300, TICK)], FAILSAFE, 4.2, 120),
    ("failsafe -> limited on contact (LPC-919)",
     [*TO_FAILSAFE, (600, HB), (610, Limit(9.0))], LIMITED, 9.0, 610),
    ("failsafe -> controlled, deactivated (LPC-920)", [*TO_FAILSAFE, (600, HB), (610, OFF)],
     CONTROLLED, None, 610),
    ("failsafe -> controlled, not applicable (LPC-918)",
     [*TO_FAILSAFE, (600, HB), (610, Limit(math.nan))], CONTROLLED, None, 610),
    ("failsafe stays: write without heartbeat", [*TO_FAILSAFE, (600, Limit(9.0))], FAILSAFE, 4.2,
     120),
    ("failsafe stays: heartbeat without write (LPC-921 not taken)",
     [*TO_FAILSAFE, (600, HB), (1200, TICK)], FAILSAFE, 4.2, 120),
    ("failsafe stays until the failsafe duration", [*TO_FAILSAFE, (FS_END - 0.001, TICK)],
     FAILSAFE, 4.2, 120),
    ("failsafe -> autonomous after the duration (LPC-922)", [*TO_FAILSAFE, (FS_END, TICK)],
     AUTONOMOUS, None, FS_END),
    ("failsafe of 3 h -> autonomous at 3 h (LPC-922)",
     [*TO_LIMITED, (2, FailsafeValues(1.5, 10_800)), (20_000, TICK)], AUTONOMOUS, None,
     120 + 10_800),
    ("autonomous -> limited on contact (LPC-919)", [*TO_AUTONOMOUS, (200, HB), (201, Limit(8.0))],
     LIMITED, 8.0, 201),
    ("autonomous -> controlled on contact (LPC-920)", [*TO_AUTONOMOUS, (200, HB), (201, OFF)],
     CONTROLLED, None, 201),
    ("autonomous stays: write without heartbeat", [*TO_AUTONOMOUS, (200, Limit(8.0))],
     AUTONOMOUS, None, 120),
    ("autonomous stays forever", [*TO_AUTONOMOUS, (10**7, TICK)], AUTONOMOUS, None, 120),
    ("negative limit is a V2G setpoint, applied as is", [(0, HB), (1, Limit(-7.0))], LIMITED,
     -7.0, 1),
]  # fmt: skip


@pytest.mark.parametrize(
    ("script", "expected", "power", "entered_s"),
    [pytest.param(*row[1:], id=row[0]) for row in TRANSITIONS],
)
def test_documented_transition(
    script: Script, expected: LpcStateName, power: float | None, entered_s: float | None
) -> None:
    s = run(script)
    assert s.state is expected
    assert allowed_power_kw(s) == power
    if entered_s is not None:
        assert s.entered_at == at(entered_s)


def test_every_state_is_reached_by_the_table() -> None:
    assert {row[2] for row in TRANSITIONS} == set(LpcStateName)


def test_failsafe_values_are_validated_and_rejected_with_every_issue() -> None:
    s = run(TO_LIMITED)
    for kw, dur, fields in [
        (4.2, 7_199.0, {"failsafe_duration_s"}),
        (4.2, 86_401.0, {"failsafe_duration_s"}),
        (-0.1, 7_200.0, {"failsafe_kw"}),
        (math.nan, 100.0, {"failsafe_kw", "failsafe_duration_s"}),
    ]:
        with pytest.raises(InvalidInput) as exc:
            step(s, FailsafeValues(kw, dur), at(5))
        assert {i.field for i in exc.value.issues} == fields
    ok = step(s, FailsafeValues(2.0, 86_400.0), at(5))
    assert (ok.failsafe_kw, ok.failsafe_duration_s) == (2.0, 86_400.0)
    assert ok.state is LIMITED


def test_failsafe_values_need_contact_outside_connected_states() -> None:
    s = run(TO_FAILSAFE)
    assert step(s, FailsafeValues(1.0, 9_000.0), at(600)) == advance(s, at(600))
    s = run([*TO_FAILSAFE, (600, HB), (610, FailsafeValues(1.0, 9_000.0))])
    assert s.state is FAILSAFE and allowed_power_kw(s) == 1.0 and s.failsafe_duration_s == 9_000


def test_initial_state_and_step_reject_bad_values() -> None:
    with pytest.raises(InvalidInput) as exc:
        initial_state(NAIVE, failsafe_kw=-1, failsafe_duration_s=60, heartbeat_timeout_s=0)
    assert {i.field for i in exc.value.issues} == {
        "now",
        "failsafe_kw",
        "failsafe_duration_s",
        "heartbeat_timeout_s",
    }
    s = initial_state(T0)
    with pytest.raises(InvalidInput):
        step(s, HB, NAIVE)
    with pytest.raises(InvalidInput):
        step(s, LimitReceived(3.0, until=NAIVE), at(1))


def test_next_deadline() -> None:
    assert next_deadline(initial_state(T0)) == at(120)
    assert next_deadline(run(TO_LIMITED)) == at(120)
    assert next_deadline(run([(0, HB), (1, Limit(5.0, until_s=30, lease=True))])) == at(31)
    assert next_deadline(run(TO_FAILSAFE)) == at(FS_END)
    assert next_deadline(run(TO_AUTONOMOUS)) is None


# ------------------------------------------------------------------------ properties

DELAYS = st.one_of(
    st.sampled_from([0.0, 0.5, 1.0, 59.0, 60.0, 61.0, 119.0, 120.0, 121.0, 3_600.0, 7_200.0]),
    st.floats(0.0, 90.0),
    st.floats(0.0, 90.0),
    st.floats(0.0, 10_000.0),
)
LIMIT_KW = st.one_of(
    st.floats(-50.0, 50.0), st.floats(0.0, 50.0), st.sampled_from([math.nan, math.inf])
)
UNTIL_S = st.one_of(
    st.none(), st.floats(1.0, 10_000.0), st.floats(-10.0, 500.0), st.sampled_from([60.0, 120.0])
)
LIMITS = st.builds(Limit, LIMIT_KW, UNTIL_S, st.booleans(), st.one_of(st.just(True), st.booleans()))
EVENTS: st.SearchStrategy[LpcEvent | Limit] = st.one_of(
    st.just(HB),
    st.just(HB),
    st.just(TICK),
    st.just(OFF),
    LIMITS,
    LIMITS,
    st.builds(
        FailsafeValues,
        st.one_of(st.floats(0.0, 22.0), st.just(-1.0)),
        st.one_of(st.sampled_from([7_200.0, 9_000.0, 86_400.0]), st.just(600.0)),
    ),
)
CONTACT = st.tuples(  # a heartbeat and, within the contact window, a write
    st.tuples(DELAYS, st.just(HB)), st.tuples(st.floats(0.0, 60.0), st.one_of(LIMITS, st.just(OFF)))
)
SCRIPTS = st.lists(
    st.one_of(st.tuples(st.tuples(DELAYS, EVENTS)), st.tuples(st.tuples(DELAYS, EVENTS)), CONTACT),
    max_size=25,
).map(lambda chunks: [row for chunk in chunks for row in chunk])
WRITES = (LimitReceived, LimitDeactivated, FailsafeValues)


def check_state(s: LpcState, now: datetime) -> None:
    assert s.state in set(LpcStateName)
    assert s.entered_at <= now
    power = allowed_power_kw(s)
    if s.state is LIMITED:
        assert s.limit_kw is not None and math.isfinite(s.limit_kw)
        assert power == s.limit_kw
    else:
        assert s.limit_kw is None and s.limit_until is None
    if s.state in (FAILSAFE, INIT):
        assert power == s.failsafe_kw and s.failsafe_kw >= 0
    if s.state in (CONTROLLED, AUTONOMOUS):
        assert power is None
    if s.state in CONNECTED:
        # a connected system has heard the guard within the heartbeat timeout
        assert s.last_heartbeat is not None
        assert (now - s.last_heartbeat).total_seconds() < s.heartbeat_timeout_s


@SETTINGS
@given(script=SCRIPTS)
def test_invariants_under_random_events(script: list[tuple[float, LpcEvent | Limit]]) -> None:
    s = initial_state(T0)
    now = T0
    for delay, spec in script:
        now += timedelta(seconds=delay)
        ev = spec.at(now) if isinstance(spec, Limit) else spec
        try:
            new = step(s, ev, now)
        except InvalidInput:
            assert isinstance(ev, FailsafeValues) and ev.validate()
            continue
        check_state(new, now)

        if s.state is FAILSAFE and new.state is not FAILSAFE:
            contact = isinstance(ev, WRITES) and has_contact(s, now)
            ended = s.entered_at + timedelta(seconds=s.failsafe_duration_s)
            if not contact:  # only the failsafe duration ends a failsafe without contact
                assert new.state is AUTONOMOUS
                assert now >= ended and new.entered_at == ended
            else:
                assert new.state in (LIMITED, CONTROLLED, AUTONOMOUS)

        if new.state in CONNECTED:  # the heartbeat timeout always leads to failsafe
            assert new.last_heartbeat is not None
            lost = new.last_heartbeat + timedelta(seconds=new.heartbeat_timeout_s)
            later = advance(new, lost)
            assert later.state is FAILSAFE
            assert allowed_power_kw(later) == new.failsafe_kw
        s = new


@SETTINGS
@given(script=SCRIPTS, waits=st.lists(st.floats(0.0, 20_000.0), min_size=1, max_size=6))
def test_time_passing_is_path_independent(
    script: list[tuple[float, LpcEvent | Limit]], waits: list[float]
) -> None:
    """Ticking often or once gives the same state; a failsafe holds its value meanwhile."""
    s = initial_state(T0)
    now = T0
    for delay, spec in script:
        now += timedelta(seconds=delay)
        ev = spec.at(now) if isinstance(spec, Limit) else spec
        try:
            s = step(s, ev, now)
        except InvalidInput:
            continue
    ticked = s
    t = now
    for w in waits:
        t += timedelta(seconds=w)
        ticked = step(ticked, TICK, t)
        check_state(ticked, t)
        if ticked.state is FAILSAFE:
            assert allowed_power_kw(ticked) == s.failsafe_kw
    assert advance(s, t) == ticked
