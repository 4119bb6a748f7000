"""Setpoints (kW) to OCPP charging profiles: units, rounding, profile ids, send policy.

Pure functions and a small per-station policy; no I/O. Profiles are built as snake_case
dicts the ``ocpp`` package turns into camelCase JSON.

* **Units.** gridflex speaks kW; a station takes A or W (:func:`to_limit`). Amperes are per
  phase: ``A = kW·1000 / (V·phases)``. Limits are rounded *down* to the station's step.
* **The 6 A minimum** (until the core rule lands): a positive setpoint below the smallest
  current an EV follows is rounded *down to 0* (never up: up could break a cap); the
  rounding is returned (:class:`Limit`) so the edge reports it upstream.
* **Negative setpoints** (V2G) become 0 in 2.0.1 profiles (an import cap cannot ask for
  export); on an OCPP 2.1 station with V2X they become a ``CentralSetpoint`` period.
* **Profile ids** are fixed per purpose and EVSE (:func:`profile_id`), so a new profile
  replaces the previous one of the same purpose on the station.
* **Send policy** (:class:`SendPolicy`): a *tightening* limit is always sent at once; a
  loosening is sent only beyond the deadband and at most once per ``min_interval_s`` per
  station; a profile is refreshed when less than ``refresh_margin_s`` of it is left.
  Tightening first is what keeps a site under its cap while limits move.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal

__all__ = [
    "Electrical",
    "Limit",
    "SendPolicy",
    "freq_watt_curve",
    "kw_from_limit",
    "profile_id",
    "schedule_dict",
    "station_max_profile",
    "to_limit",
    "tx_default_profile",
    "tx_profile",
]

RateUnit = Literal["A", "W"]
Purpose = Literal["max", "default", "tx"]
Decision = Literal["new", "tighten", "loosen", "refresh"] | None

_ID_BASE: Final = {"max": 1, "default": 100, "tx": 10_000}
TX_STACK_LEVEL: Final = 1
DEFAULT_STACK_LEVEL: Final = 0


@dataclass(frozen=True, slots=True)
class Electrical:
    """How a station takes limits: unit, phase count, nominal voltage, smallest current."""

    unit: RateUnit = "A"
    phases: int = 3
    voltage_v: float = 230.0
    min_current_a: float = 6.0
    step: float = 0.1

    def min_power_kw(self) -> float:
        return self.min_current_a * self.voltage_v * self.phases / 1000.0


@dataclass(frozen=True, slots=True)
class Limit:
    """A profile limit in the station's unit and what it means in kW.

    ``requested_kw`` is the setpoint asked for; ``applied_kw`` what the limit allows;
    ``rounded`` says why they differ (``None``, ``"min_current"``, ``"no_export"``).
    """

    value: float
    unit: RateUnit
    requested_kw: float
    applied_kw: float
    rounded: str | None = None


def _floor_step(x: float, step: float) -> float:
    return math.floor(x / step + 1e-9) * step


def kw_from_limit(value: float, elec: Electrical) -> float:
    """The power (kW) a limit of ``value`` in ``elec.unit`` allows."""
    if elec.unit == "W":
        return value / 1000.0
    return value * elec.voltage_v * elec.phases / 1000.0


def to_limit(power_kw: float, elec: Electrical, *, export_allowed: bool = False) -> Limit:
    """The limit for a setpoint of ``power_kw`` (rounded down; 6 A rule; no export)."""
    rounded: str | None = None
    kw = power_kw
    if kw < 0 and not export_allowed:
        kw, rounded = 0.0, "no_export"
    if 0 < abs(kw) < elec.min_power_kw():
        kw, rounded = 0.0, "min_current"
    per_unit = 1.0 if elec.unit == "W" else elec.voltage_v * elec.phases
    raw = kw * 1000.0 / per_unit
    value = math.copysign(_floor_step(abs(raw), elec.step), raw)
    value = round(value, 3) + 0.0
    return Limit(value, elec.unit, power_kw, kw_from_limit(value, elec), rounded)


def profile_id(purpose: Purpose, evse_id: int) -> int:
    """The fixed id of the profile of ``purpose`` on ``evse_id`` (replaced in place)."""
    return _ID_BASE[purpose] + evse_id


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def schedule_dict(
    limit: Limit,
    phases: int,
    *,
    start: datetime | None,
    duration_s: int | None,
    v2x: bool = False,
    freq_curve: list[dict[str, float]] | None = None,
) -> dict[str, Any]:
    """One ChargingSchedule with one period (snake_case, for the ``ocpp`` package)."""
    period: dict[str, Any] = {"start_period": 0, "limit": limit.value, "number_phases": phases}
    if v2x and limit.value < 0:  # OCPP 2.1 V2X: discharge at a central setpoint
        period = {
            "start_period": 0,
            "number_phases": phases,
            "operation_mode": "CentralSetpoint",
            "setpoint": limit.value,
            "limit": 0.0,
            "discharge_limit": limit.value,
        }
    if freq_curve is not None:
        period["operation_mode"] = "LocalFrequency"
        period["v2x_freq_watt_curve"] = freq_curve
    sched: dict[str, Any] = {
        "id": 1,
        "charging_rate_unit": limit.unit,
        "charging_schedule_period": [period],
    }
    if start is not None:
        sched["start_schedule"] = _iso(start)
    if duration_s is not None:
        sched["duration"] = duration_s
    return sched


def tx_profile(
    evse_id: int,
    transaction_id: str,
    limit: Limit,
    phases: int,
    *,
    start: datetime,
    duration_s: int,
    dynamic: bool = False,
    max_offline_s: int | None = None,
    v2x: bool = False,
    freq_curve: list[dict[str, float]] | None = None,
) -> dict[str, Any]:
    """The TxProfile of a transaction: Absolute with ``startSchedule`` (2.0.1), or a
    Dynamic profile (2.1) whose ``maxOfflineDuration`` is the setpoint lease."""
    profile: dict[str, Any] = {
        "id": profile_id("tx", evse_id),
        "stack_level": TX_STACK_LEVEL,
        "charging_profile_purpose": "TxProfile",
        "charging_profile_kind": "Dynamic" if dynamic else "Absolute",
        "transaction_id": transaction_id,
        "charging_schedule": [
            schedule_dict(
                limit,
                phases,
                start=None if dynamic else start,
                duration_s=None if dynamic else duration_s,
                v2x=v2x,
                freq_curve=freq_curve,
            )
        ],
    }
    if dynamic and max_offline_s is not None:
        profile["max_offline_duration"] = max_offline_s
        profile["invalid_after_offline_duration"] = True
    return profile


def tx_default_profile(evse_id: int, limit: Limit, phases: int) -> dict[str, Any]:
    """A persistent TxDefaultProfile at the failsafe limit (no start, no end)."""
    return {
        "id": profile_id("default", evse_id),
        "stack_level": DEFAULT_STACK_LEVEL,
        "charging_profile_purpose": "TxDefaultProfile",
        "charging_profile_kind": "Relative",
        "charging_schedule": [schedule_dict(limit, phases, start=None, duration_s=None)],
    }


def station_max_profile(limit: Limit, phases: int, start: datetime) -> dict[str, Any]:
    """The ChargingStationMaxProfile on EVSE 0: the station's share of the site cap."""
    return {
        "id": profile_id("max", 0),
        "stack_level": 0,
        "charging_profile_purpose": "ChargingStationMaxProfile",
        "charging_profile_kind": "Absolute",
        "charging_schedule": [schedule_dict(limit, phases, start=start, duration_s=None)],
    }


