"""S2 PEBC wire models ↔ gridflex's PEBC domain types: the one place S2 units are converted.

S2 speaks watts and milliseconds; the core speaks kW, kWh, seconds and UTC datetimes.
Every conversion between them happens here and nowhere else (:data:`W_PER_KW`,
:data:`MS_PER_S`):

* :func:`limits_from_wire` — a resource manager's ``PEBC.PowerConstraints`` → :class:`S2Limits`
  (the ranges the CEM may choose each envelope bound from, per commodity quantity) and, from
  it, the session's :class:`~aggregator.pebc.PowerConstraints`;
* :func:`energy_from_wire` — ``PEBC.EnergyConstraint`` → :class:`~aggregator.pebc.EnergyConstraint`
  (average power × window → kWh);
* :func:`measured_power_kw` — ``PowerMeasurement`` → net electric power in kW;
* :func:`instruction_to_wire` — envelope segments (kW, s) → a ``PEBC.Instruction``, every
  bound clamped into the ranges the resource manager allowed.

Invariants: a built instruction has ``lower ≤ upper`` in every element, each bound inside
an allowed range of its limit type (normal ranges only unless ``abnormal=True``), durations
in whole milliseconds ≥ 1. An upper bound (a cap) is moved *down* to the highest allowed
value below it; only when no allowed upper value is that low is it raised to the lowest one
(code ``cap_unreachable``: the resource manager cannot be capped that far in normal
conditions). Every clamp is reported as an :class:`~aggregator.errors.Issue` (codes
``clamped_upper``, ``cap_unreachable``, ``clamped_lower``), never silently.
``ELECTRIC.POWER.3_PHASE_SYMMETRIC`` is read as the total power of the three phases; with
per-phase quantities (L1/L2/L3) the total is the sum of the phases and an instruction
shares the total equally between them.
s2-python's ``PEBCAllowedLimitRange`` defaults ``abnormal_condition_only`` to a truthy
placeholder when it is not passed, so every range built here passes it explicitly.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from s2python.common import CommodityQuantity, NumberRange, PowerMeasurement
from s2python.pebc import (
    PEBCAllowedLimitRange,
    PEBCEnergyConstraint,
    PEBCInstruction,
    PEBCPowerConstraints,
    PEBCPowerEnvelope,
    PEBCPowerEnvelopeElement,
    PEBCPowerEnvelopeLimitType,
)

from aggregator.errors import Issue
from aggregator.pebc import EnergyConstraint, PowerConstraints, PowerRange

__all__ = [
    "ELECTRIC",
    "MS_PER_S",
    "W_PER_KW",
    "EnvelopeSegment",
    "S2Limits",
    "energy_from_wire",
    "instruction_to_wire",
    "limits_from_wire",
    "limits_to_wire",
    "measured_power_kw",
]

W_PER_KW = 1000.0
MS_PER_S = 1000.0
ELECTRIC: tuple[CommodityQuantity, ...] = (
    CommodityQuantity.ELECTRIC_POWER_L1,
    CommodityQuantity.ELECTRIC_POWER_L2,
    CommodityQuantity.ELECTRIC_POWER_L3,
    CommodityQuantity.ELECTRIC_POWER_3_PHASE_SYMMETRIC,
)
_UPPER = PEBCPowerEnvelopeLimitType.UPPER_LIMIT
_LOWER = PEBCPowerEnvelopeLimitType.LOWER_LIMIT
_TOL_KW = 1e-9


@dataclass(frozen=True, slots=True)
class EnvelopeSegment:
    """``lower_kw ≤ p ≤ upper_kw`` (total power, all phases) for ``duration_s`` seconds."""

    duration_s: float
    lower_kw: float
    upper_kw: float


@dataclass(frozen=True, slots=True)
class _Ranges:
    """Where one commodity quantity's envelope bounds may lie (kW)."""

    upper: tuple[PowerRange, ...]
    lower: tuple[PowerRange, ...]
    abnormal_upper: tuple[PowerRange, ...]
    abnormal_lower: tuple[PowerRange, ...]


