"""A simulated S2 resource manager built from s2-python's own RM client code.

Used by the integration tests and the edge benchmark as an independent peer of the CEM:
the handshake, ``ResourceManagerDetails`` and control-type activation are s2-python's
``ResourceManagerHandler`` over its ``WebsocketClientMedium`` and ``S2AsyncConnection``;
only the EV's PEBC behaviour is written here (:class:`SimPebcControl`): on activation it
sends ``PEBC.PowerConstraints`` and ``PEBC.EnergyConstraint``, it answers each
``PEBC.Instruction`` with an ``InstructionStatusUpdate`` (ACCEPTED, or REJECTED when told
to), and :meth:`SimRm.measure` sends a ``PowerMeasurement``.

Units at this boundary: S2 W and ms (:mod:`adapters.csms.s2.convert` does the kW side).
It sends with ``send_and_forget`` inside handlers — never ``send_msg_and_await_reception_status``
there (the library trap: awaiting a reception status in a handler can deadlock).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from s2python.common import (
    Commodity,
    CommodityQuantity,
    Duration,
    InstructionStatus,
    InstructionStatusUpdate,
    PowerMeasurement,
    PowerValue,
    Role,
    RoleType,
)
from s2python.connection.asset_details import AssetDetails
from s2python.connection.async_.connection import S2AsyncConnection
from s2python.connection.async_.control_type.class_based import (
    PEBCControlType,
    ResourceManagerHandler,
)
from s2python.connection.async_.medium.websocket import WebsocketClientMedium
from s2python.connection.types import S2ConnectionEventsAndMessages, SendOkayRunAsync
from s2python.pebc import PEBCEnergyConstraint, PEBCInstruction

from aggregator.pebc import PowerRange

from .convert import W_PER_KW, limits_to_wire

__all__ = ["SimPebcControl", "SimRm"]

_Q = CommodityQuantity.ELECTRIC_POWER_3_PHASE_SYMMETRIC


@dataclass
class SimPebcControl(PEBCControlType):
    """An EV's PEBC side: its ranges (kW), its energy need and what it does with instructions."""

    upper_kw: PowerRange
    lower_kw: PowerRange
    energy_min_kwh: float
    energy_max_kwh: float
    departure: datetime
    reject: bool = False
    instructions: list[PEBCInstruction] = field(default_factory=list)
    received: asyncio.Event = field(default_factory=asyncio.Event)

    async def activate(self, connection: S2AsyncConnection) -> None:
        now = datetime.now(self.departure.tzinfo)
        hours = (self.departure - now).total_seconds() / 3600.0
        await connection.send_and_forget(
            limits_to_wire(uuid.uuid4(), now, self.upper_kw, self.lower_kw, _Q)
        )
        await connection.send_and_forget(
            PEBCEnergyConstraint(
                message_id=uuid.uuid4(),
                id=uuid.uuid4(),
                valid_from=now,
                valid_until=self.departure,
                upper_average_power=self.energy_max_kwh / hours * W_PER_KW,
                lower_average_power=self.energy_min_kwh / hours * W_PER_KW,
                commodity_quantity=_Q,
            )
        )

    async def deactivate(self, connection: S2AsyncConnection) -> None:
        return None

    async def handle_instruction(
        self,
        connection: S2AsyncConnection,
        msg: S2ConnectionEventsAndMessages,
        send_okay: SendOkayRunAsync,
    ) -> None:
        if not isinstance(msg, PEBCInstruction) or send_okay is None:
            return
        await send_okay()
        self.instructions.append(msg)
        self.received.set()
        status = InstructionStatus.REJECTED if self.reject else InstructionStatus.ACCEPTED
        await connection.send_and_forget(
            InstructionStatusUpdate(
                message_id=uuid.uuid4(),
                instruction_id=msg.id,
                status_type=status,
                timestamp=datetime.now(self.departure.tzinfo),
            )
        )


class SimRm:
    """One simulated resource manager connected to a CEM at ``url``."""

    def __init__(
        self,
        url: str,
        resource_id: uuid.UUID,
        control: SimPebcControl,
        bearer_token: str | None = None,
        name: str | None = None,
        verify_certificate: bool = True,
    ) -> None:
        self.url = url
        self.name = name or f"sim-ev-{resource_id}"
        self.verify_certificate = verify_certificate
        self.resource_id = resource_id
        self.control = control
        self.bearer_token = bearer_token
        self._medium: WebsocketClientMedium | None = None
        self.connection: S2AsyncConnection | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect and run the S2 connection in a task (raises if the CEM refuses)."""
        self._medium = WebsocketClientMedium(
            self.url, verify_certificate=self.verify_certificate, bearer_token=self.bearer_token
        )
        await self._medium.connect()
        self.connection = S2AsyncConnection(self._medium, asyncio.get_running_loop())
        details = AssetDetails(
            resource_id=self.resource_id,
            provides_forecast=False,
            provides_power_measurements=[_Q],
            instruction_processing_delay=Duration(root=100),
            roles=[Role(role=RoleType.ENERGY_STORAGE, commodity=Commodity.ELECTRICITY)],
            name=self.name,
        )
        ResourceManagerHandler([self.control], details).register_handlers(self.connection)
        self._task = asyncio.get_running_loop().create_task(self.connection.run())

    async def measure(self, power_kw: float, at: datetime) -> None:
        """Report the present power (kW, positive = charging)."""
        if self.connection is None:
            raise RuntimeError("not started")
        await self.connection.send_and_forget(
            PowerMeasurement(
                message_id=uuid.uuid4(),
                measurement_timestamp=at,
                values=[PowerValue(commodity_quantity=_Q, value=power_kw * W_PER_KW)],
            )
        )

    async def stop(self) -> None:
        if self.connection is not None:
            await self.connection.stop()
        if self._medium is not None:
            await self._medium.disconnect()
        if self._task is not None:
            await asyncio.wait([self._task], timeout=5.0)
