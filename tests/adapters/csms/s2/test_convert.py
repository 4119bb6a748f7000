"""S2 PEBC wire ↔ domain: units (W/ms ↔ kW/s), clamping into allowed ranges, issues."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from s2python.common import CommodityQuantity, NumberRange, PowerMeasurement, PowerValue
from s2python.pebc import (
    PEBCAllowedLimitRange,
    PEBCEnergyConstraint,
    PEBCPowerConstraints,
    PEBCPowerEnvelopeLimitType,
)

from adapters.csms.s2.convert import (
    EnvelopeSegment,
    energy_from_wire,
    instruction_to_wire,
    limits_from_wire,
    limits_to_wire,
    measured_power_kw,
)
from aggregator.pebc import PowerRange

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
SYM = CommodityQuantity.ELECTRIC_POWER_3_PHASE_SYMMETRIC
UP, LO = PEBCPowerEnvelopeLimitType.UPPER_LIMIT, PEBCPowerEnvelopeLimitType.LOWER_LIMIT


def _range(
    q: CommodityQuantity,
    kind: PEBCPowerEnvelopeLimitType,
    lo_w: float,
    hi_w: float,
    abnormal: bool = False,
) -> PEBCAllowedLimitRange:
    return PEBCAllowedLimitRange(
        commodity_quantity=q,
        limit_type=kind,
        range_boundary=NumberRange(start_of_range=lo_w, end_of_range=hi_w),
        abnormal_condition_only=abnormal,
    )


def _constraints(*ranges: PEBCAllowedLimitRange) -> PEBCPowerConstraints:
    return PEBCPowerConstraints(
        message_id=uuid.uuid4(),
        id=uuid.uuid4(),
        valid_from=T0,
        valid_until=None,
        consequence_type="DEFER",
        allowed_limit_ranges=list(ranges),
    )


def test_limits_in_kw_and_session_power_constraints() -> None:
    msg = limits_to_wire(uuid.uuid4(), T0, PowerRange(1.4, 11.0), PowerRange(-7.0, 0.0))
    limits, issues = limits_from_wire(msg)
    assert issues == [] and limits is not None
    pc = limits.power_constraints()
    assert (pc.lower_kw, pc.upper_kw) == (-7.0, 11.0)
    assert pc.bidirectional and pc.per_phase is None


def test_per_phase_ranges_sum_to_the_total() -> None:
    qs = (
        CommodityQuantity.ELECTRIC_POWER_L1,
        CommodityQuantity.ELECTRIC_POWER_L2,
        CommodityQuantity.ELECTRIC_POWER_L3,
    )
    msg = _constraints(*[_range(q, k, 0.0, 3680.0) for q in qs for k in (UP, LO)])
    limits, issues = limits_from_wire(msg)
    assert issues == [] and limits is not None
    pc = limits.power_constraints()
    assert pc.upper_kw == pytest.approx(11.04)
    assert pc.per_phase is not None and len(pc.per_phase) == 3
    ins, _ = instruction_to_wire(limits, [EnvelopeSegment(60.0, 0.0, 9.0)], T0)
    assert [e.commodity_quantity for e in ins.power_envelopes] == list(qs)
    assert all(
        e.power_envelope_elements[0].upper_limit == pytest.approx(3000.0)
        for e in ins.power_envelopes
    )


def test_non_electric_and_incomplete_ranges_are_reported() -> None:
    heat = _range(CommodityQuantity.HEAT_THERMAL_POWER, UP, 0.0, 1.0)
    heat_lo = _range(CommodityQuantity.HEAT_THERMAL_POWER, LO, 0.0, 1.0)
    only_upper_normal = _range(SYM, UP, 0.0, 11000.0)
    abnormal_lower = _range(SYM, LO, 0.0, 0.0, abnormal=True)
    limits, issues = limits_from_wire(
        _constraints(heat, heat_lo, only_upper_normal, abnormal_lower)
    )
    assert limits is None
    codes = [i.code for i in issues]
    assert codes.count("unsupported_commodity") == 2
    assert "missing_normal_range" in codes and "no_electric_range" in codes


def test_wire_ranges_carry_abnormal_condition_only_explicitly() -> None:
    msg = limits_to_wire(uuid.uuid4(), T0, PowerRange(0.0, 11.0), PowerRange(0.0, 0.0))
    doc = json.loads(msg.to_json())
    assert [r["abnormal_condition_only"] for r in doc["allowed_limit_ranges"]] == [False, False]


def test_energy_constraint_average_power_to_kwh() -> None:
    msg = PEBCEnergyConstraint(
        message_id=uuid.uuid4(),
        id=uuid.uuid4(),
        valid_from=T0,
        valid_until=T0 + timedelta(hours=4),
        upper_average_power=10_000.0,
        lower_average_power=5_000.0,
        commodity_quantity=SYM,
    )
    energy, issues = energy_from_wire(msg)
    assert issues == []
    assert (energy.min_kwh, energy.max_kwh) == (20.0, 40.0)
    assert (energy.start, energy.end) == (T0, T0 + timedelta(hours=4))


def test_measurement_watts_to_kw_sums_phases_and_ignores_heat() -> None:
    msg = PowerMeasurement(
        message_id=uuid.uuid4(),
        measurement_timestamp=T0,
        values=[
            PowerValue(commodity_quantity=CommodityQuantity.ELECTRIC_POWER_L1, value=2300.0),
            PowerValue(commodity_quantity=CommodityQuantity.ELECTRIC_POWER_L2, value=2300.0),
            PowerValue(commodity_quantity=CommodityQuantity.HEAT_THERMAL_POWER, value=9e9),
        ],
    )
    assert measured_power_kw(msg) == pytest.approx(4.6)
    heat_only = PowerMeasurement(
        message_id=uuid.uuid4(),
        measurement_timestamp=T0,
        values=[PowerValue(commodity_quantity=CommodityQuantity.HEAT_THERMAL_POWER, value=1.0)],
    )
    assert measured_power_kw(heat_only) is None


def test_instruction_units_and_clamps() -> None:
    limits, _ = limits_from_wire(
        limits_to_wire(uuid.uuid4(), T0, PowerRange(1.4, 11.0), PowerRange(0.0, 0.0))
    )
    assert limits is not None
    segs = [
        EnvelopeSegment(59.9996, 0.0, 7.5),
        EnvelopeSegment(7200.0, 0.0, 20.0),
        EnvelopeSegment(1.0, 0.0, 0.5),
    ]
    ins, issues = instruction_to_wire(limits, segs, T0)
    el = ins.power_envelopes[0].power_envelope_elements
    assert [e.duration.root for e in el] == [60000, 7_200_000, 1000]
    assert [e.upper_limit for e in el] == [7500.0, 11000.0, 1400.0]
    assert [(i.field, i.code) for i in issues] == [
        ("segments[1]", "clamped_upper"),
        ("segments[2]", "cap_unreachable"),
    ]
    assert ins.abnormal_condition is False
    assert str(ins.power_constraints_id) == limits.constraints_id


def test_abnormal_ranges_only_when_abnormal() -> None:
    msg = _constraints(
        _range(SYM, UP, 1400.0, 11000.0),
        _range(SYM, UP, 0.0, 0.0, abnormal=True),
        _range(SYM, LO, 0.0, 0.0),
    )
    limits, _ = limits_from_wire(msg)
    assert limits is not None
    normal, issues = instruction_to_wire(limits, [EnvelopeSegment(10.0, 0.0, 0.0)], T0)
    assert normal.power_envelopes[0].power_envelope_elements[0].upper_limit == 1400.0
    assert [i.code for i in issues] == ["cap_unreachable"]
    abnormal, issues = instruction_to_wire(
        limits, [EnvelopeSegment(10.0, 0.0, 0.0)], T0, abnormal=True
    )
    assert abnormal.power_envelopes[0].power_envelope_elements[0].upper_limit == 0.0
    assert abnormal.abnormal_condition is True and issues == []


def test_programming_errors_raise() -> None:
    limits, _ = limits_from_wire(
        limits_to_wire(uuid.uuid4(), T0, PowerRange(0.0, 11.0), PowerRange(0.0, 0.0))
    )
    assert limits is not None
    with pytest.raises(ValueError, match="1 to 288"):
        instruction_to_wire(limits, [], T0)
    with pytest.raises(ValueError, match="duration_s"):
        instruction_to_wire(limits, [EnvelopeSegment(0.0, 0.0, 1.0)], T0)


_kw = st.floats(-50.0, 50.0, allow_nan=False)


@st.composite
def _ranges(draw: st.DrawFn) -> list[PowerRange]:
    out = []
    for _ in range(draw(st.integers(1, 3))):
        a, b = sorted((draw(_kw), draw(_kw)))
        out.append(PowerRange(a, b))
    return out


@settings(max_examples=150, deadline=None)
@given(
    uppers=_ranges(),
    lowers=_ranges(),
    segs=st.lists(st.tuples(st.floats(0.001, 1e5), _kw, _kw), min_size=1, max_size=5),
)
def test_every_instruction_is_ordered_and_inside_the_allowed_ranges(
    uppers: list[PowerRange], lowers: list[PowerRange], segs: list[tuple[float, float, float]]
) -> None:
    ranges = [_range(SYM, UP, r.lower_kw * 1000, r.upper_kw * 1000) for r in uppers]
    ranges += [_range(SYM, LO, r.lower_kw * 1000, r.upper_kw * 1000) for r in lowers]
    limits, _ = limits_from_wire(_constraints(*ranges))
    assert limits is not None
    segments = [EnvelopeSegment(d, lo, hi) for d, lo, hi in segs]
    ins, issues = instruction_to_wire(limits, segments, T0)
    raised = {i.field for i in issues if i.code == "cap_unreachable"}
    for k, (seg, el) in enumerate(
        zip(segments, ins.power_envelopes[0].power_envelope_elements, strict=True)
    ):
        hi_kw, lo_kw = el.upper_limit / 1000, el.lower_limit / 1000
        assert lo_kw <= hi_kw + 1e-9
        assert any(r.contains(hi_kw) for r in uppers)
        # a cap is only ever raised when the ranges allow nothing that low, and never silently
        if hi_kw > seg.upper_kw + 1e-6:  # the reporting tolerance (1 W)
            assert f"segments[{k}]" in raised
            # …because no allowed pair lower ≤ upper ≤ cap exists
            cap = seg.upper_kw
            tops = [min(r.upper_kw, cap) for r in uppers if r.lower_kw <= cap + 1e-6]
            assert not tops or min(r.lower_kw for r in lowers) > max(tops) - 1e-6


def test_phases_follow_the_commodity_quantities() -> None:
    sym, _ = limits_from_wire(
        limits_to_wire(uuid.uuid4(), T0, PowerRange(0.0, 11.0), PowerRange(0.0, 0.0))
    )
    l2 = CommodityQuantity.ELECTRIC_POWER_L2
    single, _ = limits_from_wire(
        _constraints(_range(l2, UP, 0.0, 7400.0), _range(l2, LO, 0.0, 0.0))
    )
    qs = (CommodityQuantity.ELECTRIC_POWER_L1, l2, CommodityQuantity.ELECTRIC_POWER_L3)
    three, _ = limits_from_wire(
        _constraints(*[_range(q, k, 0.0, 3680.0) for q in qs for k in (UP, LO)])
    )
    assert sym is not None and single is not None and three is not None
    assert (sym.phases(), single.phases(), three.phases()) == ((3, None), (1, "L2"), (3, None))
