"""PEBC domain types: validation reports every problem; energy and plan feasibility."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.errors import Issue
from aggregator.pebc import (
    EnergyConstraint,
    EnergyTransferPlan,
    PowerConstraints,
    PowerEnvelope,
    PowerRange,
    SessionEnvelopes,
    check_energy_feasible,
    check_plan,
    check_plan_against_pebc,
    is_utc,
)

T0 = datetime(2025, 3, 1, 6, 0, tzinfo=UTC)
HOUR = 3600.0
SETTINGS = settings(max_examples=80, deadline=None)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def fields(issues: list[Issue]) -> list[str]:
    return [i.field for i in issues]


def envelope(lower: list[float], upper: list[float], step_s: float = HOUR) -> PowerEnvelope:
    return PowerEnvelope.of(T0, step_s, lower, upper)


def plan_from(
    power: list[float] | np.ndarray,
    band68: tuple[list[float], list[float]] | None = None,
    band95: tuple[list[float], list[float]] | None = None,
    *,
    start: datetime = T0,
    step_s: float = HOUR,
) -> EnergyTransferPlan:
    p = np.asarray(power, dtype=np.float64)
    b68 = (p, p) if band68 is None else (np.asarray(band68[0]), np.asarray(band68[1]))
    b95 = b68 if band95 is None else (np.asarray(band95[0]), np.asarray(band95[1]))
    return EnergyTransferPlan(start, step_s, p, b68, b95)


# --- is_utc ---------------------------------------------------------------------------


def test_is_utc_accepts_only_aware_zero_offset() -> None:
    assert is_utc(T0)
    assert is_utc(datetime(2025, 1, 1, tzinfo=timezone(timedelta(0))))
    assert not is_utc(datetime(2025, 1, 1))  # noqa: DTZ001 - naive on purpose
    assert not is_utc(datetime(2025, 1, 1, tzinfo=timezone(timedelta(hours=1))))


# --- PowerRange / PowerConstraints ------------------------------------------------------


def test_power_range_valid_and_contains() -> None:
    r = PowerRange(-7.0, 11.0)
    assert r.validate() == []
    assert r.contains(-7.0) and r.contains(0.0) and r.contains(11.0)
    assert r.contains(11.0 + 1e-9)  # within tolerance
    assert not r.contains(11.1)
    assert not r.contains(-7.1)


def test_power_range_crossed_names_field_and_numbers() -> None:
    issues = PowerRange(5.0, 2.0).validate("r")
    assert len(issues) == 1
    assert issues[0].field == "r"
    assert issues[0].code == "lower_above_upper"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_power_range_non_finite_rejected(bad: float) -> None:
    assert fields(PowerRange(bad, 1.0).validate()) == ["range"]
    assert fields(PowerRange(0.0, bad).validate()) == ["range"]


def test_power_constraints_properties() -> None:
    pc = PowerConstraints((PowerRange(-5.0, -1.0), PowerRange(1.4, 11.0)))
    assert pc.validate() == []
    assert pc.lower_kw == -5.0
    assert pc.upper_kw == 11.0
    assert pc.bidirectional
    assert pc.allows(-3.0) and pc.allows(6.0)
    assert not pc.allows(0.5)  # the gap between the ranges
    assert not PowerConstraints((PowerRange(0.0, 11.0),)).bidirectional


def test_power_constraints_reports_every_bad_range() -> None:
    pc = PowerConstraints(
        (PowerRange(3.0, 1.0), PowerRange(0.0, 11.0), PowerRange(math.nan, 2.0)),
        per_phase=((PowerRange(4.0, 3.0),), ()),
    )
    got = fields(pc.validate())
    assert got == ["ranges[0]", "ranges[2]", "per_phase[0][0]", "per_phase[1]"]


def test_power_constraints_empty_and_too_many_phases() -> None:
    assert fields(PowerConstraints(()).validate()) == ["ranges"]
    four = tuple((PowerRange(0.0, 4.0),) for _ in range(4))
    assert fields(PowerConstraints((PowerRange(0.0, 11.0),), per_phase=four).validate()) == [
        "per_phase"
    ]


def test_power_constraints_phases_must_reach_total_lower_bound() -> None:
    total = (PowerRange(6.0, 11.0),)
    weak = ((PowerRange(0.0, 1.0),), (PowerRange(0.0, 1.0),), (PowerRange(0.0, 1.0),))
    assert fields(PowerConstraints(total, per_phase=weak).validate()) == ["per_phase"]
    ok = tuple((PowerRange(0.0, 3.7),) for _ in range(3))
    assert PowerConstraints(total, per_phase=ok).validate() == []


# --- EnergyConstraint -------------------------------------------------------------------


def test_energy_constraint_valid() -> None:
    assert EnergyConstraint(at(0), at(4), 10.0, 40.0).validate() == []


def test_energy_constraint_rejects_naive_datetimes() -> None:
    naive = datetime(2025, 3, 1, 6, 0)  # noqa: DTZ001 - naive on purpose
    issues = EnergyConstraint(naive, naive + timedelta(hours=1), 0.0, 1.0).validate()
    assert fields(issues) == ["start", "end"]
    assert [i.code for i in issues] == ["not_utc", "not_utc"]


def test_energy_constraint_rejects_non_utc_offset() -> None:
    cet = datetime(2025, 3, 1, 7, 0, tzinfo=timezone(timedelta(hours=1)))
    assert fields(EnergyConstraint(cet, at(4), 0.0, 1.0).validate()) == ["start"]


def test_energy_constraint_reports_every_problem() -> None:
    issues = EnergyConstraint(at(2), at(1), 30.0, 10.0).validate()
    assert fields(issues) == ["end", "min_kwh"]
    assert [i.code for i in issues] == ["order", "min_above_max"]
    assert fields(EnergyConstraint(at(0), at(0), 0.0, math.nan).validate()) == ["end", "min_kwh"]


# --- PowerEnvelope ----------------------------------------------------------------------


def test_envelope_valid() -> None:
    env = envelope([0.0, -5.0, 0.0], [11.0, 11.0, 0.0])
    assert env.validate() == []
    assert env.steps == 3
    assert env.step_end(0) == at(1)
    assert env.step_end(2) == at(3)


def test_envelope_reports_each_bad_step() -> None:
    env = envelope([0.0, 8.0, 0.0, 9.0, 0.0], [11.0, 2.0, math.nan, 1.0, 11.0])
    issues = env.validate()
    assert len(issues) == 3
    assert {i.ids for i in issues} == {("step 1",), ("step 2",), ("step 3",)}
    by_step = {i.ids[0]: i for i in issues}
    assert by_step["step 2"].code == "not_finite"
    assert by_step["step 1"].code == by_step["step 3"].code == "lower_above_upper"


def test_envelope_rejects_naive_start_bad_step_and_shape_at_once() -> None:
    naive = datetime(2025, 3, 1)  # noqa: DTZ001 - naive on purpose
    env = PowerEnvelope.of(naive, 0.0, [0.0, 0.0], [1.0])
    assert fields(env.validate()) == ["start", "step_s", "upper_kw"]
    assert fields(PowerEnvelope.of(T0, math.nan, [0.0], [1.0]).validate()) == ["step_s"]


def test_energy_range_full_and_partial_last_step() -> None:
    env = envelope([0.0, 2.0, 4.0], [10.0, 20.0, 30.0])
    assert env.energy_range_kwh(at(3)) == pytest.approx((6.0, 60.0))
    # 2.5 h: full steps 0 and 1, half of step 2
    assert env.energy_range_kwh(at(2.5)) == pytest.approx((2.0 + 2.0, 30.0 + 15.0))
    # before the start nothing, after the end everything
    assert env.energy_range_kwh(at(-1)) == (0.0, 0.0)
    assert env.energy_range_kwh(at(10)) == pytest.approx((6.0, 60.0))


def test_energy_range_with_quarter_hour_steps() -> None:
    env = PowerEnvelope.of(T0, 900.0, [0.0] * 4, [8.0] * 4)
    # 50 minutes = 3 full quarter hours + 1/3 of the fourth
    lo, hi = env.energy_range_kwh(T0 + timedelta(minutes=50))
    assert lo == 0.0
    assert hi == pytest.approx(8.0 * 50 / 60)


# --- check_energy_feasible --------------------------------------------------------------


def test_energy_feasible_case_has_no_issue() -> None:
    env = envelope([0.0] * 4, [11.0] * 4)
    assert check_energy_feasible(env, EnergyConstraint(at(0), at(4), 30.0, 40.0)) == []


def test_energy_too_much_needed() -> None:
    env = envelope([0.0] * 4, [11.0] * 4)
    issues = check_energy_feasible(env, EnergyConstraint(at(0), at(3), 40.0, 50.0))
    assert fields(issues) == ["energy.min_kwh"]
    assert issues[0].code == "energy_unreachable"


def test_energy_forced_above_max() -> None:
    env = envelope([5.0] * 4, [11.0] * 4)
    issues = check_energy_feasible(env, EnergyConstraint(at(0), at(4), 0.0, 10.0))
    assert fields(issues) == ["energy.max_kwh"]
    assert issues[0].code == "energy_forced"


def test_energy_counted_from_constraint_start() -> None:
    """Energy is counted from ``energy.start``, not from the envelope's start."""
    env = envelope([5.0, 5.0, 0.0, 0.0], [11.0] * 4)
    # 2 h at ≤ 11 kW from hour 2 reach at most 22 kWh
    needs = check_energy_feasible(env, EnergyConstraint(at(2), at(4), 30.0, 40.0))
    assert fields(needs) == ["energy.min_kwh"]
    assert needs[0].code == "energy_unreachable"
    # the forced 10 kWh of hours 0-1 lie before the constraint and do not count
    assert check_energy_feasible(env, EnergyConstraint(at(2), at(4), 0.0, 1.0)) == []