@dataclass(frozen=True, slots=True)
class S2Limits:
    """A resource manager's PEBC.PowerConstraints in kW, by electric commodity quantity."""

    constraints_id: str
    valid_from: datetime
    valid_until: datetime | None
    consequence: str
    by_quantity: tuple[tuple[CommodityQuantity, _Ranges], ...]

    def power_constraints(self) -> PowerConstraints:
        """The session's total power constraints (and per phase when given per phase)."""
        per = [self._span(r) for _, r in self.by_quantity]
        total = PowerRange(sum(p.lower_kw for p in per), sum(p.upper_kw for p in per))
        phases = tuple((p,) for p in per) if len(per) > 1 else None
        return PowerConstraints(ranges=(total,), per_phase=phases)

    def phases(self) -> tuple[int, str | None]:
        """Phases in use and, for one phase, which: L1/L2/L3 alone → 1; otherwise 3."""
        qs = [q for q, _ in self.by_quantity]
        if len(qs) == 1 and qs[0] is not CommodityQuantity.ELECTRIC_POWER_3_PHASE_SYMMETRIC:
            return 1, qs[0].value.rsplit(".", 1)[1]
        return 3, None

    @staticmethod
    def _span(r: _Ranges) -> PowerRange:
        low = min(x.lower_kw for x in r.lower) if r.lower else 0.0
        high = max(x.upper_kw for x in r.upper) if r.upper else 0.0
        return PowerRange(min(low, high), high)


def _clamp(value: float, ranges: Sequence[PowerRange]) -> float:
    """The point of the union of ``ranges`` nearest to ``value`` (ties: the lower)."""
    best = value
    dist = math.inf
    for r in ranges:
        point = min(max(value, r.lower_kw), r.upper_kw)
        d = abs(point - value)
        if d < dist:
            best, dist = point, d
    return best


def _highest_at_most(value: float, ranges: Sequence[PowerRange]) -> float | None:
    """The largest point of the union of ``ranges`` that is ≤ ``value``, if any."""
    points = [min(r.upper_kw, value) for r in ranges if r.lower_kw <= value + _TOL_KW]
    return max(points) if points else None


def limits_from_wire(msg: PEBCPowerConstraints) -> tuple[S2Limits | None, list[Issue]]:
    """The constraints in kW, or ``None`` with the issues when they name no electric range."""
    issues: list[Issue] = []
    cid = str(msg.id)
    grouped: dict[CommodityQuantity, dict[str, list[PowerRange]]] = {}
    for i, lr in enumerate(msg.allowed_limit_ranges):
        q = CommodityQuantity(lr.commodity_quantity)
        if q not in ELECTRIC:
            issues.append(
                Issue(
                    field=f"allowed_limit_ranges[{i}]",
                    code="unsupported_commodity",
                    ids=(cid,),
                    message=f"{q.value} is not electric power; ignored",
                )
            )
            continue
        rng = PowerRange(
            lr.range_boundary.start_of_range / W_PER_KW, lr.range_boundary.end_of_range / W_PER_KW
        )
        kind = ("abnormal_" if lr.abnormal_condition_only is True else "") + (
            "upper" if lr.limit_type == _UPPER else "lower"
        )
        grouped.setdefault(q, {}).setdefault(kind, []).append(rng)
    if CommodityQuantity.ELECTRIC_POWER_3_PHASE_SYMMETRIC in grouped and len(grouped) > 1:
        issues.append(
            Issue(
                field="allowed_limit_ranges",
                code="mixed_phase_quantities",
                ids=(cid,),
                message="3-phase symmetric and per-phase ranges together; per-phase ignored",
            )
        )
        grouped = {q: g for q, g in grouped.items() if q is ELECTRIC[3]}
    by_q: list[tuple[CommodityQuantity, _Ranges]] = []
    for q in ELECTRIC:
        g = grouped.get(q)
        if g is None:
            continue
        r = _Ranges(
            tuple(g.get("upper", ())),
            tuple(g.get("lower", ())),
            tuple(g.get("abnormal_upper", ())),
            tuple(g.get("abnormal_lower", ())),
        )
        if not r.upper or not r.lower:
            issues.append(
                Issue(
                    field="allowed_limit_ranges",
                    code="missing_normal_range",
                    ids=(cid, q.value),
                    message="needs an upper and a lower range usable in normal conditions",
                )
            )
            continue
        by_q.append((q, r))
    if not by_q:
        issues.append(
            Issue(
                field="allowed_limit_ranges",
                code="no_electric_range",
                ids=(cid,),
                message="no usable electric power range",
            )
        )
        return None, issues
    consequence = getattr(msg.consequence_type, "value", str(msg.consequence_type))
    limits = S2Limits(cid, msg.valid_from, msg.valid_until, consequence, tuple(by_q))
    issues.extend(limits.power_constraints().validate())
    return limits, issues


def limits_to_wire(
    constraints_id: uuid.UUID,
    valid_from: datetime,
    upper_kw: PowerRange,
    lower_kw: PowerRange,
    quantity: CommodityQuantity = CommodityQuantity.ELECTRIC_POWER_3_PHASE_SYMMETRIC,
) -> PEBCPowerConstraints:
    """A resource manager's constraints (used by simulated RMs and tests)."""
    ranges = [
        PEBCAllowedLimitRange(
            commodity_quantity=quantity,
            limit_type=kind,
            range_boundary=NumberRange(
                start_of_range=r.lower_kw * W_PER_KW, end_of_range=r.upper_kw * W_PER_KW
            ),
            abnormal_condition_only=False,
        )
        for kind, r in ((_UPPER, upper_kw), (_LOWER, lower_kw))
    ]
    return PEBCPowerConstraints(
        message_id=uuid.uuid4(),
        id=constraints_id,
        valid_from=valid_from,
        valid_until=None,
        consequence_type="VANISH",
        allowed_limit_ranges=ranges,
    )


