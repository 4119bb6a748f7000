"""Fleet state: every charging session this replica knows, one table row per EVSE slot.

:class:`FleetState` owns one *slot* per EVSE, assigned in first-seen order and stable for
the life of the object (slot ``i`` is ``evse_ids[i]``), so the planner and the dispatcher
can index every per-EVSE column by the same integer. The numbers live in one structured
array of :data:`~aggregator.fleet.table.SLOT_DTYPE` (``capacity`` rows, grown by
doubling); ``fleet.energy_kwh``, ``fleet.site``, ``fleet.active`` … are views of its
columns, so callers index them as before. Only the first :attr:`FleetState.n_slots` rows
are meaningful.

Telemetry is applied with :meth:`FleetState.apply`, which never raises on bad input: it
returns an :class:`ApplyResult` (applied / duplicate / rejected, with a stable reason
code and the ids concerned) and counts it in :attr:`FleetState.counters`. Application is
idempotent and robust to the reorderings and replays Kafka produces:

* a repeated message changes nothing (a start of the active session, a meter value not
  newer than the last one, an end of an ended session, an old heartbeat); a *newer*
  start of the active session revises its departure and energy request (the EV's needs
  told after the start) — the newest wins, whatever the order;
* meter values of one session may arrive in any order: the newest reading wins;
* a session end seen before its start is remembered (bounded memory), so the late start
  is rejected instead of resurrecting the session;
* of two sessions started on one EVSE, the later start (by ``ts``, then session id) wins
  and the earlier is ended — even when the later start is itself refused because its
  end was already seen; a start older than the latest one seen is ``stale``.

**EVSE identity.** An EVSE id belongs to one CSMS: the one that first announced it to
this fleet state, or that of its latest :meth:`~FleetState.restore` (which trusts the
state topic), or of :meth:`~FleetState.bind` (EVSEs known only from leases taken over).
A ``session_started`` or ``evse_heartbeat`` naming that EVSE under another CSMS is
rejected as ``evse_owned_by_other_csms`` with the ids (EVSE, owning CSMS, claiming CSMS)
and changes nothing: the real session, its later meter values and the owning CSMS's
batches are untouched. We reject rather than key slots by (CSMS, EVSE) because setpoint
batches, the state topic and the CSMS-side lease all name an EVSE by its id alone; two
live slots with one id would make the setpoint in force ambiguous. The binding outlives
the session (an ended EVSE's last lease may still be in force at its CSMS), so moving an
EVSE to another CSMS takes a resync of the replica. A replica that never saw an EVSE
(nor bound it) accepts the first CSMS that announces it.

Times are POSIX seconds (UTC) in the table and aware datetimes at the interface. Power
in kW, positive = import (charging), negative = export (V2G); energy in kWh, cumulative
net energy of the session (negative after net discharge).

:attr:`FleetState.version` changes whenever the set of active sessions or a session's
parameters change (start, end, replacement, expiry, restore) — not on meter values.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from aggregator.errors import InvalidInput
from aggregator.fleet.columns import SlotColumns
from aggregator.fleet.envelopes import power_range, session_envelopes
from aggregator.fleet.outcome import (
    APPLIED,
    EVSE_OWNED_BY_OTHER_CSMS,
    OVER_REQUEST_TOLERANCE_KWH,
    ApplyResult,
    duplicate,
    reject,
)
from aggregator.fleet.table import (
    DEFAULT_MIN_CURRENT_A,
    DEFAULT_PHASES,
    SessionState,
    SnapshotRow,
    charge_profile,
    grown,
    meter_bounds,
    new_table,
    state_from_row,
    state_issues,
    to_seconds,
)
from aggregator.messages import (
    EvseHeartbeat,
    MeterValue,
    SessionEnded,
    SessionStarted,
    Telemetry,
)
from aggregator.pebc import SessionEnvelopes
from aggregator.topology import Topology

__all__ = ["FleetState"]


class FleetState(SlotColumns):
    """Per-EVSE session state in one table indexed by slot (see the module docstring)."""

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
        self._n = 0
        self._site_feeder_id = tuple(s.feeder_id for s in topology.sites)
        # (evse id, session id) of sessions known to have ended, oldest first.
        self._ended: dict[tuple[str, str], None] = {}
        # Per EVSE, (ts, session id) of the latest start seen, applied or refused.
        self._latest_start: dict[str, tuple[float, str]] = {}
        # EVSE -> CSMS for EVSEs bound without a slot (:meth:`bind`)
        self._bound: dict[str, str] = {}
        self._use_table(new_table(capacity))

    # ------------------------------------------------------------------ slots

    @property
    def n_slots(self) -> int:
        """Number of slots in use (EVSEs ever seen)."""
        return self._n

    @property
    def capacity(self) -> int:
        """Rows of the table (≥ :attr:`n_slots`)."""
        return int(self._table.shape[0])

    def _slot_for(self, evse_id: str, csms_id: str) -> int:
        slot = self.slot_of.get(evse_id)
        if slot is not None:
            return slot
        if self._n == self._table.shape[0]:
            self._use_table(grown(self._table, 2 * self._n))
        slot = self._n
        self._n += 1
        self._bound.pop(evse_id, None)
        self.evse_ids.append(evse_id)
        self.slot_of[evse_id] = slot
        self.csms.append(csms_id)
        self.session_ids.append(None)
        return slot

    def active_slots(self) -> NDArray[np.intp]:
        """Slots with an active session, ascending."""
        return np.flatnonzero(self._active[: self._n])

    def owner(self, evse_id: str) -> str | None:
        """The CSMS an EVSE id belongs to (see the module docstring), ``None`` if unseen."""
        slot = self.slot_of.get(evse_id)
        return self._bound.get(evse_id) if slot is None else self.csms[slot]

    def bind(self, evse_id: str, csms_id: str) -> bool:
        """Bind an EVSE id to its CSMS without a session (no slot, no row): a replica that
        takes over leases naming EVSEs it has no session for keeps their owners, so a
        foreign claim is refused there too. ``False`` (nothing changes) when the EVSE is
        already bound to another CSMS."""
        owner = self.owner(evse_id)
        if owner is not None:
            return owner == csms_id
        self._bound[evse_id] = csms_id
        return True

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
            result = reject("unknown_type")
        self.counters[result.outcome.value] += 1
        if result.reason is not None:
            self.counters[f"{result.outcome.value}.{result.reason}"] += 1
        return result

    def _feeder_ok(self, slot: int, feeder_id: str) -> bool:
        return bool(self._site_feeder_id[self._site[slot]] == feeder_id)

    def _foreign(self, slot: int | None, evse_id: str, csms_id: str) -> ApplyResult | None:
        owner = self.csms[slot] if slot is not None else self._bound.get(evse_id)
        if owner is None or owner == csms_id:
            return None
        return reject(EVSE_OWNED_BY_OTHER_CSMS, evse_id, owner, csms_id)

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
        self._active[slot] = False
        self.session_ids[slot] = None
        self.version += 1

    def _start(self, msg: SessionStarted) -> ApplyResult:
        site = self.topology.site_index.get(msg.site_id)
        if site is None:
            return reject("unknown_site", msg.site_id)
        if self._site_feeder_id[site] != msg.feeder_id:
            return reject("site_feeder_mismatch", msg.site_id, msg.feeder_id)
        if msg.departure <= msg.ts:
            return reject("departure_before_arrival")
        slot = self.slot_of.get(msg.evse_id)
        foreign = self._foreign(slot, msg.evse_id, msg.csms_id)
        if foreign is not None:
            return foreign  # before anything else: a foreign claim must change nothing
        ts_s = msg.ts.timestamp()
        live = slot is not None and bool(self._active[slot])
        key = (ts_s, msg.session_id)
        latest = self._latest_start.get(msg.evse_id)
        if live and slot is not None and self.session_ids[slot] == msg.session_id:
            return self._revise(slot, msg, key, latest)
        ended = (msg.evse_id, msg.session_id) in self._ended
        # The later start wins; ties are broken by session id so that any order agrees.
        if latest is not None and key < latest:
            return reject("ended_session" if ended else "stale")
        self._latest_start[msg.evse_id] = key
        if live and slot is not None:
            # Superseded, even when this start is refused: a later session began on the EVSE.
            self._deactivate(slot)
        if ended:
            return reject("ended_session")
        slot = self._slot_for(msg.evse_id, msg.csms_id)
        self.session_ids[slot] = msg.session_id
        lo, hi = meter_bounds(msg.min_power_kw, msg.max_power_kw)
        min_kw, phase_w = charge_profile(
            phases=msg.phases,
            phase=msg.phase,
            min_current_a=msg.min_current_a,
            voltage_v=self.topology.sites[site].voltage_v,
            max_power_kw=msg.max_power_kw,
        )
        self._table[slot] = (
            ts_s,
            msg.departure.timestamp(),
            ts_s,
            ts_s,
            msg.energy_requested_kwh,
            msg.energy_kwh,
            msg.max_power_kw,
            msg.min_power_kw,
            0.0,
            lo,
            hi,
            site,
            True,
            min_kw,
            phase_w,
        )
        self.version += 1
        if msg.energy_kwh > msg.energy_requested_kwh + OVER_REQUEST_TOLERANCE_KWH:
            self.counters["over_request"] += 1
        return APPLIED

    def _revise(
        self,
        slot: int,
        msg: SessionStarted,
        key: tuple[float, str],
        latest: tuple[float, str] | None,
    ) -> ApplyResult:
        """A newer start of the live session revises its departure and energy request
        (the EV told its needs after the start: ISO 15118 NotifyEVChargingNeeds); the same
        or an older one changes nothing."""
        if latest is not None and key <= latest:
            return duplicate("same_session")
        self._latest_start[msg.evse_id] = key
        row = self._table[slot]
        departure_s = msg.departure.timestamp()
        if (
            row["departure_s"] == departure_s
            and row["energy_requested_kwh"] == msg.energy_requested_kwh
        ):
            return duplicate("same_session")
        row["departure_s"] = departure_s
        row["energy_requested_kwh"] = msg.energy_requested_kwh
        self.version += 1
        return APPLIED

    def _meter(self, msg: MeterValue) -> ApplyResult:
        slot = self.slot_of.get(msg.evse_id)
        if slot is None or not self._active[slot] or self.session_ids[slot] != msg.session_id:
            return reject("unknown_session")
        if self._site_feeder_id[self._site[slot]] != msg.feeder_id:
            return reject("site_feeder_mismatch")
        ts_s = msg.ts.timestamp()
        if ts_s <= self._last_meter_s[slot]:
            return duplicate("not_newer")
        power = msg.power_kw
        if not self._meter_lo_kw[slot] <= power <= self._meter_hi_kw[slot]:
            return reject("power_out_of_range")
        energy = msg.energy_kwh
        self._energy_kwh[slot] = energy
        self._power_kw[slot] = power
        self._last_meter_s[slot] = ts_s
        if ts_s > self._last_ts_s[slot]:
            self._last_ts_s[slot] = ts_s
        if energy > self._energy_requested_kwh[slot] + OVER_REQUEST_TOLERANCE_KWH:
            self.counters["over_request"] += 1
        return APPLIED

    def _end(self, msg: SessionEnded) -> ApplyResult:
        slot = self.slot_of.get(msg.evse_id)
        if slot is not None and self._active[slot] and self.session_ids[slot] == msg.session_id:
            if not self._feeder_ok(slot, msg.feeder_id):
                return reject("site_feeder_mismatch")
            ts_s = msg.ts.timestamp()
            if ts_s > self._last_meter_s[slot]:
                self._energy_kwh[slot] = msg.energy_kwh
                self._last_meter_s[slot] = ts_s
            if ts_s > self._last_ts_s[slot]:
                self._last_ts_s[slot] = ts_s
            self._deactivate(slot)
            return APPLIED
        if (msg.evse_id, msg.session_id) in self._ended:
            return duplicate("already_ended")
        # Seen before its start (or after an expiry): remember it so a late start is ignored.
        self._remember_ended(msg.evse_id, msg.session_id)
        return reject("unknown_session")

    def _heartbeat(self, msg: EvseHeartbeat) -> ApplyResult:
        slot = self.slot_of.get(msg.evse_id)
        if slot is None:
            return reject("unknown_evse", msg.evse_id)
        foreign = self._foreign(slot, msg.evse_id, msg.csms_id)
        if foreign is not None:
            return foreign
        if not self._feeder_ok(slot, msg.feeder_id):
            return reject("site_feeder_mismatch")
        ts_s = msg.ts.timestamp()
        if ts_s <= self._last_ts_s[slot]:
            return duplicate("not_newer")
        self._last_ts_s[slot] = ts_s
        return APPLIED

    # ------------------------------------------------------------------ expiry

    def expire(self, now: datetime) -> list[str]:
        """End sessions silent for ``session_timeout_s`` or that long past departure.

        Returns the EVSE ids whose session was ended; each is counted as ``expired``.
        """
        now_s = to_seconds(now)
        rows = self._table[: self._n]
        timeout = self.session_timeout_s
        stale = rows["active"] & (
            (now_s - rows["last_ts_s"] > timeout) | (now_s - rows["departure_s"] > timeout)
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
        slots = self.active_slots()
        rows = self._table[slots]  # one row copy per active session
        for slot, row in zip(slots.tolist(), rows.tolist(), strict=True):
            out[self.evse_ids[slot]] = (
                self.session_ids[slot] or "",
                sites[row[11]].site_id,
                self.csms[slot],
                *row[:9],
                row[13],
                *row[14],
            )
        return out

    def session_row(self, evse_id: str) -> SnapshotRow | None:
        """The active session of ``evse_id`` as a :data:`SnapshotRow`; ``None`` when there
        is none (one row copy: cheap enough for every meter value)."""
        slot = self.slot_of.get(evse_id)
        if slot is None or not self._active[slot]:
            return None
        row = self._table[slot].tolist()
        return (
            self.session_ids[slot] or "",
            self.topology.sites[row[11]].site_id,
            self.csms[slot],
            *row[:9],
            row[13],
            *row[14],
        )

    def session_state(self, evse_id: str) -> SessionState | None:
        """The active session of ``evse_id``; ``None`` (a tombstone) when there is none."""
        row = self.session_row(evse_id)
        return None if row is None else state_from_row(evse_id, row)

    def restore(self, state: SessionState) -> None:
        """Put a session back as it was (rebuild from the compacted state topic).

        Overwrites whatever the EVSE's row holds and binds the EVSE to ``state.csms_id``.
        Raises :class:`InvalidInput` for an unknown site or an impossible power range.
        """
        site = self.topology.site_index.get(state.site_id)
        issues = state_issues(state, known_site=site is not None)
        if issues or site is None:
            raise InvalidInput(issues)
        slot = self._slot_for(state.evse_id, state.csms_id)
        self.csms[slot] = state.csms_id
        self.session_ids[slot] = state.session_id
        self._ended.pop((state.evse_id, state.session_id), None)
        arrival_s = to_seconds(state.arrival)
        key = (arrival_s, state.session_id)
        self._latest_start[state.evse_id] = max(key, self._latest_start.get(state.evse_id, key))
        lo, hi = meter_bounds(state.min_power_kw, state.max_power_kw)
        min_kw, phase_w = charge_profile(  # a record without the car's profile
            phases=DEFAULT_PHASES,
            phase=None,
            min_current_a=DEFAULT_MIN_CURRENT_A,
            voltage_v=self.topology.sites[site].voltage_v,
            max_power_kw=state.max_power_kw,
        )
        if state.min_charge_kw is not None and state.phase_w is not None:
            min_kw, phase_w = state.min_charge_kw, state.phase_w
        self._table[slot] = (
            arrival_s,
            to_seconds(state.departure),
            to_seconds(state.last_ts),
            to_seconds(state.last_meter),
            state.energy_requested_kwh,
            state.energy_kwh,
            state.max_power_kw,
            state.min_power_kw,
            state.power_kw,
            lo,
            hi,
            site,
            True,
            min_kw,
            phase_w,
        )
        self.version += 1

    # ------------------------------------------------------------------ envelopes

    def envelope(
        self, now: datetime, dt_s: float
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Per-slot power range ``(lo, hi)`` (kW, length :attr:`n_slots`) for the next ``dt_s``.

        See :func:`aggregator.fleet.envelopes.power_range`.
        """
        return power_range(self._table[: self._n], now, dt_s)

    def session_envelopes(
        self, slots: NDArray[np.intp], *, start: datetime, step_s: float, steps: int, now: datetime
    ) -> SessionEnvelopes:
        """PEBC envelopes and energy constraints of ``slots`` on a plan's time grid.

        See :func:`aggregator.fleet.envelopes.session_envelopes`.
        """
        return session_envelopes(
            self._table[slots],
            [self.evse_ids[i] for i in slots.tolist()],
            start=start,
            step_s=step_s,
            steps=steps,
            now=now,
        )
