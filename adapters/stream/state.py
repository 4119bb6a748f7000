"""The compacted state topic (write, coalesced; restore) and the takeover reads.

**Writing.** :class:`StateWriter` is an :class:`~aggregator.service.events.EventSink`: it
takes the service's :class:`~aggregator.service.events.SessionChanged` events and writes
the latest state of a session (keyed by EVSE id; a tombstone when it ended) to the state
topic:

* at once when a session starts (a session id not written before) or ends;
* otherwise coalesced: at most once per EVSE per ``interval_s`` (default 10 s), with the
  newest state at that moment;
* everything still pending on :meth:`StateWriter.write_all` (revocation, shutdown).

**Resync loses nothing.** A replica that takes a feeder over restores the state topic and
replays telemetry from the group's committed offsets. A coalesced write leaves a window in
which a record's effect is applied but not yet in the state topic; the writer therefore
remembers, per partition, the offset of the oldest record whose effect is not yet written,
and :meth:`StateWriter.committable` never lets the runner commit past it. So at every
moment: committed offset of a partition ≤ first record whose effect is missing from the
(flushed) state topic — a SIGKILL at any point loses at most effects that the new owner
replays (telemetry is idempotent: duplicates are recognised by the fleet). The runner
commits only after :meth:`~adapters.stream.transport.Transport.flush` returned for the
state records it wrote (see :mod:`adapters.stream.runner`).

**Takeover reads.** :func:`restore_sessions` reads the whole state topic (latest value per
key, tombstones drop the key); :func:`recent_batches` reads the setpoints topic's recent
records and keeps, per CSMS, the newest batch (by ``seq``) still within its
``valid_until`` — the leases the previous owner left in force.
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import TypeAdapter

from adapters.stream.topics import feeder_partition
from adapters.stream.transport import TopicPartition, Transport
from aggregator.fleet import SessionState
from aggregator.messages import SetpointBatch, decode_setpoints
from aggregator.service.events import ServiceEvent, SessionChanged

__all__ = ["StateWriter", "prior_failsafe_kw", "recent_batches", "restore_sessions"]

_STATE = TypeAdapter(SessionState)


@dataclass
class _Pending:
    event: SessionChanged  # its state is built at write time (coalesced: once per write)


class StateWriter:
    """Coalesced state-topic writes with a commit hold (see the module docstring)."""

    def __init__(
        self,
        transport: Transport,
        topic: str,
        *,
        interval_s: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transport = transport
        self.topic = topic
        self.interval_s = interval_s
        self._monotonic = monotonic
        self.position: tuple[TopicPartition, int] | None = None  # the record being applied
        self._pending: dict[str, _Pending] = {}
        self._now: list[str] = []  # starts and ends: written at the next write_due
        self._due: list[tuple[float, str]] = []  # (due time, evse) heap of coalesced ones
        self._written_at: dict[str, float] = {}
        self._written_session: dict[str, str] = {}
        self._holds: dict[TopicPartition, OrderedDict[str, int]] = {}
        self._held_by: dict[str, TopicPartition] = {}
        self.written = 0

    # ------------------------------------------------------------------ events in

    def emit(self, event: ServiceEvent) -> None:
        if isinstance(event, SessionChanged):
            self.changed(event)

    def changed(self, event: SessionChanged) -> None:
        """A session's state changed while applying the record at :attr:`position`."""
        evse_id = event.evse_id
        was = self._pending.get(evse_id)
        self._pending[evse_id] = _Pending(event)
        if self.position is not None and evse_id not in self._held_by:
            tp, offset = self.position
            self._holds.setdefault(tp, OrderedDict())[evse_id] = offset
            self._held_by[evse_id] = tp
        session_id = event.session_id
        boundary = session_id is None or self._written_session.get(evse_id) != session_id
        if boundary:
            self._now.append(evse_id)
        elif was is None:
            due = self._written_at.get(evse_id, -float("inf")) + self.interval_s
            heapq.heappush(self._due, (due, evse_id))

    # ------------------------------------------------------------------ writes out

    def _write(self, evse_id: str, now: float) -> int:
        p = self._pending.pop(evse_id, None)
        if p is None:
            return 0
        state = p.event.state
        value = None if state is None else _STATE.dump_json(state)
        self.transport.produce(self.topic, evse_id.encode(), value)
        self._written_at[evse_id] = now
        if state is None:
            self._written_session.pop(evse_id, None)
        else:
            self._written_session[evse_id] = state.session_id
        tp = self._held_by.pop(evse_id, None)
        if tp is not None:
            self._holds[tp].pop(evse_id, None)
        self.written += 1
        return 1

    def write_due(self) -> int:
        """Produce the starts, ends and coalesced states now due; returns how many."""
        now = self._monotonic()
        n = 0
        now_list, self._now = self._now, []
        for evse in now_list:
            n += self._write(evse, now)
        while self._due and self._due[0][0] <= now:
            _, evse = heapq.heappop(self._due)
            if evse not in self._pending:
                continue  # written meanwhile (its session ended or restarted)
            due = self._written_at.get(evse, -float("inf")) + self.interval_s
            if due > now:  # written at a boundary since: wait out the interval again
                heapq.heappush(self._due, (due, evse))
                continue
            n += self._write(evse, now)
        return n

    def write_all(self) -> int:
        """Produce every pending state (revocation, shutdown)."""
        now = self._monotonic()
        n = sum(self._write(evse, now) for evse in list(self._pending))
        self._now, self._due = [], []
        return n

    @property
    def pending(self) -> int:
        return len(self._pending)

    def committable(self, consumed: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Offsets safe to commit: the next offset to read, held back to the oldest record
        whose effect is not yet written (call after the written states were flushed)."""
        out: dict[TopicPartition, int] = {}
        for tp, nxt in consumed.items():
            hold = self._holds.get(tp)
            first = next(iter(hold.values()), None) if hold else None
            out[tp] = nxt if first is None else min(nxt, first)
        return out

    def reset(self) -> None:
        """Forget pending changes (a new assignment: the new service starts from the topic)."""
        self._pending.clear()
        self._now, self._due = [], []
        self._holds.clear()
        self._held_by.clear()
        self.position = None


def restore_sessions(transport: Transport, topic: str) -> list[SessionState]:
    """The latest state of every EVSE in the compacted state topic (tombstones drop it)."""
    latest: dict[bytes, bytes | None] = {}
    for m in transport.read(topic):
        if m.key is not None:
            latest[m.key] = m.value
    out: list[SessionState] = []
    for value in latest.values():
        if value is None:
            continue
        try:
            out.append(_STATE.validate_json(value))
        except ValueError:
            continue  # a record this version cannot read: the replay rebuilds it
    return out


def recent_batches(
    transport: Transport,
    topic: str,
    csms_ids: Collection[str],
    now: datetime,
    lookback_s: float,
    failsafe_s: float = 0.0,
) -> list[SetpointBatch]:
    """Per CSMS of ``csms_ids``, its newest batch (highest ``seq``) whose lease or failsafe
    period may still run (``valid_until + failsafe_s`` ahead of ``now``): an EVSE whose
    lease lapsed holds that batch's failsafe value for ``failsafe_s``.

    The common case (the previous owner published until it died) is found in the last
    ``lookback_s``; only CSMSs without a batch there are looked up over the whole failsafe
    period (a longer read, after an outage)."""
    parts = transport.partitions(topic)
    if parts is None or not csms_ids:
        return []
    newest: dict[str, SetpointBatch] = {}

    def scan(wanted_csms: Collection[str], since_s: float) -> None:
        wanted: Sequence[int] = sorted({feeder_partition(c, len(parts)) for c in wanted_csms})
        for m in transport.read(topic, since_ms=int(since_s * 1000), partitions=wanted):
            if m.value is None or m.key is None or m.key.decode() not in wanted_csms:
                continue
            try:
                b = decode_setpoints(m.value)
            except ValueError:
                continue
            old = newest.get(b.csms_id)
            if old is None or b.seq > old.seq:
                newest[b.csms_id] = b

    scan(csms_ids, now.timestamp() - lookback_s)
    missing = [c for c in csms_ids if c not in newest]
    if missing and failsafe_s > 0:
        scan(missing, now.timestamp() - lookback_s - failsafe_s)
    horizon = timedelta(seconds=failsafe_s)
    return [b for b in newest.values() if b.valid_until + horizon > now]


def prior_failsafe_kw(batches: Iterable[SetpointBatch]) -> dict[str, float]:
    """Per EVSE, the failsafe value of the batches in force (the previous owner's)."""
    out: dict[str, float] = {}
    for b in batches:
        for evse, fs in zip(b.evse_ids, b.failsafe_kw, strict=True):
            out[evse] = min(fs, out.get(evse, fs))
    return out
