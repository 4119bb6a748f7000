"""Simulated charging stations (the ``ocpp`` package's ChargePoint, station side) for tests.

A :class:`SimStation` boots, reports its EVSEs, runs transactions with meter values and
records every charging profile it is sent (``profiles``: ``(evse id, profile dict)`` in
arrival order) so a test checks what the edge sent independently of the edge's own
bookkeeping. ``reject=True`` answers every SetChargingProfile with Rejected.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result
from websockets.asyncio.client import ClientConnection, connect


def iso(t: datetime | None = None) -> str:
    return (t or datetime.now(UTC)).isoformat().replace("+00:00", "Z")


@dataclass
class Recorded:
    profiles: list[tuple[datetime, int, dict[str, Any]]] = field(default_factory=list)
    dynamic: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


class SimStation(ChargePoint):  # type: ignore[misc]
    def __init__(
        self,
        sid: str,
        ws: ClientConnection,
        *,
        reject: bool = False,
        unit: str = "A",
        phases: int = 3,
        vendor: str = "gridflex-sim",
        model: str = "sim-1",
        now: Any = None,
    ) -> None:
        super().__init__(sid, ws, response_timeout=60)
        self.reject = reject
        self.unit = unit
        self.phases = phases
        self.vendor = vendor
        self.model = model
        self.rec = Recorded()
        self.seq = 0
        self.now = now or (lambda: datetime.now(UTC))

    @on("SetChargingProfile")
    async def _set(self, evse_id: int, charging_profile: dict[str, Any], **_: Any) -> Any:
        self.rec.profiles.append((self.now(), evse_id, charging_profile))
        return call_result.SetChargingProfile(status="Rejected" if self.reject else "Accepted")

    @on("GetVariables")
    async def _get(self, get_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        values = {"RateUnit": self.unit, "SupplyPhases": str(self.phases)}
        out = []
        for d in get_variable_data:
            name = d["variable"]["name"]
            r = {"component": d["component"], "variable": d["variable"]}
            if name in values:
                r |= {"attribute_status": "Accepted", "attribute_value": values[name]}
            else:
                r |= {"attribute_status": "UnknownVariable"}
            out.append(r)
        return call_result.GetVariables(get_variable_result=out)

    @on("GetCompositeSchedule")
    async def _composite(self, duration: int, evse_id: int, **_: Any) -> Any:
        tx = [
            p
            for _t, e, p in self.rec.profiles
            if e == evse_id and p["charging_profile_purpose"] == "TxProfile"
        ]
        if not tx:
            return call_result.GetCompositeSchedule(status="Rejected")
        sched = tx[-1]["charging_schedule"][0]
        return call_result.GetCompositeSchedule(
            status="Accepted",
            schedule={
                "evse_id": evse_id,
                "duration": duration,
                "schedule_start": iso(),
                "charging_rate_unit": sched["charging_rate_unit"],
                "charging_schedule_period": [
                    {"start_period": 0, "limit": sched["charging_schedule_period"][0]["limit"]}
                ],
            },
        )

    async def boot(self, evses: int) -> None:
        await self.call(
            call.BootNotification(
                charging_station={"vendor_name": self.vendor, "model": self.model}, reason="PowerUp"
            )
        )
        for e in range(1, evses + 1):
            await self.call(
                call.StatusNotification(
                    timestamp=iso(), connector_status="Available", evse_id=e, connector_id=1
                )
            )

    async def tx(
        self, event: str, evse: int, tx_id: str, wh: float, w: float, ts: datetime | None = None
    ) -> None:
        self.seq += 1
        await self.call(
            call.TransactionEvent(
                event_type=event,
                timestamp=iso(ts),
                trigger_reason="CablePluggedIn" if event == "Started" else "MeterValuePeriodic",
                seq_no=self.seq,
                transaction_info={"transaction_id": tx_id},
                evse={"id": evse, "connector_id": 1},
                meter_value=[
                    {
                        "timestamp": iso(ts),
                        "sampled_value": [
                            {"value": wh, "measurand": "Energy.Active.Import.Register"},
                            {"value": w, "measurand": "Power.Active.Import"},
                        ],
                    }
                ],
            )
        )

    async def needs(self, evse: int, departure: datetime, energy_wh: float) -> None:
        await self.call(
            call.NotifyEVChargingNeeds(
                evse_id=evse,
                charging_needs={
                    "requested_energy_transfer": "AC_three_phase",
                    "departure_time": iso(departure),
                    "ac_charging_parameters": {
                        "energy_amount": energy_wh,
                        "ev_min_current": 6,
                        "ev_max_current": 16,
                        "ev_max_voltage": 400,
                    },
                },
            )
        )


async def open_station(
    url: str,
    sid: str,
    *,
    password: str | None = None,
    ssl_ctx: ssl.SSLContext | None = None,
    **kw: Any,
) -> tuple[SimStation, asyncio.Task[Any]]:
    headers = {}
    if password is not None:
        headers["Authorization"] = (
            "Basic " + base64.b64encode(f"{sid}:{password}".encode()).decode()
        )
    ws = await connect(
        f"{url}/{sid}",
        subprotocols=["ocpp2.0.1"],
        additional_headers=headers,  # type: ignore[list-item]
        ssl=ssl_ctx,
        ping_interval=None,
        open_timeout=60,
    )
    st = SimStation(sid, ws, **kw)
    task = asyncio.ensure_future(st.start())
    return st, task


async def await_until(cond: Any, timeout_s: float, what: str) -> Any:
    """Poll ``cond`` (yielding to the loop) until truthy or fail after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last={value!r}")
        await asyncio.sleep(0.02)
