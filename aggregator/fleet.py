"""Fleet state: every charging session this replica knows, as a struct of numpy arrays.

:class:`FleetState` owns one *slot* per EVSE, assigned in first-seen order and stable for
the life of the object (slot ``i`` is ``evse_ids[i]``), so the planner and the dispatcher
can index every per-EVSE array by the same integer. Arrays have length ``capacity`` and
grow by doubling; only the first :attr:`FleetState.n_slots` entries are meaningful.

Telemetry is applied with :meth:`FleetState.apply`, which never raises on bad input: it
returns an :class:`ApplyResult` (applied / duplicate / rejected, with a stable reason
code) and counts it in :attr:`FleetState.counters`. Application is idempotent and robust
to the reorderings and replays Kafka produces:

* a repeated message changes nothing (a start of the active session, a meter value not
  newer than the last one, an end of an ended session, an old heartbeat);
* meter values of one session may arrive in any order: the newest reading wins;
* a session end seen before its start is remembered (bounded memory), so the late start
  is rejected instead of resurrecting the session;
* of two sessions started on one EVSE, the later start (by ``ts``, then session id) wins
  and the earlier is ended — even when the later start is itself refused because its
  end was already seen; a start older than the latest one seen is ``stale``.

Times are POSIX seconds (UTC) in arrays and aware datetimes at the interface. Power in
kW, positive = import (charging), negative = export (V2G); energy in kWh, cumulative net
energy of the session (negative after net discharge).

:attr:`FleetState.version` changes whenever the set of active sessions or a session's
parameters change (start, end, replacement, expiry, restore) — not on meter values.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial
from typing import Final, TypeVar

import numpy as np
from numpy.typing import NDArray

from aggregator.errors import InvalidInput, Issue
from aggregator.messages import (
    EvseHeartbeat,
    MeterValue,
    SessionEnded,
    SessionStarted,
    Telemetry,
)
from aggregator.topology import Topology

__all__ = [
    "OVER_REQUEST_TOLERANCE_KWH",
    "POWER_TOLERANCE_KW",
    "POWER_TOLERANCE_REL",
    "ApplyOutcome",
    "ApplyResult",
    "FleetState",
    "SessionState",
    "SnapshotRow",
]

OVER_REQUEST_TOLERANCE_KWH: Final = 0.5
"""Energy above the request (kWh) beyond which a reading is counted as ``over_request``."""
POWER_TOLERANCE_KW: Final = 1.0
POWER_TOLERANCE_REL: Final = 0.1
"""A measured power outside ``[min·(1+rel) − abs, max·(1+rel) + abs]`` of the session's
declared range is rejected as ``power_out_of_range`` (a unit error, typically W for kW)."""


class ApplyOutcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What :meth:`FleetState.apply` did; ``reason`` is a stable snake_case code."""

    outcome: ApplyOutcome
    reason: str | None = None


_APPLIED: Final = ApplyResult(ApplyOutcome.APPLIED)


def _reject(reason: str) -> ApplyResult:
    return ApplyResult(ApplyOutcome.REJECTED, reason)


def _duplicate(reason: str) -> ApplyResult:
    return ApplyResult(ApplyOutcome.DUPLICATE, reason)


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


SnapshotRow = tuple[str, str, str, float, float, float, float, float, float, float, float, float]
"""(session_id, site_id, csms_id, arrival_s, departure_s, last_ts_s, last_meter_s,
energy_requested_kwh, energy_kwh, max_power_kw, min_power_kw, power_kw)."""


def _seconds(t: datetime) -> float:
    if t.tzinfo is None:
        raise ValueError("naive datetime: gridflex works with UTC-aware datetimes only")
    return t.timestamp()


def _datetime(s: float) -> datetime:
    return datetime.fromtimestamp(s, UTC)


_G = TypeVar("_G", bound=np.generic)


