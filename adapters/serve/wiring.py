"""Wiring the DSO interfaces (REST API, OpenADR VEN) and telemetry to a running replica.

The API and the VEN answer on their own threads; the service is single-threaded. Every DSO
limit goes through the one DSO intake (:class:`~adapters.dso.intake.LimitIntake`), whose
``publish(key, message)`` hands it over, never applying it from a foreign thread:

* on Kafka (:func:`kafka_publisher`) it is produced to the grid-signals topic keyed by the
  target's feeder, so the replica that owns the feeder applies it (and it survives a
  restart: :func:`adapters.dso.replay.replay_grid_signals` rebuilds the intake's book);
* embedded, it goes into a :class:`BusInbox` that the service loop moves onto its
  in-process bus each turn, beside the telemetry ``POST /v1/telemetry`` takes.

Read views (sites, flexibility) read the service's latest plan, an immutable object.
The audit log gets each limit once, from the intake; the service's own audit entries
(:func:`audit_events`) are fallbacks and rejections, never a second ``limit.*`` entry.
"""

from __future__ import annotations

import dataclasses
import queue
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog
from prometheus_client import CollectorRegistry

from adapters.api.app import ApiContext, create_app
from adapters.api.auth import TokenRegistry
from adapters.api.idempotency import IdempotencyStore
from adapters.api.telemetry import TelemetryIngest
from adapters.dso.audit import AuditLog, export_head
from adapters.dso.audit_sink import AuditSink
from adapters.dso.intake import LimitIntake, Publish, Signal
from adapters.ops.history import HistorySettings, InfluxHistory
from adapters.ops.webserver import api_port, serve_api, stop_api
from adapters.serve.settings import ApiSettings
from aggregator.interfaces import Clock, MessageBus
from aggregator.messages import encode
from aggregator.planning.request import select_sessions
from aggregator.service.events import EventSink, FanOut
from aggregator.service.replica import Service
from aggregator.topology import Topology
from markets.flexibility import fleet_flexibility_kw

if TYPE_CHECKING:
    from adapters.openadr import OpenAdrConfig, OpenAdrVen
    from adapters.openadr3 import OpenAdr3Config, OpenAdr3Ven
    from adapters.openadr3.readings import PlanReadings
    from adapters.oscp import FleetReadings, OscpConfig

__all__ = [
    "ApiHandle",
    "BusInbox",
    "PowerSnapshot",
    "PriceInbox",
    "audit_events",
    "consumer_lag",
    "flexibility_view",
    "hosting_view",
    "kafka_publisher",
    "open_audit",
    "service_events",
    "start_api",
    "start_history",
    "start_oscp",
    "start_ven",
    "start_ven3",
    "ven_ready",
]

_log = structlog.get_logger("gridflex.serve")


class BusInbox:
    """Records from foreign threads (API, VEN) for the in-process bus (embedded mode).

    ``put`` is thread-safe; :meth:`drain_into` runs on the service's loop and publishes
    what arrived, in order, to the bus the loop polls.
    """

    def __init__(self) -> None:
        self._q: queue.Queue[tuple[str, str | None, bytes]] = queue.Queue()

    def put(self, topic: str, key: str | None, value: bytes) -> None:
        self._q.put((topic, key, value))

    def publisher(self, topic: str) -> Publish:
        """An intake ``publish(key, message)`` onto ``topic``."""

        def publish(key: str, msg: Signal) -> None:
            self.put(topic, key, encode(msg))

        return publish

    def ingest(self, topic: str) -> TelemetryIngest:
        """A ``POST /v1/telemetry`` ingest onto ``topic``."""

        def take(records: Sequence[bytes]) -> None:
            for raw in records:
                self.put(topic, None, raw)

        return take

    def drain_into(self, bus: MessageBus) -> int:
        n = 0
        while True:
            try:
                topic, key, value = self._q.get_nowait()
            except queue.Empty:
                return n
            bus.publish(topic, key, value)
            n += 1


def flexibility_view(service: Service | None, feeders: frozenset[str]) -> Mapping[str, Any]:
    """How far the plan lets the sessions on ``feeders`` move up and down, per step."""
    if service is None or service.plan is None or service.last_request is None:
        raise LookupError("no plan yet")
    plan, req = service.plan, service.last_request
    topo = service.topology
    site_ok = np.array([s.feeder_id in feeders or "*" in feeders for s in topo.sites], dtype=bool)
    keep = site_ok[req.session_site] if req.n_sessions else np.zeros(0, dtype=bool)
    sub_plan, sub_req = select_sessions(plan, req, keep)
    up, down = fleet_flexibility_kw(sub_plan, sub_req)
    return {
        "start": req.start,
        "step_s": req.step_s,
        "up_kw": up.tolist(),
        "down_kw": down.tolist(),
    }


