"""One resource manager's S2 session as seen by the CEM: a state machine with no I/O.

:class:`RmSession` takes each parsed S2 message from its resource manager and returns a
:class:`Reaction`: the messages to send back (reception statuses first, then any reply),
the gridflex telemetry it yields, and the issues found. The socket loop
(:mod:`adapters.csms.s2.cem`) only moves bytes; every protocol decision is here, so it is
tested without a socket.

The CEM side of S2 PEBC, in order: the RM's ``Handshake`` → ``HandshakeResponse``;
``ResourceManagerDetails`` (a known resource offering PEBC) → ``SelectControlType`` PEBC;
``PEBC.PowerConstraints`` and ``PEBC.EnergyConstraint`` → a ``session_started`` upstream
(envelope and energy need through :mod:`aggregator.pebc`); ``PowerMeasurement`` →
``meter_value`` (energy integrated here: S2 reports power only);
``InstructionStatusUpdate`` and the RM's ``ReceptionStatus`` of our instructions →
:class:`InstructionRecord`; ``SessionRequest`` TERMINATE or a closed socket →
``session_ended``.

Invariants: every message the RM sends with a ``message_id`` gets exactly one
``ReceptionStatus``; nothing here ever waits for a reception status (the RM's statuses of
our messages are recorded when they arrive — awaiting them inside a handler deadlocks the
receive loop); instructions are built only from the RM's current constraints, with
``lower ≤ upper``; the session id changes when a new energy constraint replaces the old
one (the fleet keeps the later start), energy counted so far is carried over.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from s2python.common import (
    ControlType,
    EnergyManagementRole,
    Handshake,
    HandshakeResponse,
    InstructionStatus,
    InstructionStatusUpdate,
    PowerForecast,
    PowerMeasurement,
    ReceptionStatus,
    ReceptionStatusValues,
    ResourceManagerDetails,
    RevokeObject,
    SelectControlType,
    SessionRequest,
    SessionRequestType,
)
from s2python.pebc import PEBCEnergyConstraint, PEBCInstruction, PEBCPowerConstraints
from s2python.validate_values_mixin import S2MessageComponent
from s2python.version import S2_VERSION

from aggregator.errors import Issue
from aggregator.interfaces import Clock
from aggregator.messages import (
    EvseHeartbeat,
    MeterValue,
    SessionEnded,
    SessionStarted,
    Telemetry,
)
from aggregator.pebc import EnergyConstraint

from .convert import (
    EnvelopeSegment,
    S2Limits,
    energy_from_wire,
    instruction_to_wire,
    limits_from_wire,
    measured_power_kw,
)

__all__ = ["InstructionRecord", "Reaction", "RmSession", "S2Resource"]

_S2Message = S2MessageComponent
_OK = ReceptionStatusValues.OK


@dataclass(frozen=True, slots=True)
class S2Resource:
    """Where a resource manager sits in gridflex's topology (its EVSE, site, feeder)."""

    resource_id: str
    evse_id: str
    site_id: str
    feeder_id: str


@dataclass(slots=True)
class InstructionRecord:
    """What became of one PEBC.Instruction: reception status and status updates, in order."""

    instruction_id: str
    message_id: str
    evse_id: str
    sent_at: datetime
    segments: tuple[EnvelopeSegment, ...]
    reception: str | None = None
    statuses: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> bool:
        bad = {InstructionStatus.REJECTED.value, InstructionStatus.ABORTED.value}
        return (self.reception not in (None, _OK.value)) or any(s in bad for s in self.statuses)


@dataclass(slots=True)
class Reaction:
    """What the CEM does after one message: send ``out``, publish ``telemetry``, report."""

    out: list[_S2Message] = field(default_factory=list)
    telemetry: list[Telemetry] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    close: bool = False


def _status(subject: uuid.UUID, status: ReceptionStatusValues, label: str) -> ReceptionStatus:
    return ReceptionStatus(subject_message_id=subject, status=status, diagnostic_label=label)


