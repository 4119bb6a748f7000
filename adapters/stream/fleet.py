"""Fleet caps across replicas on Kafka itself: per-feeder shares, one splitter, acks by offsets.

Replicas own whole feeders (:func:`~adapters.stream.topics.owned_topology`); a fleet cap —
the topology's static ``fleet_limit_kw`` and every DSO limit on the fleet — holds across
them only as per-feeder **shares** with Σ shares ≤ cap (:mod:`aggregator.service.fleetsplit`).
A share is an ordinary feeder limit (``source="fleet-split"``, event id
``fleetshare:<window>:<feeder>``) on the grid-signals topic, keyed by its feeder: it lands
in the feeder's partition, so whoever owns the feeder applies it, and the catch-up on
assignment (the gate opens only after the grid signals are read to their end) re-applies
it on takeover. A newer share replaces an older one by event id.

* **Default split** (:func:`static_share_limits`): on every assignment a replica gives each
  owned feeder its share of the static cap by rating, computed alone from the full
  topology (every replica gets the same numbers), *before* replaying the grid signals — so
  a published share replaces it, and no replica ever applies the whole static cap.
* **Reports** (:func:`demand_report`): each replica publishes its feeders' demand (Σ max
  power of their live sessions, at most the rating) on the one-partition control topic
  every ``fleet_report_interval_s`` (a non-blocking produce on the runner's thread).
* **Splitter** (:class:`FleetSplitter`, its own thread and clients, confluent-kafka): every
  replica's splitter joins the consumer group ``<group>.fleet`` on the control topic; the
  member that owns its only partition splits. It tails the whole grid-signals topic
  group-less from the beginning (the DSO fleet limits under the ``"fleet"`` key, and the
  shares in force — a new leader restarts from them), and every ``fleet_split_interval_s``
  computes the shares by demand for every fleet cap window (the static cap; each DSO fleet
  limit, capped by the static one, over its own window) and publishes the change:

  - **decreases at once** (a feeder only ever goes down: Σ in force ≤ Σ before ≤ cap);
  - **increases only when every share record on the topic is applied**: the serve group's
    committed offset on each partition holding a share is past the latest share record.
    The runner commits grid-signal offsets only while its gate is open and only after
    ``flush`` of the batches the records caused, so a committed offset means the feeder's
    owner publishes under that share. While increases are in flight every feeder is at or
    below its new share (Σ ≤ Σ new ≤ cap).

  A DSO fleet limit is split as soon as the splitter reads it; a window that opens sooner
  than one split interval after it was posted may see the fleet above it for up to that
  (the owner of the ``"fleet"`` partition applies the whole limit to its own feeders at
  once, the others wait for their shares). A cancelled fleet limit's shares are cancelled.

Safety does not depend on the splitter: without one (dead, kafka-python, interval 0) the
default split holds the static cap, and DSO fleet limits apply as before this module (by
the owner of the ``"fleet"`` partition only) — say so in the README, do not rely on it.
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from adapters.dso.intake import FLEET_KEY
from adapters.stream.settings import KafkaSettings
from aggregator.limits import DsoLimit
from aggregator.messages import (
    DsoLimitCancel,
    DsoLimitMessage,
    decode_grid_signal,
    encode,
)
from aggregator.service.fleetsplit import (
    SHARE_SOURCE,
    STATIC_WINDOW,
    default_shares,
    demand_shares,
    parse_share_event_id,
    share_event_id,
    transition,
    window_tag,
)
from aggregator.topology import Topology

__all__ = [
    "FleetSplitter",
    "SplitterState",
    "demand_report",
    "parse_report",
    "static_share_limits",
]

log = structlog.get_logger("gridflex.fleet")

ALL_TIME_START = datetime(2000, 1, 1, tzinfo=UTC)
ALL_TIME_END = datetime(9999, 1, 1, tzinfo=UTC)
_REPORT_TYPE = "fleet_demand"


def _ratings(topology: Topology) -> dict[str, float]:
    return {f.feeder_id: f.limit_kw for f in topology.feeders}


def static_share_limits(
    topology: Topology, feeders: Sequence[str], now: datetime
) -> list[DsoLimitMessage]:
    """The default shares of the static fleet cap for ``feeders`` (split over the whole
    ``topology`` by rating), as feeder limits; none when the fleet has no static cap."""
    cap = topology.fleet_limit_kw
    if not math.isfinite(cap):
        return []
    shares = default_shares(_ratings(topology), cap)
    return [_share(STATIC_WINDOW, f, shares[f], ALL_TIME_START, ALL_TIME_END, now) for f in feeders]


def _share(
    window: str, feeder: str, kw: float, start: datetime, end: datetime, now: datetime
) -> DsoLimitMessage:
    return DsoLimitMessage(
        ts=now,
        event_id=share_event_id(window, feeder),
        target_type="feeder",
        target_id=feeder,
        start=start,
        end=end,
        limit_kw=float(kw),
        source=SHARE_SOURCE,
    )


def demand_report(demand_kw: Mapping[str, float], member: str, now: datetime) -> bytes:
    """A replica's report on the control topic: its feeders' demand (kW)."""
    body: dict[str, object] = {"type": _REPORT_TYPE, "v": 1, "ts": now.isoformat()}
    body["member"] = member
    body["demand_kw"] = {f: round(float(v), 3) for f, v in demand_kw.items()}
    return json.dumps(body).encode()


def parse_report(raw: bytes | None) -> tuple[datetime, dict[str, float]] | None:
    """``(ts, demand per feeder)`` of a report; ``None`` for anything else."""
    try:
        body = json.loads(raw or b"")
        if body.get("type") != _REPORT_TYPE:
            return None
        ts = datetime.fromisoformat(body["ts"])
        demand = {str(f): float(v) for f, v in body["demand_kw"].items()}
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return (ts, demand) if ts.tzinfo is not None else None


@dataclass(frozen=True, slots=True)
class _Window:
    window_id: str
    cap_kw: float
    start: datetime
    end: datetime


class SplitterState:
    """What the splitter knows, fed record by record (no I/O: unit-testable): the fleet
    limits in force, the shares on the topic and where the latest one of each partition
    is, the newest demand per feeder."""

    def __init__(self, topology: Topology, *, floor_frac: float, stale_s: float) -> None:
        self.topology = topology
        self.floor_frac = floor_frac
        self.stale_s = stale_s
        self.fleet_limits: dict[str, DsoLimit] = {}
        self.shares: dict[tuple[str, str], float] = {}  # (window, feeder) -> kW on the topic
        self.last_share_offset: dict[int, int] = {}  # grid-signals partition -> offset
        self.demand: dict[str, tuple[datetime, float]] = {}

    def on_grid_signal(self, partition: int, offset: int, raw: bytes | None) -> None:
        try:
            msg = decode_grid_signal(raw or b"")
        except Exception:  # not ours to judge: the replicas dead-letter it
            return
        share = parse_share_event_id(msg.event_id)
        if share is not None:
            self.last_share_offset[partition] = offset
            if isinstance(msg, DsoLimitCancel):
                self.shares.pop(share, None)
            else:
                self.shares[share] = msg.limit_kw
            return
        if isinstance(msg, DsoLimitCancel):
            self.fleet_limits.pop(msg.event_id, None)
        elif msg.target_type == FLEET_KEY:
            self.fleet_limits[msg.event_id] = msg.to_domain()

    def on_report(self, raw: bytes | None) -> None:
        got = parse_report(raw)
        if got is None:
            return
        ts, demand = got
        for f, kw in demand.items():
            old = self.demand.get(f)
            if old is None or old[0] <= ts:
                self.demand[f] = (ts, kw)

    def windows(self, now: datetime) -> list[_Window]:
        static = self.topology.fleet_limit_kw
        out = []
        if math.isfinite(static):
            out.append(_Window(STATIC_WINDOW, static, ALL_TIME_START, ALL_TIME_END))
        for ev, lim in sorted(self.fleet_limits.items()):
            if lim.end > now:
                out.append(_Window(ev, min(lim.limit_kw, static), lim.start, lim.end))
        return out

    def current(self, window: _Window) -> dict[str, float]:
        """The shares in force for ``window``: on the topic, else the default (static) or
        none (unbounded) for a DSO window not split yet."""
        base = (
            default_shares(_ratings(self.topology), window.cap_kw)
            if window.window_id == STATIC_WINDOW
            else {}
        )
        for (w, f), kw in self.shares.items():
            if w == window_tag(window.window_id):
                base[f] = kw
        return base

    def plan(self, now: datetime) -> tuple[list[DsoLimitMessage], list[DsoLimitMessage]]:
        """``(decreases, increases)`` to publish to move every window to its split by demand."""
        fresh = {
            f: kw
            for f, (ts, kw) in self.demand.items()
            if (now - ts).total_seconds() <= self.stale_s
        }
        ratings = _ratings(self.topology)
        dec: list[DsoLimitMessage] = []
        inc: list[DsoLimitMessage] = []
        for w in self.windows(now):
            target = demand_shares(w.cap_kw, fresh, ratings, floor_frac=self.floor_frac)
            t = transition(self.current(w), target)
            dec += [
                _share(w.window_id, f, kw, w.start, w.end, now) for f, kw in t.decreases.items()
            ]
            inc += [
                _share(w.window_id, f, kw, w.start, w.end, now) for f, kw in t.increases.items()
            ]
        return dec, inc

    def orphans(self, now: datetime) -> list[DsoLimitCancel]:
        """Cancellations of the shares of DSO fleet limits no longer known (cancelled)."""
        live = {window_tag(w) for w in (STATIC_WINDOW, *self.fleet_limits)}
        return [
            DsoLimitCancel(ts=now, event_id=share_event_id(w, f), source=SHARE_SOURCE)
            for (w, f) in self.shares
            if w not in live
        ]


Committed = Callable[[Sequence[int]], dict[int, int]]


class FleetSplitter:
    """The splitter thread of one replica (see the module docstring): leader while its
    consumer of ``<group>.fleet`` owns the control topic's partition."""

    def __init__(
        self,
        settings: KafkaSettings,
        topology: Topology,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        from confluent_kafka import Consumer, Producer

        self.settings = settings
        self.topology = topology
        self.now = now
        self.topic = settings.fleet_control()
        self.grid_signals = settings.grid_signals_topic
        self.interval_s = settings.fleet_split_interval_s
        self.leader = False
        self.published = 0
        self.state = self._fresh_state()
        common = {"bootstrap.servers": settings.bootstrap, "socket.nagle.disable": True}
        self._common = common
        self._control = Consumer(
            {
                **common,
                "client.id": f"{settings.client_id}-fleet",
                "group.id": f"{settings.group_id}.fleet",
                "enable.auto.commit": False,
                "auto.offset.reset": "latest",
                "session.timeout.ms": settings.session_timeout_ms,
                "heartbeat.interval.ms": settings.heartbeat_interval_ms,
            }
        )
        self._producer = Producer(
            {
                **common,
                "client.id": f"{settings.client_id}-fleet-producer",
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 0,
                "partitioner": "murmur2_random",
            }
        )
        # the serve group's committed offsets, read without joining it
        self._acks = Consumer(
            {**common, "group.id": settings.group_id, "enable.auto.commit": False}
        )
        self._tail: Any = None
        self._tail_end: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-splitter", daemon=True)
        self._last_split = 0.0

    def _fresh_state(self) -> SplitterState:
        stale = 3 * self.settings.fleet_report_interval_s + 5.0
        return SplitterState(
            self.topology, floor_frac=self.settings.fleet_floor_frac, stale_s=stale
        )

    def start(self) -> FleetSplitter:
        self._control.subscribe([self.topic], on_assign=self._assigned, on_revoke=self._revoked)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    # ------------------------------------------------------------- leadership

    def _assigned(self, consumer: Any, parts: list[Any]) -> None:
        # inside librdkafka's callback: only note it. The tail is opened by the next cycle,
        # where a failure (a fresh topic without a leader yet) is an ordinary retried
        # exception — raised in here it would come out of consume() as a bare KafkaError
        # that no ``except Exception`` catches.
        if parts and not self.leader:
            self.leader = True
            self.state = self._fresh_state()
            log.info("fleet_splitter_leader", topic=self.topic)

    def _revoked(self, consumer: Any, parts: list[Any]) -> None:
        if self.leader:
            log.info("fleet_splitter_follower")
        self.leader = False
        self._close_tail()

    def _open_tail(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer
        from confluent_kafka import TopicPartition as CTP  # noqa: N814

        tail = Consumer(
            {
                **self._common,
                "group.id": f"{self.settings.group_id}.fleet-tail-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
            }
        )
        try:
            meta = tail.list_topics(self.grid_signals, timeout=10.0).topics[self.grid_signals]
            parts = sorted(meta.partitions)
            ends = {}
            for p in parts:
                _, hi = tail.get_watermark_offsets(CTP(self.grid_signals, p), timeout=10.0)
                ends[p] = int(hi)
            tail.assign([CTP(self.grid_signals, p, OFFSET_BEGINNING) for p in parts])
        except Exception:
            tail.close()  # the next cycle tries again
            raise
        self._tail_end = ends
        self._tail = tail

    def _close_tail(self) -> None:
        tail, self._tail = self._tail, None
        if tail is not None:
            tail.close()

    # ------------------------------------------------------------- loop

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._cycle()
            except Exception as exc:  # never kill the thread: the next cycle retries
                log.warning("fleet_splitter_cycle_failed", error=str(exc))
                self._stop.wait(1.0)
        self._close_tail()
        self._control.close()
        self._acks.close()
        self._producer.flush(5.0)

    def _cycle(self) -> None:
        for m in self._control.consume(num_messages=500, timeout=0.2):
            if m.error() is None and self.leader:
                self.state.on_report(m.value())
        if not self.leader:
            return
        if self._tail is None:
            self._open_tail()
        for m in self._tail.consume(num_messages=2000, timeout=0.05):
            if m.error() is None:
                self.state.on_grid_signal(m.partition(), m.offset(), m.value())
                if self._tail_end.get(m.partition(), 0) <= m.offset() + 1:
                    self._tail_end.pop(m.partition(), None)
        if self._tail_end:  # still reading the topic up to where it was at election
            self._tail_end = {p: e for p, e in self._tail_end.items() if self._tail_position(p) < e}
            return
        if self.interval_s > 0 and time.monotonic() - self._last_split >= self.interval_s:
            self._last_split = time.monotonic()
            self.split_once()

    def _tail_position(self, p: int) -> int:
        from confluent_kafka import TopicPartition as CTP  # noqa: N814

        pos = self._tail.position([CTP(self.grid_signals, p)])[0].offset
        return int(pos) if pos >= 0 else 0

    def split_once(self) -> tuple[int, int]:
        """One re-split: publish decreases (and orphan cancels) at once, increases only when
        every share record on the topic is applied; returns how many of each went out."""
        now = self.now()
        dec, inc = self.state.plan(now)
        cancels = self.state.orphans(now)
        if dec or cancels:
            self._publish([*dec, *cancels])
            return len(dec) + len(cancels), 0
        if inc and self._all_applied():
            self._publish(inc)
            return 0, len(inc)
        return 0, 0

    def _all_applied(self) -> bool:
        from confluent_kafka import TopicPartition as CTP  # noqa: N814

        need = dict(self.state.last_share_offset)
        if not need:
            return True
        got = self._acks.committed([CTP(self.grid_signals, p) for p in need], timeout=2.0)
        done = {t.partition: t.offset for t in got}
        return all(done.get(p, -1) >= off + 1 for p, off in need.items())

    def _publish(self, msgs: Sequence[DsoLimitMessage | DsoLimitCancel]) -> None:
        delivered: dict[int, int] = {}
        failed: list[str] = []

        def done(err: Any, m: Any) -> None:
            if err is not None:
                failed.append(str(err))
            else:
                delivered[m.partition()] = max(delivered.get(m.partition(), -1), m.offset())

        for msg in msgs:
            if isinstance(msg, DsoLimitMessage):
                key = msg.target_id
            else:
                parsed = parse_share_event_id(msg.event_id)
                key = parsed[1] if parsed is not None else FLEET_KEY
            self._producer.produce(
                self.grid_signals, key=key.encode(), value=encode(msg), on_delivery=done
            )
        left = self._producer.flush(10.0)
        # whatever was delivered counts as unapplied until acked, and the next split waits
        # until the tail has read it back (so the state knows the shares now on the topic)
        for p, off in delivered.items():
            last = self.state.last_share_offset.get(p, -1)
            self.state.last_share_offset[p] = max(last, off)
            self._tail_end[p] = max(self._tail_end.get(p, 0), off + 1)
        if left or failed:
            raise RuntimeError(f"fleet shares not acknowledged: {left} left, {failed[:3]}")
        self.published += len(msgs)
        log.info(
            "fleet_shares_published",
            shares={
                m.event_id: (m.limit_kw if isinstance(m, DsoLimitMessage) else None) for m in msgs
            },
        )
