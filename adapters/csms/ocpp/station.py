"""One connected charging station, CSMS side: OCPP 2.0.1/2.1 messages to gridflex telemetry.

:class:`StationLink` holds what the edge knows of a station (place in the topology,
electrical unit and phases, OCPP 2.1 capabilities, open transactions) and turns what the
station sends into gridflex wire messages (:mod:`aggregator.messages`) given to ``emit``:

* ``TransactionEvent`` Started opens a session; its ``SessionStarted`` is *held* until the
  EV's ``NotifyEVChargingNeeds`` (ISO 15118 departure time and energy) arrives or
  ``needs_wait_s`` passes on the edge's clock (:meth:`StationLink.release_due`), because
  the core takes a session's departure and energy once, at the start. Meter values of a
  held session wait with it, in order. Updated / ``MeterValues`` → ``MeterValue``
  (session energy = import register − register at start, Wh → kWh; power W → kW);
  Ended → ``SessionEnded``.
* ``StatusNotification`` registers the EVSE; ``Heartbeat`` → one ``EvseHeartbeat`` per
  known EVSE.
* ``NotifyChargingLimit`` with a schedule → a site ``DsoLimitMessage`` on the grid-signals
  topic (source ``ocpp:<limit source>``), the lowest limit of the schedule, in kW.

gridflex EVSE ids are ``"<station id>/<evse id>"`` (:func:`evse_key`). Handlers never
await a call to the station (the ``ocpp`` package serves one message at a time, so that
would deadlock); commands to the station are made by the endpoint from its own tasks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from pydantic import BaseModel

from adapters.csms.ocpp.profiles import Electrical, RateUnit, kw_from_limit
from adapters.csms.ocpp.quirks import DEFAULT, Quirks
from aggregator.messages import (
    MAX_CURRENT_A,
    DsoLimitMessage,
    EvseHeartbeat,
    MeterValue,
    SessionEnded,
    SessionStarted,
)

__all__ = ["Emit", "Session", "StationLink", "StationPlace", "evse_key", "parse_evse_key"]

Emit = Callable[[str, str, BaseModel], None]
"""``emit(kind, key, message)``: kind ``telemetry`` or ``grid_signals``, key = feeder id."""

ENERGY: Final = "Energy.Active.Import.Register"
POWER: Final = "Power.Active.Import"


def evse_key(station_id: str, evse_id: int) -> str:
    """The gridflex EVSE id of OCPP EVSE ``evse_id`` on ``station_id``."""
    return f"{station_id}/{evse_id}"


def parse_evse_key(key: str) -> tuple[str, int] | None:
    """``(station id, evse id)`` of a gridflex EVSE id, or ``None`` when it is not one."""
    station, sep, evse = key.rpartition("/")
    if not sep or not station or not evse.isdigit():
        return None
    return station, int(evse)


@dataclass(frozen=True, slots=True, kw_only=True)
class StationPlace:
    """Where a station sits: its site and feeder, the CSMS id the edge speaks for, and
    the session defaults used until the EV tells its needs."""

    station_id: str
    site_id: str
    feeder_id: str
    csms_id: str
    max_power_kw: float = 11.0
    default_dwell_s: float = 8 * 3600.0
    default_energy_kwh: float = 20.0


@dataclass(slots=True)
class Session:
    """An open transaction on one EVSE."""

    transaction_id: str
    evse_id: int
    started_at: datetime
    start_wh: float | None = None
    energy_kwh: float = 0.0
    power_kw: float = 0.0
    departure: datetime | None = None
    energy_requested_kwh: float | None = None
    max_power_kw: float | None = None
    min_current_a: float | None = None
    released: bool = False
    opened_at: datetime | None = None  # edge clock (the station's clock may be skewed)
    held: list[BaseModel] = field(default_factory=list)
    announced_at: datetime | None = None  # ``ts`` of the last SessionStarted sent upstream


def _ts(value: Any) -> datetime:
    if isinstance(value, str):
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return t if t.tzinfo is not None else t.replace(tzinfo=UTC)
    return datetime.now(UTC)


def _sampled(meter_values: list[dict[str, Any]] | None) -> tuple[float | None, float | None]:
    """(energy Wh, power W) of the last sample of each measurand (whole-EVSE values)."""
    wh: float | None = None
    w: float | None = None
    for mv in meter_values or []:
        for sv in mv.get("sampled_value", []):
            if sv.get("phase") is not None:
                continue
            measurand = sv.get("measurand", ENERGY)
            mult = 10.0 ** float(sv.get("unit_of_measure", {}).get("multiplier", 0))
            value = float(sv["value"]) * mult
            unit = sv.get("unit_of_measure", {}).get("unit")
            if measurand == ENERGY:
                wh = value * 1000.0 if unit == "kWh" else value
            elif measurand == POWER:
                w = value * 1000.0 if unit == "kW" else value
    return wh, w


class StationLink:
    """What the edge knows of one station and the translation of its messages."""

    def __init__(
        self,
        place: StationPlace,
        emit: Emit,
        *,
        ocpp_version: str,
        voltage_v: float = 230.0,
        needs_wait_s: float = 10.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.place = place
        self.clock = clock
        self.emit = emit
        self.ocpp_version = ocpp_version
        self.voltage_v = voltage_v
        self.needs_wait_s = needs_wait_s
        self.vendor = ""
        self.model = ""
        self.quirks: Quirks = DEFAULT
        self.rate_unit: RateUnit | None = None
        self.phases: int | None = None
        self.dynamic_profiles = False
        self.operation_modes: frozenset[str] = frozenset()
        self.booted = False
        self.evses: set[int] = set()
        self.sessions: dict[int, Session] = {}
        self._needs: dict[int, dict[str, Any]] = {}
        self.counters: dict[str, int] = {}

    # ------------------------------------------------------------------ properties

    @property
    def is_21(self) -> bool:
        return self.ocpp_version == "ocpp2.1"

    def electrical(self) -> Electrical:
        """Unit and phases: quirk table first, then the device model, then A / 3."""
        q = self.quirks
        unit: RateUnit = q.rate_unit or self.rate_unit or "A"
        phases = q.phases or self.phases or 3
        step = q.limit_step
        return Electrical(unit, phases, self.voltage_v, q.min_current_a, step)

    def _count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    # ------------------------------------------------------------------ inbound

    def on_boot(self, charging_station: dict[str, Any], quirks: Quirks) -> None:
        self.vendor = str(charging_station.get("vendor_name", ""))
        self.model = str(charging_station.get("model", ""))
        self.quirks = quirks
        self.booted = True

    def on_device_model(self, values: dict[str, str]) -> None:
        """Read ``SmartChargingCtrlr.RateUnit``, ``EVSE.SupplyPhases`` and the 2.1
        dynamic-profile flag from GetVariables answers (``component.variable`` → value)."""
        unit = values.get("SmartChargingCtrlr.RateUnit", "")
        units = {u.strip() for u in unit.split(",") if u.strip()}
        if units:
            self.rate_unit = "A" if "A" in units else "W" if "W" in units else None
        phases = values.get("EVSE.SupplyPhases", "")
        if phases.isdigit() and 1 <= int(phases) <= 3:
            self.phases = int(phases)
        dyn = values.get("SmartChargingCtrlr.SupportsDynamicProfiles", "")
        self.dynamic_profiles = (
            self.is_21 and self.quirks.dynamic_profiles and dyn.lower() == "true"
        )
        modes = values.get("V2XChargingCtrlr.SupportedOperationModes", "") if self.is_21 else ""
        self.operation_modes = frozenset(m.strip() for m in modes.split(",") if m.strip())

    def on_status(self, evse_id: int) -> None:
        if evse_id > 0:
            self.evses.add(evse_id)

    def on_heartbeat(self, now: datetime) -> None:
        p = self.place
        for e in sorted(self.evses):
            msg = EvseHeartbeat(
                ts=now, feeder_id=p.feeder_id, evse_id=evse_key(p.station_id, e), csms_id=p.csms_id
            )
            self.emit("telemetry", p.feeder_id, msg)

    def on_transaction(self, event_type: str, timestamp: str, kw: dict[str, Any]) -> None:
        info = kw.get("transaction_info") or {}
        tx_id = str(info.get("transaction_id", ""))
        evse = kw.get("evse") or {}
        ts = _ts(timestamp)
        wh, w = _sampled(kw.get("meter_value"))
        if event_type == "Started":
            evse_id = int(evse.get("id", 0))
            if evse_id <= 0 or not tx_id:
                self._count("tx_without_evse")
                return
            self.evses.add(evse_id)
            new = Session(tx_id, evse_id, ts, start_wh=wh, opened_at=self.clock())
            needs = self._needs.pop(evse_id, None)
            if needs is not None:
                self._apply_needs(new, needs)
            self.sessions[evse_id] = new
            if needs is not None:
                self._release(new)
            return
        s = next((x for x in self.sessions.values() if x.transaction_id == tx_id), None)
        if s is None:
            self._count("unknown_transaction")
            return
        self._meter(s, ts, wh, w)
        if event_type == "Ended":
            if not s.released:
                self._release(s)
            p = self.place
            end = SessionEnded(
                ts=ts,
                feeder_id=p.feeder_id,
                evse_id=evse_key(p.station_id, s.evse_id),
                session_id=s.transaction_id,
                energy_kwh=round(s.energy_kwh, 6),
            )
            self.emit("telemetry", p.feeder_id, end)
            del self.sessions[s.evse_id]

    def on_meter_values(self, evse_id: int, meter_value: list[dict[str, Any]]) -> None:
        s = self.sessions.get(evse_id)
        if s is None:
            return
        wh, w = _sampled(meter_value)
        ts = _ts(meter_value[-1].get("timestamp")) if meter_value else datetime.now(UTC)
        self._meter(s, ts, wh, w)

    def on_charging_needs(self, evse_id: int, needs: dict[str, Any]) -> None:
        s = self.sessions.get(evse_id)
        if s is None:
            self._needs[evse_id] = needs  # ISO 15118 may tell its needs before the start
            return
        self._apply_needs(s, needs)
        if s.released:  # told after the start: a newer start of the session revises it
            self._count("needs_after_start")
        self._release(s)

    def on_charging_limit(
        self, source: str, schedules: list[dict[str, Any]], now: datetime
    ) -> None:
        """An external limit (e.g. the system operator's) → a site DSO limit (kW)."""
        elec = self.electrical()
        for sched in schedules:
            unit = sched.get("charging_rate_unit", elec.unit)
            e = Electrical(unit, elec.phases, elec.voltage_v, elec.min_current_a, elec.step)
            periods = sched.get("charging_schedule_period", [])
            if not periods:
                continue
            limit_kw = min(kw_from_limit(float(p["limit"]), e) for p in periods)
            start = _ts(sched["start_schedule"]) if "start_schedule" in sched else now
            duration = float(sched.get("duration", 86_400))
            p = self.place
            msg = DsoLimitMessage(
                ts=now,
                event_id=f"ocpp:{p.station_id}:{sched.get('id', 0)}:{int(start.timestamp())}",
                target_type="site",
                target_id=p.site_id,
                start=start,
                end=start + timedelta(seconds=max(duration, 1.0)),
                limit_kw=round(limit_kw, 6),
                source=f"ocpp:{source}"[:128],
            )
            self.emit("grid_signals", p.feeder_id, msg)

    # ------------------------------------------------------------------ internals

    def _apply_needs(self, s: Session, needs: dict[str, Any]) -> None:
        dep = needs.get("departure_time")
        if isinstance(dep, str):
            s.departure = _ts(dep)
        ac = needs.get("ac_charging_parameters") or {}
        dc = needs.get("dc_charging_parameters") or {}
        energy_wh = ac.get("energy_amount", dc.get("energy_amount"))
        if energy_wh is not None:
            s.energy_requested_kwh = float(energy_wh) / 1000.0
        if "ev_min_current" in ac:
            s.min_current_a = float(ac["ev_min_current"])
        if "ev_max_current" in ac:
            volts = float(ac.get("ev_max_voltage", self.voltage_v))
            phases = self.electrical().phases
            s.max_power_kw = (
                float(ac["ev_max_current"]) * min(volts, self.voltage_v) * phases / 1000
            )
        elif "ev_max_power" in dc:
            s.max_power_kw = float(dc["ev_max_power"]) / 1000.0

    def _release(self, s: Session) -> None:
        """Emit the held SessionStarted, then what waited behind it (again, with a newer
        ``ts``, when the EV tells its needs after the start: the core revises the live
        session's departure and energy request)."""
        p = self.place
        departure = s.departure
        if departure is None or departure <= s.started_at:
            departure = s.started_at + timedelta(seconds=p.default_dwell_s)
        energy = s.energy_requested_kwh
        if energy is None or not math.isfinite(energy) or energy < 0:
            energy = p.default_energy_kwh
        max_kw = s.max_power_kw if s.max_power_kw and s.max_power_kw > 0 else p.max_power_kw
        elec = self.electrical()
        min_a = max(elec.min_current_a, s.min_current_a or 0.0)
        ts = s.started_at  # a revision goes out newer than the last announcement
        if s.announced_at is not None:
            ts = max(self.clock(), s.announced_at + timedelta(milliseconds=1))
        s.announced_at = ts
        start = SessionStarted(
            ts=ts,
            phases=1 if elec.phases == 1 else 3,  # a 2-phase feed counts on every phase
            min_current_a=min(min_a, MAX_CURRENT_A),
            feeder_id=p.feeder_id,
            site_id=p.site_id,
            evse_id=evse_key(p.station_id, s.evse_id),
            csms_id=p.csms_id,
            session_id=s.transaction_id,
            departure=departure,
            energy_requested_kwh=min(energy, 1000.0),
            max_power_kw=min(max_kw, p.max_power_kw),
        )
        s.released = True
        self.emit("telemetry", p.feeder_id, start)
        for m in s.held:
            self.emit("telemetry", p.feeder_id, m)
        s.held.clear()

    def release_due(self, now: datetime) -> None:
        """Release sessions whose EV did not tell its needs within ``needs_wait_s``."""
        for s in list(self.sessions.values()):
            opened = s.opened_at or s.started_at
            if not s.released and (now - opened).total_seconds() >= self.needs_wait_s:
                self._release(s)

    def _meter(self, s: Session, ts: datetime, wh: float | None, w: float | None) -> None:
        if wh is None and w is None:
            return
        if wh is not None:
            if s.start_wh is None:
                s.start_wh = wh
            s.energy_kwh = max(wh - s.start_wh, 0.0) / 1000.0
        if w is not None:
            s.power_kw = w / 1000.0
        p = self.place
        msg = MeterValue(
            ts=ts,
            feeder_id=p.feeder_id,
            evse_id=evse_key(p.station_id, s.evse_id),
            session_id=s.transaction_id,
            energy_kwh=round(min(s.energy_kwh, 1000.0), 6),
            power_kw=round(max(min(s.power_kw, 5000.0), -5000.0), 6),
        )
        if s.released:
            self.emit("telemetry", p.feeder_id, msg)
        else:
            s.held.append(msg)
