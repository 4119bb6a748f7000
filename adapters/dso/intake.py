"""One intake for every DSO limit, whatever its protocol (REST, OpenADR, later OSCP).

A protocol adapter translates its wire type into a :class:`~aggregator.limits.DsoLimit`
(or an event id to cancel) and calls :meth:`LimitIntake.submit` / :meth:`LimitIntake.cancel`.
The intake, and nothing else:

1. **validates once** (:func:`limit_issues`): every problem as an
   :class:`~aggregator.errors.Issue` with a stable ``code`` and the event id in ``ids``;
2. **keys by feeder** (:meth:`LimitIntake.key`): a site limit goes to its feeder's key, a
   fleet limit to ``"fleet"``, a cancellation to the key of the limit it cancels (so it
   lands in the same partition, after it);
3. **publishes** the wire message (``DsoLimitMessage`` / ``DsoLimitCancel``) through the
   injected ``publish(key, message)`` — the grid-signals topic on Kafka, a queue the
   service loop drains in embedded mode — and stores nothing when that fails
   (:class:`~aggregator.errors.TransientIO`);
4. **audits once**: ``limit.received`` / ``limit.cancelled`` with the limit's ``source``
   (a failing audit log is logged as an error; it never turns a published limit into a
   reported failure);
5. keeps **the book of limits in force** (:class:`LimitsInForce`) that ``GET /v1/limits``
   reads: every source, with its source, dropped when its window ends.

Sources name their owner: ``rest:<dso>`` for a DSO on the REST API, ``openadr`` (or the
VEN's configured source) for OpenADR. A limit can be revised or cancelled only by the
source that owns it (:data:`EVENT_ID_TAKEN`).

Durability: on Kafka the book is rebuilt at start by replaying the grid-signals topic
through :meth:`LimitIntake.observe`, then kept in step with it
(:class:`adapters.dso.replay.GridSignalFollower`), so a restarted API lists what is still
in force and each replica's API sees the limits posted through the others. In embedded
mode the book lives as long as the process (as does the service's own limit book).

Thread-safety: :meth:`submit` and :meth:`cancel` hold :attr:`LimitIntake.lock` around the
whole check-publish-record-audit sequence; a caller that must check more around them (the
REST API's idempotency keys) may hold the same re-entrant lock.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Final

import structlog

from adapters.dso.audit import AuditLog, limit_cancelled, limit_received
from adapters.dso.fleetshares import FleetShares
from aggregator.errors import InvalidInput, Issue, TransientIO
from aggregator.limits import DsoLimit, TargetType
from aggregator.messages import DsoLimitCancel, DsoLimitMessage
from aggregator.service.fleetsplit import SHARE_SOURCE
from aggregator.topology import Topology

__all__ = [
    "EARLIEST",
    "EVENT_ID_PATTERN",
    "EVENT_ID_TAKEN",
    "FLEET_KEY",
    "LATEST",
    "MAX_LIMIT_KW",
    "BookEntry",
    "LimitIntake",
    "LimitsInForce",
    "Publish",
    "Signal",
    "event_id_issues",
    "limit_issues",
]

EVENT_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._:@+=~-]{0,127}$"
"""Event ids: 1–128 characters, ASCII letters, digits and ``. _ : @ + = ~ -``, not
starting with punctuation. No ``/`` (ids are URL path segments), no whitespace, no
control or non-ASCII characters (ids travel in HTTP headers)."""
_EVENT_ID: Final = re.compile(EVENT_ID_PATTERN)
EARLIEST: Final = datetime(2000, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(2100, 1, 1, tzinfo=UTC)
"""Limit windows lie within ``[EARLIEST, LATEST]`` (UTC)."""
MAX_LIMIT_KW: Final = 1_000_000.0
FLEET_KEY: Final = "fleet"
EVENT_ID_TAKEN: Final = "event_id_taken"

_log = structlog.get_logger("gridflex.dso")

Signal = DsoLimitMessage | DsoLimitCancel
Publish = Callable[[str, Signal], None]
"""``publish(key, message)``: hand a grid signal on; raise when it was not taken."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def event_id_issues(event_id: object, field: str = "event_id") -> list[Issue]:
    """Problems of an event id against :data:`EVENT_ID_PATTERN` (empty when fine)."""
    if isinstance(event_id, str) and _EVENT_ID.fullmatch(event_id):
        return []
    shown = repr(event_id)[:60]
    return [
        Issue(
            field=field,
            code="invalid_event_id",
            message=f"{shown} does not match {EVENT_ID_PATTERN} (1-128 ASCII letters, digits "
            "and . _ : @ + = ~ -; no '/', whitespace or control characters)",
        )
    ]