def test_energy_window_outside_envelope() -> None:
    env = envelope([0.0] * 4, [11.0] * 4)
    issues = check_energy_feasible(env, EnergyConstraint(at(-1), at(5), 0.0, 100.0))
    assert fields(issues) == ["energy.start", "energy.end"]


def test_energy_feasible_returns_validation_issues_of_both() -> None:
    env = envelope([3.0], [1.0])
    bad = EnergyConstraint(at(1), at(0), 5.0, 1.0)
    assert fields(check_energy_feasible(env, bad)) == ["envelope", "end", "min_kwh"]


# --- check_plan -------------------------------------------------------------------------


def test_plan_inside_envelope_with_ordered_bands() -> None:
    env = envelope([0.0, 0.0, -5.0], [11.0, 11.0, 11.0])
    plan = plan_from(
        [5.0, 11.0, -2.0],
        band68=([4.0, 10.0, -3.0], [6.0, 11.0, -1.0]),
        band95=([2.0, 8.0, -5.0], [8.0, 11.0, 0.0]),
    )
    assert check_plan(plan, env) == []
    assert plan.steps == 3
    assert plan.energy_kwh() == pytest.approx(14.0)


def test_plan_outside_envelope_each_step_reported() -> None:
    env = envelope([0.0, 0.0, 0.0], [11.0, 11.0, 11.0])
    issues = check_plan(plan_from([12.0, 5.0, -1.0]), env)
    assert fields(issues) == ["power_kw", "power_kw"]
    assert [i.ids for i in issues] == [("step 0",), ("step 2",)]