@dataclasses.dataclass
class ApiHandle:
    server: Any
    thread: Any
    port: int

    def stop(self) -> None:
        stop_api(self.server, self.thread)


def start_api(
    settings: ApiSettings,
    topology: Topology,
    intake: LimitIntake,
    service: Callable[[], Service | None],
    clock: Clock,
    hosting: Callable[[str], Mapping[str, Any]] | None = None,
    telemetry: TelemetryIngest | None = None,
    idempotency: IdempotencyStore | None = None,
) -> ApiHandle:
    """Start the REST API beside the service loop; returns once it listens. ``idempotency``:
    the key store (in memory when not given; on Kafka :mod:`adapters.api.durable`)."""
    tokens = TokenRegistry.from_config(list(settings.tokens))
    ctx = ApiContext(
        topology=topology,
        intake=intake,
        tokens=tokens,
        idempotency=idempotency if idempotency is not None else IdempotencyStore(),
        clock=clock.now,
        flexibility=lambda feeders: flexibility_view(service(), feeders),
        hosting=hosting,
        telemetry=telemetry,
    )
    server, thread = serve_api(
        create_app(ctx),
        settings.host,
        settings.port,
        certfile=settings.certfile,
        keyfile=settings.keyfile,
        client_ca=settings.client_ca,
    )
    return ApiHandle(server, thread, api_port(server))


def audit_events(log: AuditLog) -> EventSink:
    """The service's event sink for the audit log: fallbacks and rejected limits (limits
    received and cancelled are audited once, by the DSO intake)."""
    return AuditSink(log)


def start_history(
    settings: HistorySettings | None, topology: Topology, registry: CollectorRegistry
) -> InfluxHistory | None:
    """The InfluxDB history sink on its own thread (None when not configured); its drop
    counter and queue are exported in ``registry``."""
    if settings is None:
        return None
    _log.info("history", url=settings.url, bucket=settings.bucket)
    return InfluxHistory(topology, settings, registry=registry).start()


def consumer_lag(transport: Any, topics: Sequence[str]) -> dict[tuple[str, int], int]:
    """Records between the group's position and the end, per partition of ``topics`` this
    consumer holds (a broker round trip per partition: call it seldom); {} on failure."""
    from adapters.stream.transport import TopicPartition

    try:
        tps = [TopicPartition(t, p) for t in topics for p in transport.partitions(t) or []]
        pos = {tp: off for tp, off in transport.position(tps).items() if off >= 0}
        ends = transport.end_offsets(list(pos))
    except Exception as exc:  # a metric never stops the loop
        _log.warning("consumer_lag_failed", error=str(exc)[:200])
        return {}
    return {(tp.topic, tp.partition): max(0, int(ends[tp]) - off) for tp, off in pos.items()}


def service_events(*sinks: EventSink | None) -> EventSink | None:
    """One event sink for the service out of those configured (None: none is)."""
    present = [s for s in sinks if s is not None]
    if not present:
        return None
    return present[0] if len(present) == 1 else FanOut(present)


def kafka_publisher(producer: Any, topic: str) -> Publish:
    """The intake's ``publish(key, message)`` on Kafka: produce keyed by feeder and wait
    until the broker has it (a failure raises, so the intake stores nothing)."""

    def publish(key: str, msg: Signal) -> None:
        producer.send(topic, key=key.encode(), value=encode(msg))
        producer.flush()

    return publish


class PowerSnapshot:
    """Measured power per site, feeder and the fleet, refreshed by the service loop and
    read by other threads (TELEMETRY_USAGE reports): a dict swapped whole, never mutated."""

    def __init__(self) -> None:
        self._kw: dict[str, float] = {}

    def refresh(self, service: Service | None) -> None:
        if service is None:
            self._kw = {}
            return
        self._kw = service.measured_power_kw()

    def kw(self, target_id: str) -> float:
        return self._kw.get(target_id, 0.0)


