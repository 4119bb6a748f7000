"""History of a replica in InfluxDB: an :class:`EventSink` that never slows the fast loop.

:class:`InfluxHistory` subscribes to the service's typed events and writes, through
``influxdb-client``'s v2 write API, in batches from its own thread:

* ``activation`` — every fast-loop run (:class:`BatchesPublished`): the requested fleet
  deviation ``deviation_kw`` (the reserve activation), batches, dispatch ``elapsed_s``;
* ``plan`` — every plan taken (:class:`PlanMade`): ``build_s``, ``solve_s``, sessions,
  ``fallback`` (0/1, tag ``fallback_reason``), tag ``solver``; ``plan_objective`` — the
  plan's objective value, sampled when a new plan is in force; ``plan_discarded``;
* ``limit`` — DSO limits applied / cancelled / rejected (tag ``action``), ``limit_kw``;
* ``power`` — sampled every ``sample_s`` by :meth:`sample` on the service's loop, per
  site, feeder and the fleet (tags ``level``, ``id``): ``measured_kw`` (live sessions),
  ``setpoint_kw`` (sum of the latest setpoint batch per CSMS, seen through :meth:`tee`;
  left out when no sink was teed),
  ``cap_kw`` (the limit in force now) and, per feeder, ``headroom_kw``.

* ``pool`` — the markets' 1 s record (:class:`PoolSampled`, see
  :mod:`adapters.ops.history_points`).

Later series have two hooks: :meth:`record` (the core's
:class:`~aggregator.interfaces.HistorySink` protocol: one point, any measurement) and
:func:`register_event` (a converter from a new event type to points).

Invariants:

* ``emit``, ``record``, ``sample`` and the teed ``publish`` never block and never do I/O:
  they append to a bounded :class:`collections.deque` (no lock is taken); when it is full
  the oldest item is dropped and counted (``gridflex_history_dropped_total``);
* only the writer thread converts and writes; a failed write is retried with backoff, and
  a retried batch is dropped (and counted) as soon as the queue has overflowed behind it,
  since it is then older than what was lost: the drop order stays oldest first;
* ``SessionChanged`` (20 000/s) is never queued: it only keeps the EVSE → site map that
  turns setpoint batches into per-site sums.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

import structlog
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from adapters.ops.history_points import Record, Sample, points_of, register_event
from adapters.ops.history_settings import HistorySettings
from aggregator.interfaces import SetpointSink
from aggregator.messages import SetpointBatch
from aggregator.service.events import SessionChanged
from aggregator.topology import Topology

if TYPE_CHECKING:
    from aggregator.service.replica import Service

__all__ = [
    "HistorySettings",
    "InfluxHistory",
    "InfluxWriter",
    "PointWriter",
    "points_of",
    "register_event",
]

_log = structlog.get_logger("gridflex.history")


def _let_go() -> None:
    time.sleep(0)  # releases the GIL: a waiting service thread runs now


class PointWriter(Protocol):
    def write(self, points: Sequence[str]) -> None:
        """Write all points (line protocol) or raise."""
        ...

    def close(self) -> None: ...


class InfluxWriter:
    """``influxdb-client``'s synchronous v2 write API (used on the history thread only)."""

    def __init__(self, settings: HistorySettings) -> None:
        self._settings = settings
        self._client = InfluxDBClient(
            url=settings.url,
            token=settings.token,
            org=settings.org,
            timeout=int(settings.timeout_s * 1000),
            retries=False,  # the history thread retries, with backoff and drop-oldest
        )
        self._api = self._client.write_api(write_options=SYNCHRONOUS)

    def write(self, points: Sequence[str]) -> None:
        s = self._settings
        self._api.write(
            bucket=s.bucket, org=s.org, record=list(points), write_precision=WritePrecision.NS
        )

    def close(self) -> None:
        self._api.close()
        self._client.close()


# ---------------------------------------------------------------------------- the sink