def energy_from_wire(msg: PEBCEnergyConstraint) -> tuple[EnergyConstraint, list[Issue]]:
    """Average power bounds over ``[valid_from, valid_until]`` as cumulative kWh bounds."""
    hours = (msg.valid_until - msg.valid_from).total_seconds() / 3600.0
    energy = EnergyConstraint(
        start=msg.valid_from,
        end=msg.valid_until,
        min_kwh=msg.lower_average_power / W_PER_KW * hours,
        max_kwh=msg.upper_average_power / W_PER_KW * hours,
    )
    issues = [
        Issue(field=i.field, code=i.code, ids=(str(msg.id), *i.ids), message=i.message)
        for i in energy.validate()
    ]
    q = CommodityQuantity(msg.commodity_quantity)
    if q not in ELECTRIC:
        issues.append(
            Issue(
                field="commodity_quantity",
                code="unsupported_commodity",
                ids=(str(msg.id),),
                message=f"{q.value} is not electric power",
            )
        )
    return energy, issues


def measured_power_kw(msg: PowerMeasurement) -> float | None:
    """Net electric import in kW (sum of the phases), or ``None`` if no electric value."""
    values = [v for v in msg.values if CommodityQuantity(v.commodity_quantity) in ELECTRIC]
    if not values:
        return None
    return sum(float(v.value) for v in values) / W_PER_KW


def instruction_to_wire(
    limits: S2Limits,
    segments: Sequence[EnvelopeSegment],
    execution_time: datetime,
    *,
    abnormal: bool = False,
) -> tuple[PEBCInstruction, list[Issue]]:
    """A PEBC.Instruction following ``segments``, each bound clamped into the allowed ranges.

    Raises ``ValueError`` for no segment, more than 288 or a non-positive duration (a
    programming error of the caller, not bad input from a peer).
    """
    if not 1 <= len(segments) <= 288:
        raise ValueError(f"an envelope has 1 to 288 elements, got {len(segments)}")
    issues: list[Issue] = []
    n = len(limits.by_quantity)
    envelopes: list[PEBCPowerEnvelope] = []
    for q, r in limits.by_quantity:
        uppers = r.upper + (r.abnormal_upper if abnormal else ())
        lowers = r.lower + (r.abnormal_lower if abnormal else ())
        elements: list[PEBCPowerEnvelopeElement] = []
        for k, seg in enumerate(segments):
            if not seg.duration_s > 0:
                raise ValueError(f"segment {k}: duration_s must be > 0, got {seg.duration_s}")
            want_hi, want_lo = seg.upper_kw / n, min(seg.lower_kw, seg.upper_kw) / n
            top = _highest_at_most(want_hi, uppers)  # a cap is never raised when it can hold
            hi = min(x.lower_kw for x in uppers) if top is None else top
            lo = _clamp(want_lo, lowers)
            if lo > hi:
                below = _highest_at_most(hi, lowers)
                if below is None:  # every allowed lower bound is above: raise the upper one
                    lo = min(x.lower_kw for x in lowers)
                    hi = _clamp(lo, uppers)
                    lo = min(lo, hi)
                else:
                    lo = below
            up_code = "cap_unreachable" if hi > want_hi else "clamped_upper"
            for code, want, got in ((up_code, want_hi, hi), ("clamped_lower", want_lo, lo)):
                if abs(want - got) > 1e-6:
                    issues.append(
                        Issue(
                            field=f"segments[{k}]",
                            code=code,
                            ids=(limits.constraints_id, q.value),
                            message=f"{want:.3f} kW → {got:.3f} kW (allowed ranges)",
                        )
                    )
            elements.append(
                PEBCPowerEnvelopeElement(
                    duration=max(1, round(seg.duration_s * MS_PER_S)),
                    upper_limit=hi * W_PER_KW,
                    lower_limit=lo * W_PER_KW,
                )
            )
        envelopes.append(
            PEBCPowerEnvelope(
                id=str(uuid.uuid4()), commodity_quantity=q, power_envelope_elements=elements
            )
        )
    msg = PEBCInstruction(
        message_id=uuid.uuid4(),
        id=uuid.uuid4(),
        execution_time=execution_time,
        abnormal_condition=abnormal,
        power_constraints_id=uuid.UUID(limits.constraints_id),
        power_envelopes=envelopes,
    )
    return msg, issues