def limit_issues(limit: DsoLimit, topology: Topology, now: datetime) -> list[Issue]:
    """Every problem of a limit, for any source: id, target, window, value."""
    ids = (limit.event_id,) if isinstance(limit.event_id, str) else ()
    issues = [replace(i, ids=ids) for i in event_id_issues(limit.event_id)]

    def bad(field: str, code: str, message: str) -> None:
        issues.append(Issue(field=field, code=code, message=message, ids=ids))

    utc_ok = True
    for name, ts in (("start", limit.start), ("end", limit.end)):
        if not isinstance(ts, datetime) or ts.tzinfo is None or ts.utcoffset() is None:
            bad(name, "naive_time", "must be timezone-aware (ISO 8601 with 'Z' or an offset)")
            utc_ok = False
        elif not EARLIEST <= ts <= LATEST:
            bad(name, "time_out_of_range", f"must lie within {EARLIEST:%Y}-{LATEST:%Y} (UTC)")
            utc_ok = False
    if utc_ok:
        if limit.end <= limit.start:
            bad("end", "end_before_start", "must be after start")
        elif limit.end <= now:
            bad("end", "window_over", f"the window is already over (now {now.isoformat()})")
    if not isinstance(limit.limit_kw, float | int) or not math.isfinite(limit.limit_kw):
        bad("limit_kw", "not_finite", "must be a finite number")
    elif abs(limit.limit_kw) > MAX_LIMIT_KW:
        bad("limit_kw", "out_of_range", f"must lie within ±{MAX_LIMIT_KW:g} kW")
    kind, tid = limit.target_type, limit.target_id
    if kind is TargetType.FLEET and tid != FLEET_KEY:
        bad("target_id", "fleet_has_no_target", "a fleet limit takes no target_id")
    elif kind is TargetType.SITE and tid not in topology.site_index:
        bad("target_id", "unknown_site", f"unknown site {tid!r}")
    elif kind is TargetType.FEEDER and tid not in topology.feeder_index:
        bad("target_id", "unknown_feeder", f"unknown feeder {tid!r}")
    if not limit.source:
        bad("source", "missing_source", "must name who sent the limit")
    issues += limit.direction_issues()
    return issues


@dataclass(frozen=True, slots=True, kw_only=True)
class BookEntry:
    """A limit in force, as the intake accepted it."""

    limit: DsoLimit
    received_at: datetime
    key: str  # the feeder key it was published under

    @property
    def source(self) -> str:
        return self.limit.source


