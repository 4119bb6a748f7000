"""The fleet's per-slot numbers as one numpy structured array (one dtype per table).

:data:`SLOT_DTYPE` is the single definition of what gridflex keeps per EVSE slot: the
site index, whether a session is active, its times (POSIX seconds, UTC), energies (kWh)
and powers (kW, positive = import). Every per-slot column the fleet shows
(``fleet.energy_kwh``, ``fleet.site`` …) is a *view* of one column of this table, so
growing, snapshot and restore are row operations on one array (power-grid-model's
``initialize_array`` habit) instead of eleven parallel arrays spelt out in several places.

Strings (EVSE, CSMS and session ids) stay in Python lists beside the table: they are
looked up by dict, never computed with.

Invariants:

* a table has ``capacity`` rows; rows at or past ``n_slots`` are all zero (inactive);
* :func:`grown` keeps every earlier row bit for bit and zero-fills the new ones;
* ``meter_lo_kw``/``meter_hi_kw`` are derived from ``min_power_kw``/``max_power_kw`` by
  :func:`meter_bounds` whenever a session starts or is restored (never written elsewhere).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import numpy as np
from numpy.typing import NDArray

from aggregator.errors import Issue

__all__ = [
    "DEFAULT_MIN_CURRENT_A",
    "DEFAULT_PHASES",
    "FLOAT_COLUMNS",
    "POWER_TOLERANCE_KW",
    "POWER_TOLERANCE_REL",
    "SLOT_DTYPE",
    "SessionState",
    "SnapshotRow",
    "charge_profile",
    "grown",
    "meter_bounds",
    "new_table",
    "state_from_row",
    "state_issues",
    "to_datetime",
    "to_seconds",
]

POWER_TOLERANCE_KW: Final = 1.0
POWER_TOLERANCE_REL: Final = 0.1
"""A measured power outside ``[min·(1+rel) − abs, max·(1+rel) + abs]`` of the session's
declared range is rejected as ``power_out_of_range`` (a unit error, typically W for kW)."""

FLOAT_COLUMNS: Final = (
    "arrival_s",
    "departure_s",
    "last_ts_s",
    "last_meter_s",
    "energy_requested_kwh",
    "energy_kwh",
    "max_power_kw",
    "min_power_kw",
    "power_kw",
    "meter_lo_kw",
    "meter_hi_kw",
)
"""The float64 columns, in table order (times in POSIX s, energy in kWh, power in kW)."""

SLOT_DTYPE: Final = np.dtype(
    [(name, np.float64) for name in FLOAT_COLUMNS]
    + [
        ("site", np.intp),
        ("active", np.bool_),
        ("min_charge_kw", np.float64),
        ("phase_w", np.float64, (3,)),
    ],
    align=True,
)
"""One row per EVSE slot. ``site`` indexes ``Topology.sites``; ``active`` marks a live
session; ``meter_lo_kw``/``meter_hi_kw`` are the accepted range of a measured power;
``min_charge_kw`` is the least charging power the car follows (0 or at least this, see
:func:`charge_profile`); ``phase_w`` the share of its power on L1, L2, L3."""

DEFAULT_PHASES: Final = 3
DEFAULT_MIN_CURRENT_A: Final = 6.0
"""IEC 61851 AC charging: below 6 A per phase a car pauses (the pilot's minimum)."""

_THREE: Final = (1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0)
_ON_PHASE: Final = {"L1": (1.0, 0.0, 0.0), "L2": (0.0, 1.0, 0.0), "L3": (0.0, 0.0, 1.0)}


def charge_profile(
    *,
    phases: int,
    phase: str | None,
    min_current_a: float,
    voltage_v: float,
    max_power_kw: float,
) -> tuple[float, tuple[float, float, float]]:
    """``(min_charge_kw, phase_w)`` of an AC session.

    ``min_charge_kw = phases × min_current_a × voltage_v / 1000``, never above the session's
    ``max_power_kw`` (a car declaring less than its minimum is held to its declared max).
    ``phase_w`` is the share of the power counted on each phase: a third each for a
    three-phase car; all of it on its phase for a single-phase car on a known phase, and
    all of it on *every* phase when its phase is unknown (the worst case).
    """
    min_kw = min(phases * min_current_a * voltage_v / 1000.0, max_power_kw)
    if phases == 3:
        return min_kw, _THREE
    return min_kw, _ON_PHASE.get(phase or "", (1.0, 1.0, 1.0))


def new_table(capacity: int) -> NDArray[np.void]:
    """A zeroed table of ``capacity`` rows of :data:`SLOT_DTYPE`."""
    return np.zeros(capacity, dtype=SLOT_DTYPE)


def grown(table: NDArray[np.void], capacity: int) -> NDArray[np.void]:
    """A copy of ``table`` with ``capacity`` rows (≥ its length); new rows are zero."""
    if capacity < table.shape[0]:
        raise ValueError("a table never shrinks")
    out = new_table(capacity)
    out[: table.shape[0]] = table
    return out


def meter_bounds(min_power_kw: float, max_power_kw: float) -> tuple[float, float]:
    """The range ``(lo, hi)`` (kW) a meter value of a session may report."""
    hi = max_power_kw * (1.0 + POWER_TOLERANCE_REL) + POWER_TOLERANCE_KW
    lo = min_power_kw * (1.0 + POWER_TOLERANCE_REL) - POWER_TOLERANCE_KW
    return lo, hi


def to_seconds(t: datetime) -> float:
    """POSIX seconds of an aware datetime; naive datetimes are refused."""
    if t.tzinfo is None:
        raise ValueError("naive datetime: gridflex works with UTC-aware datetimes only")
    return t.timestamp()


def to_datetime(s: float) -> datetime:
    """The UTC datetime of POSIX seconds ``s``."""
    return datetime.fromtimestamp(s, UTC)


@dataclass(frozen=True, slots=True)
class SessionState:
    """One active session, as published on the compacted ``gridflex.state`` topic."""

    evse_id: str
    session_id: str
    site_id: str
    csms_id: str
    arrival: datetime
    departure: datetime
    last_ts: datetime
    last_meter: datetime
    energy_requested_kwh: float
    energy_kwh: float
    max_power_kw: float
    min_power_kw: float
    power_kw: float
    # the car's profile (see charge_profile); None in records written before it was
    # carried: restored as the default AC car (3 phases, 6 A)
    min_charge_kw: float | None = None
    phase_w: tuple[float, float, float] | None = None


SnapshotRow = tuple[
    str, str, str, float, float, float, float, float, float, float, float, float, float,
    float, float, float,
]  # fmt: skip
"""(session_id, site_id, csms_id, arrival_s, departure_s, last_ts_s, last_meter_s,
energy_requested_kwh, energy_kwh, max_power_kw, min_power_kw, power_kw, min_charge_kw,
phase_w L1, L2, L3)."""


def state_from_row(evse_id: str, row: SnapshotRow) -> SessionState:
    """The :class:`SessionState` of a :data:`SnapshotRow` (built only when it is needed:
    a row is a cheap tuple, a state costs a few microseconds)."""
    return SessionState(
        evse_id=evse_id,
        session_id=row[0],
        site_id=row[1],
        csms_id=row[2],
        arrival=to_datetime(row[3]),
        departure=to_datetime(row[4]),
        last_ts=to_datetime(row[5]),
        last_meter=to_datetime(row[6]),
        energy_requested_kwh=row[7],
        energy_kwh=row[8],
        max_power_kw=row[9],
        min_power_kw=row[10],
        power_kw=row[11],
        # NaN: a row made from a record that did not carry the car's profile
        min_charge_kw=None if math.isnan(row[12]) else row[12],
        phase_w=None if math.isnan(row[13]) else (row[13], row[14], row[15]),
    )


def state_issues(state: SessionState, *, known_site: bool) -> list[Issue]:
    """Every reason why ``state`` cannot be restored (codes ``unknown_site``, ``power_range``)."""
    issues: list[Issue] = []
    if not known_site:
        issues.append(
            Issue(
                field="site_id",
                code="unknown_site",
                ids=(state.evse_id, state.site_id),
                message=f"unknown site {state.site_id!r}",
            )
        )
    if not state.min_power_kw <= 0.0 < state.max_power_kw:
        issues.append(
            Issue(
                field="max_power_kw",
                code="power_range",
                ids=(state.evse_id,),
                message="need min_power_kw <= 0 < max_power_kw",
            )
        )
    if state.min_charge_kw is not None and not 0.0 <= state.min_charge_kw <= state.max_power_kw:
        issues.append(
            Issue(
                field="min_charge_kw",
                code="charge_profile",
                ids=(state.evse_id,),
                message="need 0 <= min_charge_kw <= max_power_kw",
            )
        )
    if state.phase_w is not None and not (
        all(0.0 <= w <= 1.0 for w in state.phase_w) and sum(state.phase_w) > 0.0
    ):
        issues.append(
            Issue(
                field="phase_w",
                code="charge_profile",
                ids=(state.evse_id,),
                message="need each phase share in [0, 1], not all 0",
            )
        )
    return issues