class PriceInbox:
    """Price points from OpenADR (VEN thread) merged into the service's series (loop)."""

    def __init__(self) -> None:
        self._q: queue.Queue[Any] = queue.Queue()
        self._points: list[Any] = []

    def put(self, points: Any) -> None:
        self._q.put(list(points))

    def drain(self, service: Service | None) -> None:
        from adapters.openadr import price_series

        changed = False
        while True:
            try:
                self._points.extend(self._q.get_nowait())
                changed = True
            except queue.Empty:
                break
        if changed and service is not None and self._points:
            service.prices = price_series(self._points)


def hosting_view(
    models: Mapping[str, str], topology: Topology, clock: Clock, *, steps: int = 96
) -> Callable[[str], Mapping[str, Any]]:
    """Hosting capacity per site of a feeder for the next ``steps`` quarter hours, on top of
    the feeder's own load (AC-verified, ``grid.hosting_capacity_kw``); cached per hour.

    ``models`` maps feeder ids to grid model specs (the topology file's ``model`` keys);
    a feeder without one raises :class:`LookupError` (the API answers 404).
    """
    import grid

    cache: dict[tuple[str, datetime], Mapping[str, Any]] = {}

    def hosting(feeder_id: str) -> Mapping[str, Any]:
        spec = models.get(feeder_id)
        sites = [s for s in topology.sites if s.feeder_id == feeder_id and s.bus]
        if spec is None or not sites:
            raise LookupError(f"no grid model for feeder {feeder_id!r}")
        hour = clock.now().replace(minute=0, second=0, microsecond=0)
        key = (feeder_id, hour)
        if key not in cache:
            model = grid.load_feeder(spec)
            times = [hour + timedelta(minutes=15 * i) for i in range(steps)]
            cap = grid.hosting_capacity_kw(model, [str(s.bus) for s in sites], times)
            cache.clear()  # one hour at a time is enough
            cache[key] = {
                "start": hour,
                "step_s": 900.0,
                "site_kw": {s.site_id: cap[:, k].tolist() for k, s in enumerate(sites)},
            }
        return cache[key]

    return hosting


def open_audit(path: Path | None, registry: CollectorRegistry) -> AuditLog | None:
    """Open the audit log (its whole chain verified: :class:`InvalidInput` when broken),
    export its head as a metric and log it."""
    if path is None:
        return None
    audit = AuditLog(path)
    export_head(audit, registry)
    _log.info("audit_head", path=str(path), head=audit.head, entries=audit.next_seq)
    return audit


def start_ven(
    config: OpenAdrConfig,
    intake: LimitIntake,
    power: PowerSnapshot,
    prices: PriceInbox,
    audit: AuditLog | None,
    registry: CollectorRegistry,
) -> OpenAdrVen:
    """Start the OpenADR VEN feeding the intake, its registration state exported."""
    from adapters.openadr import OpenAdrVen, export_ven_metrics

    ven = OpenAdrVen(config, intake.relay, power.kw, audit=audit, on_prices=prices.put)
    export_ven_metrics(ven, registry)
    ven.start()
    return ven


def start_ven3(
    config: OpenAdr3Config,
    intake: LimitIntake,
    readings: PlanReadings,
    registry: CollectorRegistry | None = None,
) -> OpenAdr3Ven:
    """Start the OpenADR 3.1 VEN: its limits into the intake, its reports from ``readings``,
    its state as metrics in ``registry``."""
    from adapters.openadr3 import OpenAdr3Ven
    from adapters.openadr3.metrics import export_ven3_metrics

    ven = OpenAdr3Ven(config, intake.relay, readings)
    if registry is not None:
        export_ven3_metrics(ven, registry)
    ven.start()
    return ven


@dataclasses.dataclass
class OscpHandle:
    provider: Any
    server: Any
    thread: Any
    port: int

    def stop(self) -> None:
        self.provider.stop()
        stop_api(self.server, self.thread)


def start_oscp(config: OscpConfig, intake: LimitIntake, readings: FleetReadings) -> OscpHandle:
    """Start the OSCP 2.0 flexibility provider: its endpoints (uvicorn thread), then its
    worker; its limits into the intake, its measurements from ``readings``."""
    from adapters.oscp import OscpProvider, serve_fp

    provider = OscpProvider(config, intake.relay, readings)
    server, thread, port = serve_fp(provider)
    provider.start()
    return OscpHandle(provider, server, thread, port)


def ven_ready(ven: OpenAdrVen | None) -> bool:
    """Readiness as far as OpenADR goes: no VEN, or a VEN registered with its VTN."""
    return ven is None or ven.status().registered