class RmSession:
    """The CEM's view of one connected resource manager (see the module doc)."""

    def __init__(
        self,
        resources: dict[str, S2Resource],
        csms_id: str,
        clock: Clock,
    ) -> None:
        self.resources = resources
        self.csms_id = csms_id
        self.clock = clock
        self.resource: S2Resource | None = None
        self.pebc_selected = False
        self.limits: S2Limits | None = None
        self.energy: EnergyConstraint | None = None
        self.energy_id: str | None = None
        self.session_id: str | None = None
        self.energy_kwh = 0.0
        self._last_power: tuple[datetime, float] | None = None
        self.instructions: dict[str, InstructionRecord] = {}
        self._by_message: dict[str, str] = {}
        self.closed = False
        self._beat: datetime | None = None

    # ------------------------------------------------------------------ from the RM

    def hello(self) -> Handshake:
        """The CEM's own Handshake, sent when the socket opens."""
        return Handshake(
            message_id=uuid.uuid4(),
            role=EnergyManagementRole.CEM,
            supported_protocol_versions=[S2_VERSION],
        )

    def on_message(self, msg: _S2Message) -> Reaction:
        """React to one parsed message (never raises for a peer's bad content)."""
        if isinstance(msg, ReceptionStatus):
            return self._reception(msg)
        handler = _HANDLERS.get(type(msg))
        r = Reaction()
        mid: uuid.UUID = msg.message_id  # type: ignore[attr-defined]
        if handler is None:
            r.out.append(
                _status(mid, ReceptionStatusValues.INVALID_CONTENT, "not handled by this CEM")
            )
            r.issues.append(
                Issue(
                    field="message_type",
                    code="unhandled_message",
                    ids=(self._rid(),),
                    message=str(getattr(msg, "message_type", type(msg).__name__)),
                )
            )
            return r
        handler(self, msg, r)
        if not any(isinstance(m, ReceptionStatus) and m.subject_message_id == mid for m in r.out):
            r.out.insert(0, _status(mid, _OK, "ok"))
        return r

    def _rid(self) -> str:
        return self.resource.resource_id if self.resource else "?"

    def _handshake(self, msg: Handshake, r: Reaction) -> None:
        versions = msg.supported_protocol_versions or [S2_VERSION]
        if msg.role != EnergyManagementRole.RM or S2_VERSION not in versions:
            r.out.append(
                _status(msg.message_id, ReceptionStatusValues.INVALID_CONTENT, "no common version")
            )
            r.issues.append(
                Issue(
                    field="supported_protocol_versions",
                    code="no_common_version",
                    message=f"{msg.role} offers {versions}, this CEM speaks {S2_VERSION}",
                )
            )
            r.close = True
            return
        r.out.append(_status(msg.message_id, _OK, "ok"))
        r.out.append(
            HandshakeResponse(message_id=uuid.uuid4(), selected_protocol_version=S2_VERSION)
        )

    def _details(self, msg: ResourceManagerDetails, r: Reaction) -> None:
        rid = str(msg.resource_id)
        resource = self.resources.get(rid) or self.resources.get(msg.name or "")
        if resource is None:
            r.out.append(
                _status(msg.message_id, ReceptionStatusValues.PERMANENT_ERROR, "unknown resource")
            )
            r.issues.append(
                Issue(field="resource_id", code="unknown_resource", ids=(rid,), message="refused")
            )
            r.close = True
            return
        self.resource = resource
        r.out.append(_status(msg.message_id, _OK, "ok"))
        if ControlType.POWER_ENVELOPE_BASED_CONTROL not in msg.available_control_types:
            r.issues.append(
                Issue(
                    field="available_control_types",
                    code="pebc_not_offered",
                    ids=(rid,),
                    message="the resource manager does not offer PEBC; left uncontrolled",
                )
            )
            return
        r.out.append(
            SelectControlType(
                message_id=uuid.uuid4(), control_type=ControlType.POWER_ENVELOPE_BASED_CONTROL
            )
        )
        self.pebc_selected = True

    def _power_constraints(self, msg: PEBCPowerConstraints, r: Reaction) -> None:
        limits, issues = limits_from_wire(msg)
        r.issues.extend(issues)
        if limits is None or limits.power_constraints().validate():
            r.out.append(
                _status(msg.message_id, ReceptionStatusValues.INVALID_CONTENT, "no usable range")
            )
            return
        self.limits = limits
        self._maybe_start(r)

    def _energy_constraint(self, msg: PEBCEnergyConstraint, r: Reaction) -> None:
        energy, issues = energy_from_wire(msg)
        r.issues.extend(issues)
        if issues:
            r.out.append(
                _status(msg.message_id, ReceptionStatusValues.INVALID_CONTENT, "bad energy")
            )
            return
        self.energy, self.energy_id = energy, str(msg.id)
        self._maybe_start(r)

    def _maybe_start(self, r: Reaction) -> None:
        if self.resource is None or self.limits is None or self.energy is None:
            return
        session_id = f"s2:{self.resource.resource_id}:{self.energy_id}"
        if session_id == self.session_id:
            return  # new power constraints only: the fleet keeps the session as it is
        now = self.clock.now()
        pc = self.limits.power_constraints()
        if pc.upper_kw <= 0.0 or self.energy.end <= now:
            r.issues.append(
                Issue(
                    field="constraints",
                    code="no_session",
                    ids=(self.resource.evse_id,),
                    message="no import allowed or energy window already over",
                )
            )
            return
        self.session_id = session_id
        self._last_power = None
        phases, phase = self.limits.phases()
        r.telemetry.append(
            SessionStarted(
                ts=now,
                feeder_id=self.resource.feeder_id,
                site_id=self.resource.site_id,
                evse_id=self.resource.evse_id,
                csms_id=self.csms_id,
                session_id=session_id,
                departure=self.energy.end,
                energy_requested_kwh=max(0.0, self.energy_kwh + self.energy.min_kwh),
                max_power_kw=pc.upper_kw,
                min_power_kw=min(0.0, pc.lower_kw),
                energy_kwh=self.energy_kwh,
                phases=phases,
                phase=phase,  # type: ignore[arg-type,unused-ignore]  # L1/L2/L3 by construction
            )
        )

    def _measurement(self, msg: PowerMeasurement, r: Reaction) -> None:
        power = measured_power_kw(msg)
        if power is None or self.resource is None or self.session_id is None:
            return
        ts = msg.measurement_timestamp
        if self._last_power is not None:
            t0, p0 = self._last_power
            if ts <= t0:
                return  # an older or repeated reading: the newest one wins
            self.energy_kwh += p0 * (ts - t0).total_seconds() / 3600.0
        self._last_power = (ts, power)
        r.telemetry.append(
            MeterValue(
                ts=ts,
                feeder_id=self.resource.feeder_id,
                evse_id=self.resource.evse_id,
                session_id=self.session_id,
                energy_kwh=self.energy_kwh,
                power_kw=power,
            )
        )

    def _instruction_status(self, msg: InstructionStatusUpdate, r: Reaction) -> None:
        rec = self.instructions.get(str(msg.instruction_id))
        if rec is None:
            r.issues.append(
                Issue(
                    field="instruction_id",
                    code="unknown_instruction",
                    ids=(str(msg.instruction_id),),
                    message="status of an instruction this CEM did not send",
                )
            )
            return
        status = InstructionStatus(msg.status_type).value
        rec.statuses.append(status)
        if status in (InstructionStatus.REJECTED.value, InstructionStatus.ABORTED.value):
            r.issues.append(
                Issue(
                    field="status_type",
                    code=f"instruction_{status.lower()}",
                    ids=(rec.evse_id, rec.instruction_id),
                    message=f"the resource manager reports {status}",
                )
            )

    def _session_request(self, msg: SessionRequest, r: Reaction) -> None:
        if msg.request == SessionRequestType.TERMINATE:
            r.telemetry.extend(self.close())
            r.close = True

    def _revoke(self, msg: RevokeObject, r: Reaction) -> None:
        oid = str(msg.object_id)
        if self.limits is not None and oid == self.limits.constraints_id:
            self.limits = None
        if oid == self.energy_id:
            self.energy = None

    def _reception(self, msg: ReceptionStatus) -> Reaction:
        iid = self._by_message.get(str(msg.subject_message_id))
        r = Reaction()
        if iid is not None:
            rec = self.instructions[iid]
            rec.reception = ReceptionStatusValues(msg.status).value
            if rec.rejected:
                r.issues.append(
                    Issue(
                        field="reception_status",
                        code="instruction_refused",
                        ids=(rec.evse_id, iid),
                        message=msg.diagnostic_label or rec.reception,
                    )
                )
        elif msg.status != _OK:
            r.issues.append(
                Issue(
                    field="reception_status",
                    code="message_refused",
                    ids=(self._rid(), str(msg.subject_message_id)),
                    message=msg.diagnostic_label or str(msg.status),
                )
            )
        return r

    # ------------------------------------------------------------------ to the RM

    def instruct(
        self, segments: Sequence[EnvelopeSegment], start: datetime | None = None
    ) -> tuple[PEBCInstruction | None, list[Issue]]:
        """A PEBC.Instruction following ``segments`` from ``start`` (default: now), recorded.

        ``None`` (with an issue) while PEBC is not selected or no constraints are known.
        """
        if self.resource is None or not self.pebc_selected or self.limits is None:
            return None, [
                Issue(
                    field="session",
                    code="not_ready",
                    ids=(self.resource.evse_id if self.resource else "?",),
                    message="PEBC not selected or no power constraints yet",
                )
            ]
        now = self.clock.now()
        msg, issues = instruction_to_wire(self.limits, segments, start or now)
        iid = str(msg.id)
        self.instructions[iid] = InstructionRecord(
            iid, str(msg.message_id), self.resource.evse_id, now, tuple(segments)
        )
        self._by_message[str(msg.message_id)] = iid
        if len(self.instructions) > 1024:  # bounded: forget the oldest
            old = next(iter(self.instructions))
            self._by_message.pop(self.instructions.pop(old).message_id, None)
        return msg, [
            Issue(
                field=i.field, code=i.code, ids=(self.resource.evse_id, *i.ids), message=i.message
            )
            for i in issues
        ]

    def heartbeat(self, now: datetime, interval_s: float) -> EvseHeartbeat | None:
        """An ``evse_heartbeat`` while a session is open, at most one per ``interval_s``
        (S2 has no heartbeat of its own; without one the fleet expires a quiet session)."""
        if self.resource is None or self.session_id is None or self.closed:
            return None
        if self._beat is not None and (now - self._beat).total_seconds() < interval_s:
            return None
        self._beat = now
        return EvseHeartbeat(
            ts=now,
            feeder_id=self.resource.feeder_id,
            evse_id=self.resource.evse_id,
            csms_id=self.csms_id,
        )

    def close(self) -> list[Telemetry]:
        """The socket closed or the RM ended: the session ends upstream (once)."""
        if self.closed:
            return []
        self.closed = True
        if self.resource is None or self.session_id is None:
            return []
        if self._last_power is not None:
            t0, p0 = self._last_power
            if (now := self.clock.now()) > t0:
                self.energy_kwh += p0 * (now - t0).total_seconds() / 3600.0
        now = self.clock.now()
        last = self._last_power[0] if self._last_power else now
        return [
            SessionEnded(
                ts=max(now, last + timedelta(microseconds=1)),
                feeder_id=self.resource.feeder_id,
                evse_id=self.resource.evse_id,
                session_id=self.session_id,
                energy_kwh=self.energy_kwh,
            )
        ]


def _ignore(_: RmSession, __: object, ___: Reaction) -> None:
    """Accepted and not used (a power forecast)."""


_HANDLERS: dict[type[BaseModel], Callable[[RmSession, Any, Reaction], None]] = {
    PowerForecast: _ignore,
    Handshake: RmSession._handshake,
    ResourceManagerDetails: RmSession._details,
    PEBCPowerConstraints: RmSession._power_constraints,
    PEBCEnergyConstraint: RmSession._energy_constraint,
    PowerMeasurement: RmSession._measurement,
    InstructionStatusUpdate: RmSession._instruction_status,
    SessionRequest: RmSession._session_request,
    RevokeObject: RmSession._revoke,
}
