"""A reference CSMS-side consumer of setpoint batches: leases, heartbeats and failsafe.

:class:`ReferenceCsms` plays the charging station management system at the far end of
``gridflex.setpoints`` so the failure behaviour of DESIGN.md ("Failure is normal") can be
tested end to end. It implements the core's
:class:`~aggregator.interfaces.SetpointSink` (``publish`` = :meth:`ReferenceCsms.apply`)
and runs one :mod:`aggregator.sim.lpc` state machine per EVSE:

* A batch for another CSMS, with ``seq`` not above the last applied one (stale or
  replayed), or already expired on arrival (``valid_until ≤ now``) is dropped with a
  reason and counted; nothing else changes.
* An applied batch is a heartbeat for the whole CSMS, then per EVSE a limit write that is
  a **lease** (the setpoint, until ``valid_until``) and a write of the failsafe values
  (the batch's ``failsafe_kw`` and the configured failsafe duration).
* :meth:`ReferenceCsms.limit_kw` is what an EVSE may draw now: the leased setpoint while
  ``now < valid_until``; after it, the EVSE's last failsafe limit for
  ``failsafe_duration_s`` counted from ``valid_until``; then ``None`` (unlimited /
  autonomous) until the next batch. With the defaults (setpoint validity = heartbeat
  timeout = 120 s) the lease ends before or with the heartbeat; if heartbeats stop
  earlier, the failsafe starts at the heartbeat timeout instead.
* Negative setpoints (V2G) are leased as they are; a failsafe is an import cap ≥ 0, so
  a negative power is never commanded once the lease has ended. A batch failsafe value
  that is not a valid import cap (only possible for batches built without validation) is
  rejected and counted; the EVSE keeps its previous failsafe limit.
* An EVSE the CSMS has never had a batch for is in ``init`` from the CSMS's start: held
  at ``default_failsafe_kw`` for the heartbeat timeout, then unlimited/autonomous
  ([LPC-901/1], [LPC-906]).

The states only change on calls (no timer thread): every query advances the EVSE's state
machine to ``now`` first, and timed transitions happen at their deadlines, so a query
made late sees exactly what a query at every second would have seen.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime

from aggregator.errors import InvalidInput
from aggregator.interfaces import Clock
from aggregator.messages import SetpointBatch
from aggregator.sim.lpc import (
    FailsafeValues,
    Heartbeat,
    LimitReceived,
    LpcState,
    LpcStateName,
    advance,
    allowed_power_kw,
    initial_state,
    step,
)

__all__ = ["ReferenceCsms"]


class ReferenceCsms:
    """One CSMS applying gridflex's setpoint leases to its EVSEs (LPC semantics per EVSE)."""

    def __init__(
        self,
        csms_id: str,
        clock: Clock,
        *,
        heartbeat_timeout_s: float = 120.0,
        failsafe_duration_s: float = 7_200.0,
        default_failsafe_kw: float = 4.2,
    ) -> None:
        self.csms_id = csms_id
        self.clock = clock
        self.started_at = clock.now()
        self.failsafe_duration_s = float(failsafe_duration_s)
        # validates every value at once (raises InvalidInput)
        self._fresh = initial_state(
            self.started_at,
            failsafe_kw=default_failsafe_kw,
            failsafe_duration_s=failsafe_duration_s,
            heartbeat_timeout_s=heartbeat_timeout_s,
        )
        self._evse: dict[str, LpcState] = {}
        self.last_seq: int | None = None
        self.counters: Counter[str] = Counter()

    # ------------------------------------------------------------------ input

    def publish(self, batch: SetpointBatch) -> None:
        """:class:`~aggregator.interfaces.SetpointSink`: apply the batch."""
        self.apply(batch)

    def apply(self, batch: SetpointBatch) -> str | None:
        """Apply one batch at the clock's now; returns why it was dropped, or ``None``."""
        now = self.clock.now()
        reason = self._drop_reason(batch, now)
        if reason is not None:
            self.counters[f"dropped.{reason}"] += 1
            return reason
        self.last_seq = batch.seq
        for evse_id in batch.evse_ids:
            self._evse.setdefault(evse_id, self._fresh)
        self.heartbeat(now)  # the batch itself shows the aggregator is alive
        for evse_id, power_kw, failsafe_kw in zip(
            batch.evse_ids, batch.power_kw, batch.failsafe_kw, strict=True
        ):
            lease = LimitReceived(power_kw, until=batch.valid_until, lease=True)
            m = step(self._evse[evse_id], lease, now)
            try:
                m = step(m, FailsafeValues(failsafe_kw, self.failsafe_duration_s), now)
            except InvalidInput:
                self.counters["rejected.failsafe_kw"] += 1
            self._evse[evse_id] = m
        self.counters["applied"] += 1
        return None

    def heartbeat(self, now: datetime | None = None) -> None:
        """A heartbeat from gridflex, for every EVSE of this CSMS."""
        t = self.clock.now() if now is None else now
        hb = Heartbeat()
        for evse_id, m in self._evse.items():
            self._evse[evse_id] = step(m, hb, t)
        self.counters["heartbeats"] += 1

    def _drop_reason(self, batch: SetpointBatch, now: datetime) -> str | None:
        if batch.csms_id != self.csms_id:
            return "other_csms"
        if self.last_seq is not None and batch.seq <= self.last_seq:
            return "stale_seq"
        if batch.valid_until <= now:
            return "expired"
        if not (len(batch.evse_ids) == len(batch.power_kw) == len(batch.failsafe_kw)):
            return "malformed"
        return None

    # ---------------------------------------------------------------- queries

    def lpc(self, evse_id: str, now: datetime | None = None) -> LpcState:
        """The EVSE's LPC state machine, advanced to ``now`` (default: the clock's now)."""
        t = self.clock.now() if now is None else now
        m = advance(self._evse.get(evse_id, self._fresh), t)
        if evse_id in self._evse:
            self._evse[evse_id] = m
        return m

    def state(self, evse_id: str, now: datetime | None = None) -> LpcStateName:
        """The EVSE's LPC state at ``now``."""
        return self.lpc(evse_id, now).state

    def limit_kw(self, evse_id: str, now: datetime | None = None) -> float | None:
        """What the EVSE may draw at ``now`` (kW; ``None`` = unlimited)."""
        return allowed_power_kw(self.lpc(evse_id, now))

    @property
    def evse_ids(self) -> tuple[str, ...]:
        """EVSEs this CSMS has had a batch for, in first-seen order."""
        return tuple(self._evse)

    def limits_kw(self, now: datetime | None = None) -> Mapping[str, float | None]:
        """:meth:`limit_kw` of every known EVSE."""
        return {e: self.limit_kw(e, now) for e in self._evse}
