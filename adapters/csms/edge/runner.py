"""The edge runner: one cycle = batches in → targets → profiles out → buffered records up.

:class:`EdgeRunner` composes the CSAC (:mod:`adapters.csms.edge.autonomy`), the durable
buffer (:mod:`adapters.csms.edge.buffer`), an upstream (:mod:`adapters.csms.edge.upstream`)
and the registered targets (:mod:`adapters.csms.edge.targets`). :meth:`EdgeRunner.step`
is one cycle, driven by :meth:`EdgeRunner.run` on the wall clock or by a test on a
simulated clock:

1. poll setpoint batches for this CSMS id (upstream unreachable → none, ``online`` false);
   each decoded batch is applied by the CSAC; the last applied one is kept on disk so a
   restarted edge holds its failsafes;
2. ask every target for its open sessions, compute balanced per-EVSE targets for the
   current mode, send station limits (max / failsafe) and then the per-EVSE targets;
3. send buffered records upstream in order, deleting them only once acknowledged.

Every telemetry message a target emits and every report goes into the buffer first
(``emit``), never straight upstream: upstream being down changes nothing but the backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from pydantic import BaseModel

from adapters.csms.edge.autonomy import Csac, Mode, SiteSpec
from adapters.csms.edge.buffer import TelemetryBuffer
from adapters.csms.edge.settings import EdgeSettings
from adapters.csms.edge.targets import EdgeContext, EdgeTarget, build_target
from adapters.csms.edge.upstream import EdgeReport, Upstream
from aggregator.errors import InvalidInput, TransientIO
from aggregator.interfaces import Clock
from aggregator.messages import decode_setpoints, encode

__all__ = ["EdgeRunner", "sites_of"]

LOG = logging.getLogger("gridflex.edge")
LAST_BATCH = "last_batch"


def sites_of(settings: EdgeSettings) -> list[SiteSpec]:
    return [
        SiteSpec(site_id=s.id, feeder_id=s.feeder, cap_kw=s.cap_kw, station_ids=tuple(s.stations))
        for s in settings.sites
    ]


class EdgeRunner:
    """One edge (CSAC) for one CSMS id."""

    def __init__(
        self,
        settings: EdgeSettings,
        clock: Clock,
        upstream: Upstream,
        *,
        buffer: TelemetryBuffer | None = None,
        targets: Sequence[str] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.upstream = upstream
        self.sites = sites_of(settings)
        self.buffer = buffer or TelemetryBuffer(
            settings.state_dir / "buffer.sqlite3", max_records=settings.buffer_max_records
        )
        self.csac = Csac(
            settings.csms_id,
            self.sites,
            clock,
            failsafe_duration_s=settings.failsafe_duration_s,
            heartbeat_timeout_s=settings.heartbeat_timeout_s,
            default_failsafe_kw=settings.default_failsafe_kw,
        )
        stored = self.buffer.get_state(LAST_BATCH)
        if stored is not None:
            self.csac.restore(decode_setpoints(stored))
        ctx = EdgeContext(
            settings=settings, sites=self.sites, clock=clock, emit=self.emit, report=self.report
        )
        self.targets: list[EdgeTarget] = [
            build_target(n, ctx) for n in (targets or settings.targets)
        ]
        self.online = False
        self.mode: Mode | None = None
        self.counters: dict[str, int] = {}
        # for /livez, /readyz and /metrics (adapters.csms.edge.health), read from its thread
        self.serving = False
        self.last_cycle = time.monotonic()
        self.buffered = len(self.buffer)
        self.buffer_dropped = self.buffer.dropped

    # ------------------------------------------------------------------ outlets

    def emit(self, kind: str, key: str, msg: BaseModel) -> None:
        """Buffer one upstream record (durably) before anything else happens to it."""
        value = encode(msg) if not isinstance(msg, EdgeReport) else msg.model_dump_json().encode()
        self.buffer.append([(kind, key, value)])

    def report(self, rep: EdgeReport) -> None:
        self.emit("edge_reports", self.settings.csms_id, rep)

    def _count(self, what: str, n: int = 1) -> None:
        self.counters[what] = self.counters.get(what, 0) + n

    # ------------------------------------------------------------------ cycle

    async def start(self) -> None:
        for t in self.targets:
            await t.start()
        self.serving = True

    async def stop(self) -> None:
        self.serving = False
        for t in self.targets:
            await t.stop()
        self.buffer.close()

    def _poll(self) -> None:
        try:
            raws = self.upstream.poll_batches()
        except TransientIO as exc:
            if self.online:
                LOG.warning("upstream unreachable: %s", exc)
            self.online = False
            return
        self.online = True
        for raw in raws:
            try:
                batch = decode_setpoints(raw)
            except InvalidInput as exc:
                self._count("batches.invalid")
                self.report(
                    EdgeReport(
                        ts=self.clock.now(),
                        csms_id=self.settings.csms_id,
                        kind="invalid_batch",
                        detail=str(exc)[:500],
                    )
                )
                continue
            reason = self.csac.apply(batch)
            if reason is None:
                self._count("batches.applied")
                self.buffer.put_state(LAST_BATCH, raw)
            else:
                self._count(f"batches.dropped.{reason}")

    async def step(self) -> int:
        """One cycle; returns the number of profiles/instructions accepted."""
        now = self.clock.now()
        self._poll()
        mode = self.csac.mode(now)
        if mode != self.mode:
            self.report(EdgeReport(ts=now, csms_id=self.settings.csms_id, kind="mode", detail=mode))
            self.mode = mode
        sessions = [s for t in self.targets for s in t.sessions(now)]
        by_station: dict[str, list[str]] = {}
        for t in self.targets:
            for sid, evses in t.evse_ids_by_station().items():
                by_station.setdefault(sid, []).extend(evses)
        limits = self.csac.station_limits(by_station)
        busy = {s.evse_id for s in sessions}
        reserved: dict[str, float] = {}
        for site in self.sites:
            reserved[site.site_id] = sum(
                limits[sid][1]
                for sid in site.station_ids
                for e in by_station.get(sid, ())
                if e not in busy
            )
        targets_kw = self.csac.targets(sessions, now, reserved_kw=reserved)
        accepted = 0
        for t in self.targets:
            await t.set_station_limits(limits)
            accepted += await t.apply(targets_kw, mode)
        self.drain()
        self.buffered, self.buffer_dropped = len(self.buffer), self.buffer.dropped
        self.last_cycle = time.monotonic()
        return accepted

    def drain(self, max_records: int = 5_000) -> int:
        """Send buffered records upstream in order; returns how many were acknowledged."""
        sent = 0
        while True:
            batch = self.buffer.pending(max_records)
            if not batch:
                return sent
            try:
                self.upstream.send(batch)
            except TransientIO:
                self.online = False
                return sent
            self.buffer.ack(batch[-1].seq)
            sent += len(batch)
            if len(batch) < max_records:
                return sent

    async def run(self, stop: asyncio.Event) -> None:
        """Cycle every ``cycle_s`` until ``stop`` is set."""
        await self.start()
        try:
            while not stop.is_set():
                try:
                    await self.step()
                except Exception:
                    LOG.exception("edge cycle failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.settings.cycle_s)
        finally:
            await self.stop()