class _Tee:
    """A setpoint sink that keeps a delivered batch per CSMS at most every ``keep_s``
    (a dict store; keeping every batch of a 100 Hz loop alive until the next one measurably
    slowed the loop's allocations), so a sample's sums are at most ``keep_s`` old."""

    def __init__(
        self, inner: SetpointSink, latest: dict[str, SetpointBatch], keep_s: float
    ) -> None:
        self._inner = inner
        self._latest = latest
        self._keep_s = keep_s
        self._next: dict[str, float] = {}

    def publish(self, batch: SetpointBatch) -> bool | None:
        ok = self._inner.publish(batch)
        if ok is not False:
            cs, mono = batch.csms_id, time.monotonic()
            if mono >= self._next.get(cs, 0.0):
                self._latest[cs] = batch
                self._next[cs] = mono + self._keep_s
        return ok


class InfluxHistory:
    """Service events and samples → a bounded queue → batches written on a thread."""

    def __init__(
        self,
        topology: Topology,
        settings: HistorySettings,
        *,
        writer: PointWriter | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.topology = topology
        self.settings = settings
        self._writer = writer
        self._q: deque[object] = deque(maxlen=settings.queue_size)
        self._evse_site: dict[str, str] = {}
        self._latest: dict[str, SetpointBatch] = {}
        self._teed = False
        self._drain_s = 8.0
        self._next_sample = 0.0
        self._plan: object = None
        # each counter has one writing thread (``+=`` across threads could lose counts)
        self._overflowed = 0  # items the full queue pushed out (service thread)
        self._lost = 0  # points of failed batches given up (writer thread)
        self.written = 0  # points written
        self.write_errors = 0
        self.up = False  # the last write succeeded
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if registry is not None:
            registry.register(_HistoryCollector(self))

    # ------------------------------------------------------------------ service side

    def _put(self, item: object) -> None:
        q = self._q
        if len(q) == q.maxlen:  # deque drops the oldest on append; count it
            self._overflowed += 1
        q.append(item)

    def emit(self, event: object) -> None:
        """Take one service event (service thread; never blocks)."""
        if type(event) is SessionChanged:
            row = event.row
            if row is None:
                self._evse_site.pop(event.evse_id, None)
            else:
                self._evse_site[event.evse_id] = row[1]
            return
        self._put(event)

    def record(
        self,
        measurement: str,
        time: datetime,
        fields: Mapping[str, float],
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """One point of any series (:class:`~aggregator.interfaces.HistorySink`)."""
        self._put(Record(measurement, time, dict(fields), dict(tags or {})))

    def tee(self, sink: SetpointSink) -> SetpointSink:
        """``sink``, with each delivered batch remembered for the setpoint sums."""
        self._teed = True
        return _Tee(sink, self._latest, self.settings.sample_s / 4)

    def sample(self, service: Service | None, *, force: bool = False) -> bool:
        """Every ``sample_s`` (monotonic), queue power, setpoint sums and caps of now.

        Runs on the service's loop between records (a few bincounts, no I/O); returns
        whether a sample was taken."""
        mono = time.monotonic()
        if service is None or (not force and mono < self._next_sample):
            return False
        self._next_sample = mono + self.settings.sample_s
        now = service.clock.now()
        caps = service.limits.caps_at(now)
        topo = self.topology
        plan = service.plan
        objective = None
        if plan is not None and plan is not self._plan:
            self._plan = plan
            objective = float(plan.objective)
        self._put(
            Sample(
                at=now,
                measured_kw=service.measured_power_kw(),
                site_cap_kw={s.site_id: float(caps.site_kw[i]) for i, s in enumerate(topo.sites)},
                feeder_cap_kw={
                    f.feeder_id: float(caps.feeder_kw[i]) for i, f in enumerate(topo.feeders)
                },
                fleet_cap_kw=float(caps.fleet_kw),
                headroom_kw=service.feeder_headroom_kw(),
                batches=tuple(self._latest.values()) if self._teed else None,
                objective=objective,
            )
        )
        return True

    @property
    def dropped(self) -> int:
        """Items and points lost: pushed out of the full queue, or given up by the writer."""
        return self._overflowed + self._lost

    @property
    def queued(self) -> int:
        return len(self._q)

    # ------------------------------------------------------------------ writer thread

    def start(self) -> InfluxHistory:
        if self._thread is None:
            if self._writer is None:
                self._writer = InfluxWriter(self.settings)
            self._thread = threading.Thread(target=self._run, name="gridflex-history", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the thread after writing what is queued (while the database answers, for
        most of ``timeout_s``; the rest is counted as dropped)."""
        self._drain_s = 0.8 * timeout_s
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if self._writer is not None:
            self._writer.close()

    def _take(self) -> list[str]:
        """Up to ``batch_size`` points as line protocol. The GIL is let go (``sleep(0)``)
        every few dozen points: pure-Python work on this thread would otherwise hold the
        service's thread off for up to the interpreter's switch interval (5 ms)."""
        lines: list[str] = []
        n = self.settings.batch_size
        while len(lines) < n:
            try:
                item = self._q.popleft()
            except IndexError:
                break
            try:
                points = points_of(item, self.topology, self._evse_site, _let_go)
            except Exception:  # one bad item never stops history
                _log.exception("history_point_failed", item=type(item).__name__)
                continue
            for k, p in enumerate(points, 1):
                lines.append(p.to_line_protocol())
                if k % 16 == 0:
                    _let_go()
            _let_go()
        return lines

    def _run(self) -> None:
        pending: list[str] = []
        mark = 0  # self._overflowed when ``pending`` was taken
        failures = 0
        retry_at = 0.0
        while True:
            stopping = self._stop.is_set()
            if not pending:
                pending, mark = self._take(), self._overflowed
            if pending and time.monotonic() >= retry_at:
                if self._write(pending):
                    pending, failures = [], 0
                    if len(self._q) >= self.settings.batch_size and not stopping:
                        continue  # behind: write the next batch at once
                else:
                    failures += 1
                    if self._overflowed > mark:  # the queue overflowed behind this batch
                        self._lost += len(pending)
                        pending = []
                    backoff = min(self.settings.retry_max_s, 0.5 * 2 ** min(failures, 10))
                    retry_at = time.monotonic() + backoff
            if stopping:
                self._drain(pending, failures == 0)
                return
            self._stop.wait(self.settings.flush_s)

    def _drain(self, pending: list[str], healthy: bool) -> None:
        """At close: write what is queued while writes succeed (until the close deadline);
        whatever is left is lost and counted."""
        deadline = time.monotonic() + self._drain_s
        while healthy and time.monotonic() < deadline:
            if not pending:
                pending = self._take()
                if not pending:
                    break
            healthy = self._write(pending)
            if healthy:
                pending = []
        self._lost += len(pending) + len(self._q)
        self._q.clear()

    def _write(self, points: list[str]) -> bool:
        writer = self._writer
        assert writer is not None
        try:
            writer.write(points)
        except Exception as exc:  # any failure: the database is down for us
            self.write_errors += 1
            if self.up or self.write_errors == 1:
                _log.warning("history_write_failed", error=str(exc)[:200], points=len(points))
            self.up = False
            return False
        self.written += len(points)
        self.up = True
        return True


class _HistoryCollector(Collector):
    """The sink's counters read at scrape time (the service thread never takes a lock)."""

    def __init__(self, h: InfluxHistory) -> None:
        self._h = h

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        h = self._h
        yield CounterMetricFamily(
            "gridflex_history_dropped",
            "History items dropped (queue full while the database was down or slow)",
            value=h.dropped,
        )
        yield CounterMetricFamily(
            "gridflex_history_points_written", "History points written", value=h.written
        )
        yield CounterMetricFamily(
            "gridflex_history_write_errors", "Failed history writes", value=h.write_errors
        )
        yield GaugeMetricFamily("gridflex_history_queue", "History items waiting", value=h.queued)
        yield GaugeMetricFamily(
            "gridflex_history_up", "1 when the last history write succeeded", value=int(h.up)
        )