@pytest.mark.parametrize(
    ("band68", "band95", "bad_step"),
    [
        (([6.0, 4.0], [6.0, 6.0]), ([0.0, 0.0], [11.0, 11.0]), 0),  # lo68 > power
        (([4.0, 4.0], [6.0, 4.0]), ([0.0, 0.0], [11.0, 11.0]), 1),  # hi68 < power
        (([4.0, 4.0], [6.0, 6.0]), ([4.5, 0.0], [11.0, 11.0]), 0),  # lo95 > lo68
        (([4.0, 4.0], [6.0, 6.0]), ([0.0, 0.0], [11.0, 5.5]), 1),  # hi95 < hi68
    ],
)
def test_plan_band_ordering(
    band68: tuple[list[float], list[float]],
    band95: tuple[list[float], list[float]],
    bad_step: int,
) -> None:
    env = envelope([0.0, 0.0], [11.0, 11.0])
    issues = check_plan(plan_from([5.0, 5.0], band68, band95), env)
    assert fields(issues) == ["bands"]
    assert issues[0].ids == (f"step {bad_step}",)


def test_plan_step_count_and_grid_mismatch() -> None:
    env = envelope([0.0, 0.0], [11.0, 11.0])
    assert fields(check_plan(plan_from([1.0]), env)) == ["power_kw"]
    assert fields(check_plan(plan_from([1.0, 1.0], start=at(1)), env)) == ["start"]
    assert fields(check_plan(plan_from([1.0, 1.0], step_s=900.0), env)) == ["start"]