def _grown(a: NDArray[_G], size: int) -> NDArray[_G]:
    out = np.zeros(size, dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


class FleetState:
    """Per-EVSE session state in arrays indexed by slot (see the module docstring)."""

    def __init__(
        self,
        topology: Topology,
        *,
        capacity: int = 256,
        session_timeout_s: float = 7200.0,
        ended_memory: int = 100_000,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        if not session_timeout_s > 0:
            raise ValueError("session_timeout_s must be > 0")
        if ended_memory < 0:
            raise ValueError("ended_memory must be >= 0")
        self.topology = topology
        self.session_timeout_s = float(session_timeout_s)
        self.ended_memory = ended_memory
        self.counters: Counter[str] = Counter()
        self.version = 0
        self.evse_ids: list[str] = []
        self.slot_of: dict[str, int] = {}
        self.csms: list[str] = []
        self.session_ids: list[str | None] = []
        self._capacity = capacity
        self._n = 0
        # (evse id, session id) of sessions known to have ended, oldest first.
        self._ended: dict[tuple[str, str], None] = {}
        # Per EVSE, (ts, session id) of the latest start seen, applied or refused.
        self._latest_start: dict[str, tuple[float, str]] = {}
        self.site: NDArray[np.intp] = np.zeros(capacity, dtype=np.intp)
        self.active: NDArray[np.bool_] = np.zeros(capacity, dtype=np.bool_)
        self.arrival_s = self._zeros()
        self.departure_s = self._zeros()
        self.last_ts_s = self._zeros()
        self.last_meter_s = self._zeros()
        self.energy_requested_kwh = self._zeros()
        self.energy_kwh = self._zeros()
        self.max_power_kw = self._zeros()
        self.min_power_kw = self._zeros()
        self.power_kw = self._zeros()

    def _zeros(self) -> NDArray[np.float64]:
        return np.zeros(self._capacity, dtype=np.float64)

    # ------------------------------------------------------------------ slots

    @property
    def n_slots(self) -> int:
        """Number of slots in use (EVSEs ever seen)."""
        return self._n

    @property
    def capacity(self) -> int:
        """Length of the arrays (≥ :attr:`n_slots`)."""
        return self._capacity

    def _grow(self) -> None:
        new = self._capacity * 2
        grown = partial(_grown, size=new)
        self.site = grown(self.site)
        self.active = grown(self.active)
        self.arrival_s = grown(self.arrival_s)
        self.departure_s = grown(self.departure_s)
        self.last_ts_s = grown(self.last_ts_s)
        self.last_meter_s = grown(self.last_meter_s)
        self.energy_requested_kwh = grown(self.energy_requested_kwh)
        self.energy_kwh = grown(self.energy_kwh)
        self.max_power_kw = grown(self.max_power_kw)
        self.min_power_kw = grown(self.min_power_kw)
        self.power_kw = grown(self.power_kw)
        self._capacity = new

    def _slot_for(self, evse_id: str, csms_id: str) -> int:
        slot = self.slot_of.get(evse_id)
        if slot is not None:
            return slot
        if self._n == self._capacity:
            self._grow()
        slot = self._n
        self._n += 1
        self.evse_ids.append(evse_id)
        self.slot_of[evse_id] = slot
        self.csms.append(csms_id)
        self.session_ids.append(None)
        return slot

    def active_slots(self) -> NDArray[np.intp]:
        """Slots with an active session, ascending."""
        return np.flatnonzero(self.active[: self._n])

    # ------------------------------------------------------------------ applying

    def apply(self, msg: Telemetry) -> ApplyResult:
        """Apply one telemetry message; never raises on bad input (see module docstring)."""
        if isinstance(msg, MeterValue):
            result = self._meter(msg)
        elif isinstance(msg, SessionStarted):
            result = self._start(msg)
        elif isinstance(msg, SessionEnded):
            result = self._end(msg)
        elif isinstance(msg, EvseHeartbeat):
            result = self._heartbeat(msg)
        else:
            result = _reject("unknown_type")
        self.counters[result.outcome.value] += 1
        if result.reason is not None:
            self.counters[f"{result.outcome.value}.{result.reason}"] += 1
        return result

    def _feeder_ok(self, slot: int, feeder_id: str) -> bool:
        return self.topology.sites[int(self.site[slot])].feeder_id == feeder_id

    def _remember_ended(self, evse_id: str, session_id: str) -> None:
        if self.ended_memory == 0:
            return
        key = (evse_id, session_id)
        self._ended.pop(key, None)
        self._ended[key] = None
        while len(self._ended) > self.ended_memory:
            del self._ended[next(iter(self._ended))]

    def _deactivate(self, slot: int) -> None:
        session_id = self.session_ids[slot]
        if session_id is not None:
            self._remember_ended(self.evse_ids[slot], session_id)
        self.active[slot] = False
        self.session_ids[slot] = None
        self.version += 1

    def _start(self, msg: SessionStarted) -> ApplyResult:
        site = self.topology.site_index.get(msg.site_id)
        if site is None:
            return _reject("unknown_site")
        if self.topology.sites[site].feeder_id != msg.feeder_id:
            return _reject("site_feeder_mismatch")
        if msg.departure <= msg.ts:
            return _reject("departure_before_arrival")
        ts_s = msg.ts.timestamp()
        slot = self.slot_of.get(msg.evse_id)
        live = slot is not None and bool(self.active[slot])
        if live and slot is not None and self.session_ids[slot] == msg.session_id:
            return _duplicate("same_session")
        ended = (msg.evse_id, msg.session_id) in self._ended
        # The later start wins; ties are broken by session id so that any order agrees.
        key = (ts_s, msg.session_id)
        latest = self._latest_start.get(msg.evse_id)
        if latest is not None and key < latest:
            return _reject("ended_session" if ended else "stale")
        self._latest_start[msg.evse_id] = key
        if live and slot is not None:
            # Superseded, even when this start is refused: a later session began on the EVSE.
            self._deactivate(slot)
        if ended:
            return _reject("ended_session")
        slot = self._slot_for(msg.evse_id, msg.csms_id)
        self.csms[slot] = msg.csms_id
        self.session_ids[slot] = msg.session_id
        self.site[slot] = site
        self.active[slot] = True
        self.arrival_s[slot] = ts_s
        self.departure_s[slot] = msg.departure.timestamp()
        self.last_ts_s[slot] = ts_s
        self.last_meter_s[slot] = ts_s
        self.energy_requested_kwh[slot] = msg.energy_requested_kwh
        self.energy_kwh[slot] = msg.energy_kwh
        self.max_power_kw[slot] = msg.max_power_kw
        self.min_power_kw[slot] = msg.min_power_kw
        self.power_kw[slot] = 0.0
        self.version += 1
        if msg.energy_kwh > msg.energy_requested_kwh + OVER_REQUEST_TOLERANCE_KWH:
            self.counters["over_request"] += 1
        return _APPLIED

    def _meter(self, msg: MeterValue) -> ApplyResult:
        slot = self.slot_of.get(msg.evse_id)
        if slot is None or not self.active[slot] or self.session_ids[slot] != msg.session_id:
            return _reject("unknown_session")
        if not self._feeder_ok(slot, msg.feeder_id):
            return _reject("site_feeder_mismatch")
        ts_s = msg.ts.timestamp()
        if ts_s <= self.last_meter_s[slot]:
            return _duplicate("not_newer")
        hi = self.max_power_kw[slot] * (1.0 + POWER_TOLERANCE_REL) + POWER_TOLERANCE_KW
        lo = self.min_power_kw[slot] * (1.0 + POWER_TOLERANCE_REL) - POWER_TOLERANCE_KW
        if not lo <= msg.power_kw <= hi:
            return _reject("power_out_of_range")
        self.energy_kwh[slot] = msg.energy_kwh
        self.power_kw[slot] = msg.power_kw
        self.last_meter_s[slot] = ts_s
        if ts_s > self.last_ts_s[slot]:
            self.last_ts_s[slot] = ts_s
        if msg.energy_kwh > self.energy_requested_kwh[slot] + OVER_REQUEST_TOLERANCE_KWH:
            self.counters["over_request"] += 1
        return _APPLIED

    def _end(self, msg: SessionEnded) -> ApplyResult:
        slot = self.slot_of.get(msg.evse_id)
        if slot is not None and self.active[slot] and self.session_ids[slot] == msg.session_id:
            if not self._feeder_ok(slot, msg.feeder_id):
                return _reject("site_feeder_mismatch")
            ts_s = msg.ts.timestamp()
            if ts_s > self.last_meter_s[slot]:
                self.energy_kwh[slot] = msg.energy_kwh
                self.last_meter_s[slot] = ts_s
            if ts_s > self.last_ts_s[slot]:
                self.last_ts_s[slot] = ts_s
            self._deactivate(slot)
            return _APPLIED
        if (msg.evse_id, msg.session_id) in self._ended:
            return _duplicate("already_ended")
        # Seen before its start (or after an expiry): remember it so a late start is ignored.
        self._remember_ended(msg.evse_id, msg.session_id)
        return _reject("unknown_session")

    def _heartbeat(self, msg: EvseHeartbeat) -> ApplyResult:
        slot = self.slot_of.get(msg.evse_id)
        if slot is None:
            return _reject("unknown_evse")
        if not self._feeder_ok(slot, msg.feeder_id):
            return _reject("site_feeder_mismatch")
        ts_s = msg.ts.timestamp()
        if ts_s <= self.last_ts_s[slot]:
            return _duplicate("not_newer")
        self.last_ts_s[slot] = ts_s
        return _APPLIED

    # ------------------------------------------------------------------ expiry

    def expire(self, now: datetime) -> list[str]:
        """End sessions silent for ``session_timeout_s`` or that long past departure.

        Returns the EVSE ids whose session was ended; each is counted as ``expired``.
        """
        now_s = _seconds(now)
        n = self._n
        timeout = self.session_timeout_s
        stale = self.active[:n] & (
            (now_s - self.last_ts_s[:n] > timeout) | (now_s - self.departure_s[:n] > timeout)
        )
        expired: list[str] = []
        for slot in np.flatnonzero(stale).tolist():
            self._deactivate(slot)
            expired.append(self.evse_ids[slot])
        if expired:
            self.counters["expired"] += len(expired)
        return expired

    # ------------------------------------------------------------------ views

    def snapshot(self) -> dict[str, SnapshotRow]:
        """Every active session by EVSE id, as hashable, comparable tuples (see SnapshotRow)."""
        out: dict[str, SnapshotRow] = {}
        sites = self.topology.sites
        for slot in self.active_slots().tolist():
            out[self.evse_ids[slot]] = (
                self.session_ids[slot] or "",
                sites[int(self.site[slot])].site_id,
                self.csms[slot],
                float(self.arrival_s[slot]),
                float(self.departure_s[slot]),
                float(self.last_ts_s[slot]),
                float(self.last_meter_s[slot]),
                float(self.energy_requested_kwh[slot]),
                float(self.energy_kwh[slot]),
                float(self.max_power_kw[slot]),
                float(self.min_power_kw[slot]),
                float(self.power_kw[slot]),
            )
        return out

    def session_state(self, evse_id: str) -> SessionState | None:
        """The active session of ``evse_id``; ``None`` (a tombstone) when there is none."""
        slot = self.slot_of.get(evse_id)
        if slot is None or not self.active[slot]:
            return None
        return SessionState(
            evse_id=evse_id,
            session_id=self.session_ids[slot] or "",
            site_id=self.topology.sites[int(self.site[slot])].site_id,
            csms_id=self.csms[slot],
            arrival=_datetime(float(self.arrival_s[slot])),
            departure=_datetime(float(self.departure_s[slot])),
            last_ts=_datetime(float(self.last_ts_s[slot])),
            last_meter=_datetime(float(self.last_meter_s[slot])),
            energy_requested_kwh=float(self.energy_requested_kwh[slot]),
            energy_kwh=float(self.energy_kwh[slot]),
            max_power_kw=float(self.max_power_kw[slot]),
            min_power_kw=float(self.min_power_kw[slot]),
            power_kw=float(self.power_kw[slot]),
        )

    def restore(self, state: SessionState) -> None:
        """Put a session back as it was (rebuild from the compacted state topic).

        Overwrites whatever the EVSE's slot holds. Raises :class:`InvalidInput` for an
        unknown site or an impossible power range.
        """
        site = self.topology.site_index.get(state.site_id)
        issues: list[Issue] = []
        if site is None:
            issues.append(Issue("site_id", f"unknown site {state.site_id!r}", (state.evse_id,)))
        if not state.min_power_kw <= 0.0 < state.max_power_kw:
            issues.append(
                Issue("max_power_kw", "need min_power_kw <= 0 < max_power_kw", (state.evse_id,))
            )
        if issues or site is None:
            raise InvalidInput(issues)
        slot = self._slot_for(state.evse_id, state.csms_id)
        self.csms[slot] = state.csms_id
        self.session_ids[slot] = state.session_id
        self._ended.pop((state.evse_id, state.session_id), None)
        key = (_seconds(state.arrival), state.session_id)
        self._latest_start[state.evse_id] = max(key, self._latest_start.get(state.evse_id, key))
        self.site[slot] = site
        self.active[slot] = True
        self.arrival_s[slot] = _seconds(state.arrival)
        self.departure_s[slot] = _seconds(state.departure)
        self.last_ts_s[slot] = _seconds(state.last_ts)
        self.last_meter_s[slot] = _seconds(state.last_meter)
        self.energy_requested_kwh[slot] = state.energy_requested_kwh
        self.energy_kwh[slot] = state.energy_kwh
        self.max_power_kw[slot] = state.max_power_kw
        self.min_power_kw[slot] = state.min_power_kw
        self.power_kw[slot] = state.power_kw
        self.version += 1

    # ------------------------------------------------------------------ envelope

    def envelope(
        self, now: datetime, dt_s: float
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Per-slot power range ``(lo, hi)`` (kW, length :attr:`n_slots`) for the next ``dt_s``.

        ``hi`` never delivers more than the remaining requested energy within ``dt_s``;
        ``lo`` never discharges more than the session has charged. Inactive or departed
        sessions get ``lo = hi = 0``. Always ``lo <= 0 <= hi``.
        """
        if not dt_s > 0:
            raise ValueError("dt_s must be > 0")
        n = self._n
        dt_h = dt_s / 3600.0
        energy = self.energy_kwh[:n]
        remaining = self.energy_requested_kwh[:n] - energy
        hi = np.clip(np.minimum(self.max_power_kw[:n], remaining / dt_h), 0.0, None)
        lo = np.minimum(np.maximum(self.min_power_kw[:n], -np.maximum(energy, 0.0) / dt_h), 0.0)
        live = self.active[:n] & (self.departure_s[:n] > _seconds(now))
        hi[~live] = 0.0
        lo[~live] = 0.0
        return lo, hi
