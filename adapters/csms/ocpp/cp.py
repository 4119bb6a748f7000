"""The ``ocpp`` package's ChargePoint, CSMS side, for OCPP 2.0.1 and 2.1: message handlers.

The handlers only translate into :class:`~adapters.csms.ocpp.station.StationLink` calls
and answer at once; they never call the station (the ``ocpp`` package serves one message
at a time per connection, so awaiting a call inside a handler would deadlock). After a
BootNotification is accepted, ``on_booted`` (set by the endpoint) is scheduled as a task.
One handler set serves both versions; only the result classes differ.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from ocpp.routing import after, on
from ocpp.v21 import ChargePoint as ChargePoint21
from ocpp.v201 import ChargePoint as ChargePoint201

from adapters.csms.ocpp.quirks import quirks_for
from adapters.csms.ocpp.station import StationLink

__all__ = ["CsmsChargePoint21", "CsmsChargePoint201", "charge_point_class"]


_F = TypeVar("_F", bound=Callable[..., Any])


def _on(action: str) -> Callable[[_F], _F]:
    """``ocpp.routing.on``, typed."""
    return cast(Callable[[_F], _F], on(action))


def _after(action: str) -> Callable[[_F], _F]:
    """``ocpp.routing.after``, typed."""
    return cast(Callable[[_F], _F], after(action))


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class _Handlers:
    """The CSMS-side handlers shared by both OCPP versions."""

    link: StationLink
    on_booted: Callable[[], None] | None
    heartbeat_interval_s: int
    _call_result: Any

    @_on("BootNotification")
    async def _boot(self, charging_station: dict[str, Any], reason: str, **_: Any) -> Any:
        self.link.on_boot(
            charging_station,
            quirks_for(
                str(charging_station.get("vendor_name", "")), str(charging_station.get("model", ""))
            ),
        )
        return self._call_result.BootNotification(
            current_time=_now_iso(), interval=self.heartbeat_interval_s, status="Accepted"
        )

    @_after("BootNotification")
    async def _booted(self, **_: Any) -> None:
        if self.on_booted is not None:
            self.on_booted()  # schedules the setup task; never awaits a call here

    @_on("Heartbeat")
    async def _heartbeat(self, **_: Any) -> Any:
        self.link.on_heartbeat(self.link.clock())
        return self._call_result.Heartbeat(current_time=_now_iso())

    @_on("StatusNotification")
    async def _status(self, evse_id: int, **_: Any) -> Any:
        self.link.on_status(int(evse_id))
        return self._call_result.StatusNotification()

    @_on("TransactionEvent")
    async def _transaction(self, event_type: str, timestamp: str, **kw: Any) -> Any:
        self.link.on_transaction(event_type, timestamp, kw)
        return self._call_result.TransactionEvent()

    @_on("MeterValues")
    async def _meter_values(self, evse_id: int, meter_value: list[dict[str, Any]], **_: Any) -> Any:
        self.link.on_meter_values(int(evse_id), meter_value)
        return self._call_result.MeterValues()

    @_on("NotifyEVChargingNeeds")
    async def _needs(self, evse_id: int, charging_needs: dict[str, Any], **_: Any) -> Any:
        self.link.on_charging_needs(int(evse_id), charging_needs)
        return self._call_result.NotifyEVChargingNeeds(status="Accepted")

    @_on("NotifyChargingLimit")
    async def _limit(self, charging_limit: dict[str, Any], **kw: Any) -> Any:
        source = str(charging_limit.get("charging_limit_source", "Other"))
        self.link.on_charging_limit(source, kw.get("charging_schedule") or [], self.link.clock())
        return self._call_result.NotifyChargingLimit()

    @_on("NotifyReport")
    async def _report(self, **_: Any) -> Any:
        return self._call_result.NotifyReport()

    @_on("NotifyEvent")
    async def _event(self, **_: Any) -> Any:
        return self._call_result.NotifyEvent()

    @_on("SecurityEventNotification")
    async def _security(self, **_: Any) -> Any:
        return self._call_result.SecurityEventNotification()

    @_on("Authorize")
    async def _authorize(self, **_: Any) -> Any:
        return self._call_result.Authorize(id_token_info={"status": "Accepted"})


class CsmsChargePoint201(_Handlers, ChargePoint201):  # type: ignore[misc]
    """OCPP 2.0.1 station connection."""


class CsmsChargePoint21(_Handlers, ChargePoint21):  # type: ignore[misc]
    """OCPP 2.1 station connection."""


def charge_point_class(subprotocol: str) -> type[CsmsChargePoint201 | CsmsChargePoint21]:
    """The ChargePoint class for a negotiated subprotocol (``ocpp2.1`` or ``ocpp2.0.1``)."""
    return CsmsChargePoint21 if subprotocol == "ocpp2.1" else CsmsChargePoint201