def test_plan_nan_power_is_outside_the_envelope() -> None:
    env = envelope([0.0, 0.0], [11.0, 11.0])
    issues = check_plan(plan_from([math.nan, 1.0]), env)
    assert ("power_kw", ("step 0",)) in [(i.field, i.ids) for i in issues]


def test_plan_band_of_wrong_length_is_an_issue_not_an_exception() -> None:
    env = envelope([0.0, 0.0], [11.0, 11.0])
    plan = plan_from([1.0, 1.0], band68=([0.0], [2.0, 2.0]))
    issues = check_plan(plan, env)
    assert "band68_kw[0]" in fields(issues)
    assert "bands" not in fields(issues)


# --- properties -------------------------------------------------------------------------

_kw = st.floats(-50.0, 50.0, allow_nan=False)


@st.composite
def envelopes(draw: st.DrawFn) -> PowerEnvelope:
    n = draw(st.integers(1, 12))
    a = np.array(draw(st.lists(_kw, min_size=n, max_size=n)))
    b = np.array(draw(st.lists(_kw, min_size=n, max_size=n)))
    step_s = draw(st.sampled_from([60.0, 300.0, 900.0, 3600.0]))
    return PowerEnvelope(T0, step_s, np.minimum(a, b), np.maximum(a, b))


@SETTINGS
@given(env=envelopes(), frac=st.floats(-0.5, 1.5))
def test_property_energy_range_ordered(env: PowerEnvelope, frac: float) -> None:
    assert env.validate() == []
    until = T0 + timedelta(seconds=frac * env.steps * env.step_s)
    lo, hi = env.energy_range_kwh(until)
    assert lo <= hi + 1e-9


@SETTINGS
@given(env=envelopes())
def test_property_midpoint_plan_with_edge_bands_passes(env: PowerEnvelope) -> None:
    mid = (env.lower_kw + env.upper_kw) / 2
    q1 = (env.lower_kw + mid) / 2
    q3 = (mid + env.upper_kw) / 2
    plan = EnergyTransferPlan(
        env.start, env.step_s, mid, (q1, q3), (env.lower_kw.copy(), env.upper_kw.copy())
    )
    assert check_plan(plan, env) == []
    lo, hi = env.energy_range_kwh(env.step_end(env.steps - 1))
    assert lo - 1e-9 <= plan.energy_kwh() <= hi + 1e-9