def freq_watt_curve(
    base_w: float, reserve_w: float, *, nominal_hz: float, deadband_hz: float, full_hz: float
) -> list[dict[str, float]]:
    """An OCPP 2.1 Watt–frequency curve for FCR: ``base_w`` inside the deadband, ``±reserve_w``
    at and beyond ``full_hz`` from nominal (over-frequency = consume more), linear between."""
    pts = [
        (nominal_hz - full_hz, base_w - reserve_w),
        (nominal_hz - deadband_hz, base_w),
        (nominal_hz + deadband_hz, base_w),
        (nominal_hz + full_hz, base_w + reserve_w),
    ]
    return [{"frequency": round(f, 3), "power": round(p, 1)} for f, p in pts]


@dataclass(slots=True)
class SendPolicy:
    """Per-station deadband and rate: which EVSE limits to (re)send now.

    ``sent`` holds the last *accepted* limit (kW) per EVSE and when its profile ends.
    """

    deadband_kw: float = 0.2
    min_interval_s: float = 10.0
    refresh_margin_s: float = 120.0
    sent: dict[int, tuple[float, datetime]] = field(default_factory=dict)
    last_loosen: datetime | None = None

    def decide(self, evse_id: int, target_kw: float, now: datetime) -> Decision:
        """What sending ``target_kw`` to ``evse_id`` at ``now`` would be (``None``: skip):
        ``new`` (first profile of a transaction, never held back), ``tighten``, ``loosen``
        (beyond the deadband, rate-limited) or ``refresh`` (the profile is about to end)."""
        prev = self.sent.get(evse_id)
        if prev is None:
            return "new"
        kw, ends = prev
        if target_kw < kw - 1e-9:
            return "tighten"
        if target_kw > kw + self.deadband_kw and self._may_loosen(now):
            return "loosen"
        if ends - now <= timedelta(seconds=self.refresh_margin_s):
            return "refresh"
        return None

    def _may_loosen(self, now: datetime) -> bool:
        last = self.last_loosen
        return last is None or (now - last).total_seconds() >= self.min_interval_s

    def accepted(self, evse_id: int, kw: float, ends: datetime, kind: str, now: datetime) -> None:
        """Remember an accepted limit (a loosening starts the rate window)."""
        self.sent[evse_id] = (kw, ends)
        if kind == "loosen":
            self.last_loosen = now

    def forget(self, evse_id: int) -> None:
        """The transaction ended: the next limit on this EVSE is new."""
        self.sent.pop(evse_id, None)
