"""The CEM's S2 session state machine, message by message (no socket)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from s2python.common import (
    Commodity,
    CommodityQuantity,
    ControlType,
    EnergyManagementRole,
    Handshake,
    HandshakeResponse,
    InstructionStatus,
    InstructionStatusUpdate,
    PowerMeasurement,
    PowerValue,
    ReceptionStatus,
    ReceptionStatusValues,
    ResourceManagerDetails,
    Role,
    RoleType,
    SelectControlType,
    SessionRequest,
    SessionRequestType,
)
from s2python.pebc import PEBCEnergyConstraint
from s2python.version import S2_VERSION

from adapters.csms.s2 import EnvelopeSegment, Reaction, RmSession, S2Resource
from adapters.csms.s2.convert import limits_to_wire
from aggregator.interfaces import ManualClock
from aggregator.messages import MeterValue, SessionEnded, SessionStarted
from aggregator.pebc import PowerRange

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
RID = uuid.uuid4()
SYM = CommodityQuantity.ELECTRIC_POWER_3_PHASE_SYMMETRIC
RES = S2Resource(str(RID), "evse-7", "site-1", "f1")


def _session() -> tuple[RmSession, ManualClock]:
    clock = ManualClock(T0)
    return RmSession({RES.resource_id: RES}, "csms-a", clock), clock


def _details(
    rid: uuid.UUID = RID, types: list[ControlType] | None = None
) -> ResourceManagerDetails:
    return ResourceManagerDetails(
        message_id=uuid.uuid4(),
        resource_id=rid,
        name="ev",
        roles=[Role(role=RoleType.ENERGY_STORAGE, commodity=Commodity.ELECTRICITY)],
        instruction_processing_delay=100,
        available_control_types=types or [ControlType.POWER_ENVELOPE_BASED_CONTROL],
        provides_forecast=False,
        provides_power_measurement_types=[SYM],
    )


def _energy(min_kwh: float, hours: float = 4.0, at: datetime = T0) -> PEBCEnergyConstraint:
    return PEBCEnergyConstraint(
        message_id=uuid.uuid4(),
        id=uuid.uuid4(),
        valid_from=at,
        valid_until=at + timedelta(hours=hours),
        upper_average_power=min_kwh * 2 / hours * 1000,
        lower_average_power=min_kwh / hours * 1000,
        commodity_quantity=SYM,
    )


def _statuses(r: Reaction) -> list[tuple[uuid.UUID, ReceptionStatusValues]]:
    return [(m.subject_message_id, m.status) for m in r.out if isinstance(m, ReceptionStatus)]


def _ready() -> tuple[RmSession, ManualClock, list[Reaction]]:
    s, clock = _session()
    rs = [
        s.on_message(
            Handshake(
                message_id=uuid.uuid4(),
                role=EnergyManagementRole.RM,
                supported_protocol_versions=[S2_VERSION],
            )
        ),
        s.on_message(_details()),
        s.on_message(limits_to_wire(uuid.uuid4(), T0, PowerRange(0.0, 11.0), PowerRange(0.0, 0.0))),
        s.on_message(_energy(20.0)),
    ]
    return s, clock, rs


def test_handshake_details_constraints_start_a_session() -> None:
    _, _, rs = _ready()
    hello, details, pc, ec = rs
    assert isinstance(hello.out[1], HandshakeResponse)
    assert hello.out[1].selected_protocol_version == S2_VERSION
    assert isinstance(details.out[1], SelectControlType)
    assert details.out[1].control_type == ControlType.POWER_ENVELOPE_BASED_CONTROL
    assert pc.telemetry == []  # no energy need yet
    (started,) = ec.telemetry
    assert isinstance(started, SessionStarted)
    assert (started.evse_id, started.site_id, started.feeder_id, started.csms_id) == (
        "evse-7",
        "site-1",
        "f1",
        "csms-a",
    )
    assert started.max_power_kw == 11.0 and started.min_power_kw == 0.0
    assert started.energy_requested_kwh == pytest.approx(20.0)
    assert started.departure == T0 + timedelta(hours=4)
    assert (started.phases, started.phase) == (3, None)  # 3-phase symmetric constraints
    for r in rs:  # exactly one OK per message, first
        assert [st for _, st in _statuses(r)] == [ReceptionStatusValues.OK]
        assert isinstance(r.out[0], ReceptionStatus)


def test_unknown_resource_is_refused_and_closed() -> None:
    s, _ = _session()
    r = s.on_message(_details(uuid.uuid4()))
    assert _statuses(r)[0][1] == ReceptionStatusValues.PERMANENT_ERROR
    assert r.close and [i.code for i in r.issues] == ["unknown_resource"]


def test_no_common_version_closes() -> None:
    s, _ = _session()
    r = s.on_message(
        Handshake(
            message_id=uuid.uuid4(),
            role=EnergyManagementRole.RM,
            supported_protocol_versions=["9.9"],
        )
    )
    assert r.close and _statuses(r)[0][1] == ReceptionStatusValues.INVALID_CONTENT
    assert [i.code for i in r.issues] == ["no_common_version"]


def test_without_pebc_no_control_is_selected_and_no_instruction_built() -> None:
    s, _ = _session()
    r = s.on_message(_details(types=[ControlType.FILL_RATE_BASED_CONTROL]))
    assert not any(isinstance(m, SelectControlType) for m in r.out)
    assert [i.code for i in r.issues] == ["pebc_not_offered"]
    msg, issues = s.instruct([EnvelopeSegment(60.0, 0.0, 5.0)])
    assert msg is None and [i.code for i in issues] == ["not_ready"]


def test_measurements_integrate_energy_and_the_end_carries_it() -> None:
    s, clock, _ = _ready()

    def measure(at: datetime, kw: float) -> Reaction:
        return s.on_message(
            PowerMeasurement(
                message_id=uuid.uuid4(),
                measurement_timestamp=at,
                values=[PowerValue(commodity_quantity=SYM, value=kw * 1000)],
            )
        )

    (m1,) = measure(T0, 10.0).telemetry
    (m2,) = measure(T0 + timedelta(minutes=30), 4.0).telemetry
    assert isinstance(m1, MeterValue) and isinstance(m2, MeterValue)
    assert (m1.energy_kwh, m2.energy_kwh, m2.power_kw) == (0.0, pytest.approx(5.0), 4.0)
    assert measure(T0 + timedelta(minutes=10), 99.0).telemetry == []  # older: dropped
    clock.set(T0 + timedelta(minutes=45))
    (end,) = s.close()
    assert isinstance(end, SessionEnded) and end.energy_kwh == pytest.approx(6.0)
    assert s.close() == []  # once


def test_a_new_energy_constraint_is_a_new_session_with_the_energy_so_far() -> None:
    s, clock, rs = _ready()
    first = rs[-1].telemetry[0]
    s.on_message(
        PowerMeasurement(
            message_id=uuid.uuid4(),
            measurement_timestamp=T0,
            values=[PowerValue(commodity_quantity=SYM, value=6000.0)],
        )
    )
    s.on_message(
        PowerMeasurement(
            message_id=uuid.uuid4(),
            measurement_timestamp=T0 + timedelta(hours=1),
            values=[PowerValue(commodity_quantity=SYM, value=6000.0)],
        )
    )
    clock.set(T0 + timedelta(hours=1))
    (again,) = s.on_message(_energy(10.0, at=T0 + timedelta(hours=1))).telemetry
    assert isinstance(again, SessionStarted) and isinstance(first, SessionStarted)
    assert again.session_id != first.session_id and again.ts > first.ts
    assert again.energy_kwh == pytest.approx(6.0)
    assert again.energy_requested_kwh == pytest.approx(16.0)


def test_instruction_outcomes_are_recorded_without_waiting() -> None:
    s, _, _ = _ready()
    msg, issues = s.instruct([EnvelopeSegment(60.0, 0.0, 7.0), EnvelopeSegment(7200.0, 0.0, 4.2)])
    assert msg is not None and issues == []
    rec = s.instructions[str(msg.id)]
    assert rec.reception is None and not rec.rejected
    r = s.on_message(
        ReceptionStatus(subject_message_id=msg.message_id, status=ReceptionStatusValues.OK)
    )
    assert r.out == [] and rec.reception == "OK"  # a reception status is never answered
    r = s.on_message(
        InstructionStatusUpdate(
            message_id=uuid.uuid4(),
            instruction_id=msg.id,
            status_type=InstructionStatus.REJECTED,
            timestamp=T0,
        )
    )
    assert rec.statuses == ["REJECTED"] and rec.rejected
    assert [(i.code, i.ids) for i in r.issues] == [
        ("instruction_rejected", ("evse-7", str(msg.id)))
    ]
    other, _ = s.instruct([EnvelopeSegment(60.0, 0.0, 1.0)])
    assert other is not None
    r = s.on_message(
        ReceptionStatus(
            subject_message_id=other.message_id,
            status=ReceptionStatusValues.INVALID_CONTENT,
            diagnostic_label="no",
        )
    )
    assert s.instructions[str(other.id)].rejected
    assert [i.code for i in r.issues] == ["instruction_refused"]


def test_unknown_instruction_status_and_unhandled_messages_are_reported() -> None:
    s, _, _ = _ready()
    r = s.on_message(
        InstructionStatusUpdate(
            message_id=uuid.uuid4(),
            instruction_id=uuid.uuid4(),
            status_type=InstructionStatus.ACCEPTED,
            timestamp=T0,
        )
    )
    assert [i.code for i in r.issues] == ["unknown_instruction"]
    assert [st for _, st in _statuses(r)] == [ReceptionStatusValues.OK]
    r = s.on_message(
        SelectControlType(message_id=uuid.uuid4(), control_type=ControlType.NOT_CONTROLABLE)
    )
    assert [st for _, st in _statuses(r)] == [ReceptionStatusValues.INVALID_CONTENT]


def test_terminate_ends_the_session() -> None:
    s, _, _ = _ready()
    r = s.on_message(SessionRequest(message_id=uuid.uuid4(), request=SessionRequestType.TERMINATE))
    assert r.close and [type(t) for t in r.telemetry] == [SessionEnded]


def test_heartbeats_while_a_session_is_open_at_most_one_per_interval() -> None:
    s, _, _ = _ready()
    beat = s.heartbeat(T0, 60.0)
    assert beat is not None and (beat.evse_id, beat.csms_id, beat.feeder_id) == (
        "evse-7",
        "csms-a",
        "f1",
    )
    assert s.heartbeat(T0 + timedelta(seconds=59), 60.0) is None
    assert s.heartbeat(T0 + timedelta(seconds=60), 60.0) is not None
    s.close()
    assert s.heartbeat(T0 + timedelta(seconds=600), 60.0) is None
    fresh, _ = _session()
    assert fresh.heartbeat(T0, 60.0) is None  # no session yet