@SETTINGS
@given(env=envelopes(), data=st.data())
def test_property_energy_constraint_at_envelope_range_is_feasible(
    env: PowerEnvelope, data: st.DataObject
) -> None:
    k = data.draw(st.integers(1, env.steps))
    end = env.step_end(k - 1)
    lo, hi = env.energy_range_kwh(end)
    assert check_energy_feasible(env, EnergyConstraint(T0, end, lo, hi)) == []
    # asking for 1 kWh more than the envelope allows is infeasible
    tight = EnergyConstraint(T0, end, hi + 1.0, hi + 2.0)
    assert "energy.min_kwh" in fields(check_energy_feasible(env, tight))


# --- SessionEnvelopes and check_plan_against_pebc ------------------------------------------


class _Request:
    """Just what the check reads of a request: the plugged part of every step."""

    def __init__(self, frac: list[list[float]]) -> None:
        self.frac = np.asarray(frac, dtype=np.float64)

    def plugged_fraction(self) -> np.ndarray:
        return self.frac


class _Plan:
    def __init__(self, power_kw: list[list[float]], start: datetime = T0) -> None:
        self.start = start
        self.step_s = HOUR
        self.power_kw = np.asarray(power_kw, dtype=np.float64)


def two_sessions() -> SessionEnvelopes:
    """A V2G session plugged for 3 h and a charging one for 2 h, on 4 one-hour steps."""
    return SessionEnvelopes(
        start=T0,
        step_s=HOUR,
        evse_ids=("E1", "E2"),
        lower_kw=np.array([[-10.0, -10.0, -10.0, 0.0], [0.0, 0.0, 0.0, 0.0]]),
        upper_kw=np.array([[10.0, 10.0, 10.0, 0.0], [7.0, 7.0, 0.0, 0.0]]),
        energy_min_kwh=np.array([-5.0, 0.0]),
        energy_max_kwh=np.array([20.0, 10.0]),
        departure_s=np.array([at(3).timestamp(), at(2).timestamp()]),
    )


FRAC = [[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]]


def test_a_plan_inside_every_envelope_has_no_issue() -> None:
    env = two_sessions()
    assert env.validate() == []
    plan = _Plan([[10.0, -10.0, 5.0, 0.0], [7.0, 3.0, 0.0, 0.0]])
    assert check_plan_against_pebc(plan, _Request(FRAC), env) == []
    assert check_energy_feasible(env.envelope(0), env.energy_constraint(0)) == []
    assert env.energy_constraint(1).end == at(2)


def test_plan_check_reports_each_session_once_with_code_and_first_step() -> None:
    env = two_sessions()
    plan = _Plan([[12.0, 0.0, 11.0, 1.0], [7.0, 3.5, 0.0, 0.0]])
    issues = check_plan_against_pebc(plan, _Request(FRAC), env)
    assert [(i.code, i.ids) for i in issues] == [
        ("power_outside_envelope", ("E1", "step 0")),
        ("energy_above_max", ("E1", "step 2")),
        ("energy_above_max", ("E2", "step 1")),
    ]


def test_plan_check_energy_below_min_and_power_while_away() -> None:
    env = two_sessions()
    plan = _Plan([[-6.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]])
    issues = check_plan_against_pebc(plan, _Request(FRAC), env)
    assert [(i.code, i.ids) for i in issues] == [
        ("power_outside_envelope", ("E2", "step 2")),
        ("energy_below_min", ("E1", "step 0")),
    ]


def test_plan_check_weighs_partial_steps_and_rejects_nan() -> None:
    env = two_sessions()
    # 14 kW over half of step 0 is 7 kWh: inside 10 kW x 1 h, and inside the energy bound
    half = [[0.5, 1.0, 1.0, 0.0], [0.5, 1.0, 0.0, 0.0]]
    assert check_plan_against_pebc(_Plan([[14.0, 0, 0, 0], [0, 0, 0, 0]]), _Request(half), env)
    ok = _Plan([[10.0, 0, 0, 0], [7.0, 0, 0, 0]])
    assert check_plan_against_pebc(ok, _Request(half), env) == []
    bad = _Plan([[math.nan, 0, 0, 0], [0, 0, 0, 0]])
    assert [i.code for i in check_plan_against_pebc(bad, _Request(FRAC), env)] == [
        "power_outside_envelope"
    ]