class LimitsInForce:
    """The book of limits accepted and not cancelled, by event id (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, BookEntry] = {}

    def get(self, event_id: str) -> BookEntry | None:
        with self._lock:
            return self._entries.get(event_id)

    def put(self, entry: BookEntry) -> None:
        with self._lock:
            self._entries[entry.limit.event_id] = entry

    def pop(self, event_id: str) -> BookEntry | None:
        with self._lock:
            return self._entries.pop(event_id, None)

    def entries(self, now: datetime | None = None) -> list[BookEntry]:
        """Entries (not yet over at ``now``, when given), by start then event id."""
        with self._lock:
            if now is not None:
                for k in [k for k, e in self._entries.items() if e.limit.end <= now]:
                    del self._entries[k]
            out = list(self._entries.values())
        return sorted(out, key=lambda e: (e.limit.start, e.limit.event_id))

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class LimitIntake:
    """Validate once, key by feeder, publish, audit once; the book of limits in force."""

    def __init__(
        self,
        topology: Topology,
        publish: Publish,
        *,
        audit: AuditLog | None = None,
        clock: Callable[[], datetime] = _utc_now,
        book: LimitsInForce | None = None,
        fleet_shares: bool = False,
    ) -> None:
        self.topology = topology
        self._publish = publish
        self.audit = audit
        self.clock = clock
        self.book = book if book is not None else LimitsInForce()
        self.lock = threading.RLock()
        # on Kafka (several replicas): a fleet limit's per-feeder shares go out with it
        self.shares = FleetShares(topology) if fleet_shares else None
        # cancelled ids → (when, the limit's end): older records of them change nothing
        self._cancelled: dict[str, tuple[datetime, datetime]] = {}

    def key(self, limit: DsoLimit) -> str:
        """The record key: the feeder of the limit's target (``"fleet"`` for the fleet)."""
        if limit.target_type is TargetType.SITE:
            i = self.topology.site_index.get(limit.target_id)
            return self.topology.sites[i].feeder_id if i is not None else limit.target_id
        if limit.target_type is TargetType.FEEDER:
            return limit.target_id
        return FLEET_KEY

    def check(self, limit: DsoLimit, now: datetime | None = None) -> list[Issue]:
        """Every problem of ``limit`` (validation, and an event id another source owns)."""
        issues = limit_issues(limit, self.topology, now or self.clock())
        known = self.book.get(limit.event_id) if not issues else None
        if known is not None and known.source != limit.source:
            issues.append(
                Issue(
                    field="event_id",
                    code=EVENT_ID_TAKEN,
                    message=f"event id {limit.event_id!r} is taken by another source",
                    ids=(limit.event_id,),
                )
            )
        return issues

    def submit(self, limit: DsoLimit) -> tuple[BookEntry, BookEntry | None]:
        """Accept a new or revised limit: ``(entry, the entry it replaced or None)``.

        Raises :class:`InvalidInput` with every problem (nothing published), or
        :class:`TransientIO` when publishing failed (nothing stored or audited).
        """
        with self.lock:
            now = self.clock()
            issues = self.check(limit, now)
            if issues:
                raise InvalidInput(issues)
            msg = DsoLimitMessage(
                ts=now,
                event_id=limit.event_id,
                target_type=limit.target_type.value,
                target_id=limit.target_id,
                start=limit.start,
                end=limit.end,
                limit_kw=limit.limit_kw,
                priority=limit.priority,
                source=limit.source,
                direction=limit.direction.value,
            )
            key = self.key(limit)
            self._send(key, msg)
            if self.shares is not None:
                self._send_shares(self.shares.on_submit(limit, now))
            entry = BookEntry(limit=msg.to_domain(), received_at=now, key=key)
            before = self.book.get(limit.event_id)
            self._cancelled.pop(limit.event_id, None)
            self.book.put(entry)
            self._audit(lambda log: limit_received(log, entry.limit, now), limit.event_id)
        return entry, before

    def cancel(self, event_id: str, *, source: str) -> BookEntry | None:
        """Cancel a limit ``source`` owns; returns it, or ``None`` when it is not in force
        (then nothing is published). Raises :class:`InvalidInput` (code
        :data:`EVENT_ID_TAKEN`) for another source's limit, :class:`TransientIO` when
        publishing failed."""
        with self.lock:
            now = self.clock()
            known = self.book.get(event_id)
            if known is None:
                return None
            if known.source != source:
                raise InvalidInput(
                    [
                        Issue(
                            field="event_id",
                            code=EVENT_ID_TAKEN,
                            message=f"limit {event_id!r} belongs to {known.source!r}",
                            ids=(event_id,),
                        )
                    ]
                )
            self._send(known.key, DsoLimitCancel(ts=now, event_id=event_id, source=source))
            if self.shares is not None:
                self._send_shares(self.shares.on_cancel(known.limit, now))
            self.book.pop(event_id)
            self._forget(event_id, now, known.limit.end)
            self._audit(
                lambda log: limit_cancelled(log, event_id, now, source=source, found=True), event_id
            )
        return known

    def relay(self, msg: Signal) -> str | None:
        """A protocol adapter's translated message into the intake (its ``publish``):
        submit a limit or cancel one; the rejection reason, or ``None`` when taken."""
        try:
            if isinstance(msg, DsoLimitCancel):
                self.cancel(msg.event_id, source=msg.source)
            else:
                self.submit(msg.to_domain())
        except InvalidInput as exc:
            return "; ".join(f"{i.code}: {i}" for i in exc.issues)
        except TransientIO as exc:
            return str(exc)
        return None

    def observe(self, msg: Signal, *, key: str | None = None) -> None:
        """Take a grid signal read back from the topic into the book (no publish, no
        audit): how the book is rebuilt after a restart and kept in step with other
        replicas. A record older than the book's entry for its id (an echo of what this
        intake already holds) changes nothing; invalid records are ignored."""
        with self.lock:
            if msg.source == SHARE_SOURCE:  # gridflex's own split: never a DSO's limit
                if self.shares is not None:
                    self.shares.observe(msg)
                return
            known = self.book.get(msg.event_id)
            if known is not None and known.received_at > msg.ts:
                return
            gone = self._cancelled.get(msg.event_id)
            if gone is not None and gone[0] >= msg.ts:
                return
            if isinstance(msg, DsoLimitCancel):
                if known is not None and known.source == msg.source:
                    self.book.pop(msg.event_id)
                    self._forget(msg.event_id, msg.ts, known.limit.end)
                return
            limit = msg.to_domain()
            if limit_issues(limit, self.topology, self.clock()):
                return
            self.book.put(BookEntry(limit=limit, received_at=msg.ts, key=key or self.key(limit)))

    def _send_shares(self, records: Sequence[tuple[str, Signal]]) -> None:
        """Publish fleet shares after their limit: a failure is logged, not raised (the
        limit itself is out; the fleet splitter splits it on its next pass)."""
        try:
            for key, share in records:
                self._send(key, share)
        except TransientIO as exc:
            _log.error("fleet_shares_not_published", error=str(exc))

    def _forget(self, event_id: str, at: datetime, end: datetime) -> None:
        """Remember a cancellation until the cancelled window would have ended."""
        now = self.clock()
        for k in [k for k, (_, e) in self._cancelled.items() if e <= now]:
            del self._cancelled[k]
        self._cancelled[event_id] = (at, end)

    def _audit(self, write: Callable[[AuditLog], object], event_id: str) -> None:
        """Audit what was applied; a failing audit log is logged, never turned into a
        failure of a limit that is already published (the answer must stay true)."""
        if self.audit is None:
            return
        try:
            write(self.audit)
        except (InvalidInput, OSError, ValueError) as exc:
            _log.error("audit_append_failed", event_id=event_id, error=repr(exc))

    def _send(self, key: str, msg: Signal) -> None:
        try:
            self._publish(key, msg)
        except Exception as exc:
            raise TransientIO(
                f"could not publish {msg.type} {msg.event_id!r}: {type(exc).__name__}: {exc}"
            ) from exc