def test_plan_check_refuses_other_grids_and_shapes() -> None:
    env = two_sessions()
    wrong_shape = _Plan([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert [i.code for i in check_plan_against_pebc(wrong_shape, _Request(FRAC), env)] == ["shape"]
    later = _Plan([[0.0] * 4, [0.0] * 4], start=at(1))
    assert [i.code for i in check_plan_against_pebc(later, _Request(FRAC), env)] == [
        "grid_mismatch"
    ]


def test_session_envelopes_validate_reports_rows() -> None:
    env = two_sessions()
    crossed = SessionEnvelopes(
        start=T0,
        step_s=HOUR,
        evse_ids=env.evse_ids,
        lower_kw=np.array([[0.0, 5.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]),
        upper_kw=np.array([[1.0, 1.0, 1.0, 0.0], [math.inf, 0.0, 0.0, 0.0]]),
        energy_min_kwh=np.array([3.0, 0.0]),
        energy_max_kwh=np.array([2.0, 0.0]),
        departure_s=env.departure_s,
    )
    assert [(i.field, i.code, i.ids) for i in crossed.validate()] == [
        ("envelope", "not_finite", ("E2",)),
        ("envelope", "lower_above_upper", ("E1",)),
        ("energy", "min_above_max", ("E1",)),
    ]


def test_plans_of_the_planner_pass_the_fleets_pebc_check() -> None:
    """End to end: fleet → envelopes; the same fleet → request → plan; the plan passes."""
    from aggregator.fleet import FleetState
    from aggregator.limits import LimitBook
    from aggregator.messages import MeterValue, SessionStarted
    from aggregator.planning.optimizer import Planner, proportional_plan
    from aggregator.planning.request import PlanRequest, session_windows
    from aggregator.topology import Feeder, Site, Topology

    topo = Topology((Feeder("F1", 40.0),), (Site("S1", "F1", 30.0), Site("S2", "F1", 30.0)))
    fleet = FleetState(topo)
    for k, (site, hours, need, lo) in enumerate(
        [("S1", 1.2, 20.0, -11.0), ("S1", 3.0, 40.0, 0.0), ("S2", 0.4, 1.0, 0.0)]
    ):
        fleet.apply(
            SessionStarted(
                ts=T0,
                feeder_id="F1",
                site_id=site,
                evse_id=f"E{k}",
                csms_id="C",
                session_id=f"X{k}",
                departure=at(hours),
                energy_requested_kwh=need,
                max_power_kw=11.0,
                min_power_kw=lo,
            )
        )
    fleet.apply(
        MeterValue(
            ts=at(0.1), feeder_id="F1", evse_id="E0", session_id="X0", energy_kwh=3, power_kw=11
        )
    )
    now, step, steps = at(0.2), 900.0, 16
    slots = fleet.active_slots()
    first, last, ff, lf = session_windows(
        T0.timestamp(), step, steps, np.full(slots.size, now.timestamp()), fleet.departure_s[slots]
    )
    energy = fleet.energy_kwh[slots]
    req = PlanRequest(
        start=T0,
        step_s=step,
        steps=steps,
        session_site=fleet.site[slots].copy(),
        first_step=first,
        last_step=last,
        first_frac=ff,
        last_frac=lf,
        max_power_kw=fleet.max_power_kw[slots].copy(),
        min_power_kw=fleet.min_power_kw[slots].copy(),
        energy_needed_kwh=np.maximum(fleet.energy_requested_kwh[slots] - energy, 0.0),
        discharge_budget_kwh=np.maximum(energy, 0.0),
        site_feeder=topo.site_feeder,
        caps=LimitBook(topo).caps_for_steps(T0, step, steps),
        reserve_kw=np.zeros(steps),
    )
    env = fleet.session_envelopes(slots, start=T0, step_s=step, steps=steps, now=now)
    assert env.validate() == []
    for plan in (Planner("HIGHS").plan(req), proportional_plan(req, "test")):
        assert plan.power_kw.shape == (3, steps)
        assert check_plan_against_pebc(plan, req, env) == []
    # a plan that overshoots one session's request, or feeds another after it left, is caught
    bad = Planner("HIGHS").plan(req)
    bad.power_kw[2, :2] = 11.0  # 2.2 kWh for a 1 kWh request
    bad.power_kw[1, 14] = 0.0
    bad.power_kw[0, 6] = 5.0  # E0 left at 1.2 h (step 4)
    assert [(i.code, i.ids) for i in check_plan_against_pebc(bad, req, env)] == [
        ("power_outside_envelope", ("E0", "step 6")),
        ("energy_above_max", ("E2", "step 1")),
    ]


def test_the_services_own_request_and_plans_pass_the_pebc_check() -> None:
    """The contract the service relies on: its request builder and the fleet's envelopes
    agree, so an optimal plan (with a DSO limit and a reserve) and the fallback pass."""
    from aggregator.fleet import FleetState
    from aggregator.limits import DsoLimit, LimitBook, TargetType
    from aggregator.messages import MeterValue, SessionStarted
    from aggregator.planning.optimizer import Planner, proportional_plan
    from aggregator.service.config import ServiceConfig
    from aggregator.service.request import plan_request
    from aggregator.topology import Feeder, Site, Topology

    topo = Topology((Feeder("F1", 60.0),), (Site("S1", "F1", 40.0), Site("S2", "F1", 30.0)))
    fleet = FleetState(topo)
    rng = np.random.default_rng(7)
    for k in range(12):
        fleet.apply(
            SessionStarted(
                ts=T0,
                feeder_id="F1",
                site_id=f"S{1 + k % 2}",
                evse_id=f"E{k}",
                csms_id="C",
                session_id=f"X{k}",
                departure=at(float(rng.uniform(0.3, 7.0))),
                energy_requested_kwh=float(rng.uniform(0.0, 40.0)),
                max_power_kw=11.0,
                min_power_kw=-11.0 if k % 3 == 0 else 0.0,
                energy_kwh=float(rng.uniform(0.0, 5.0)),
            )
        )
    fleet.apply(
        MeterValue(
            ts=at(0.1), feeder_id="F1", evse_id="E0", session_id="X0", energy_kwh=6, power_kw=-3
        )
    )
    limits = LimitBook(topo)
    limits.add(DsoLimit("cut", TargetType.FEEDER, "F1", at(1), at(3), 20.0))
    config = ServiceConfig(horizon_s=6 * HOUR, reserve_kw=5.0)
    now = at(0.37)
    req, slots = plan_request(now, fleet=fleet, limits=limits, config=config, prices=None)
    env = fleet.session_envelopes(
        slots, start=req.start, step_s=req.step_s, steps=req.steps, now=now
    )
    assert env.validate() == []
    for plan in (Planner("HIGHS").plan(req), proportional_plan(req, "test")):
        assert plan.fallback is None or plan.fallback == "test"
        assert check_plan_against_pebc(plan, req, env) == []


def test_the_public_surface_is_pinned() -> None:
    import aggregator.pebc as package

    assert sorted(package.__all__) == sorted(
        [
            "EnergyConstraint",
            "EnergyTransferPlan",
            "PlanLike",
            "PowerConstraints",
            "PowerEnvelope",
            "PowerRange",
            "RequestLike",
            "SessionEnvelopes",
            "check_energy_feasible",
            "check_plan",
            "check_plan_against_pebc",
            "is_utc",
        ]
    )
    assert all(hasattr(package, name) for name in package.__all__)
