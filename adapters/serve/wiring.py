"""Wiring the DSO interfaces (REST API, later OpenADR) to a running service replica.

The API answers on its own threads; the service is single-threaded. Limits a DSO sends
are therefore handed over, never applied from an API thread:

* on Kafka they are produced to the grid-signals topic, keyed by the target's feeder, so
  the replica that owns the feeder applies them (and they survive a restart);
* on the in-process bus they go into a queue the service loop drains each turn.

Read views (sites, flexibility) read the service's latest plan, an immutable object.
"""

from __future__ import annotations

import dataclasses
import queue
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from adapters.api.app import ApiContext, create_app, serve_api, stop_api
from adapters.api.auth import TokenRegistry
from adapters.dso.audit import AuditLog
from adapters.serve.settings import ApiSettings
from aggregator.interfaces import Clock
from aggregator.messages import DsoLimitCancel, DsoLimitMessage, GridSignal, encode
from aggregator.planning.request import PlanRequest
from aggregator.service.replica import Service
from aggregator.topology import Topology
from markets.flexibility import fleet_flexibility_kw

__all__ = [
    "ApiHandle",
    "PowerSnapshot",
    "PriceInbox",
    "SignalQueue",
    "audit_events",
    "feeder_key",
    "flexibility_view",
    "hosting_view",
    "kafka_publisher",
    "start_api",
    "validated",
]

Signal = DsoLimitMessage | DsoLimitCancel


def feeder_key(topology: Topology, msg: Signal) -> str:
    """The record key of a grid signal: the feeder its target lies on."""
    if isinstance(msg, DsoLimitCancel):
        return "fleet"
    if msg.target_type == "site":
        site = topology.sites[topology.site_index[msg.target_id]]
        return site.feeder_id
    return msg.target_id


class SignalQueue:
    """Hands grid signals from API threads to the service loop (embedded mode)."""

    def __init__(self) -> None:
        self._q: queue.Queue[Signal] = queue.Queue()

    def put(self, msg: Signal) -> None:
        self._q.put(msg)

    def drain(self, service: Service) -> int:
        n = 0
        while True:
            try:
                msg: GridSignal = self._q.get_nowait()
            except queue.Empty:
                return n
            service.on_grid_signal(msg)
            n += 1


def flexibility_view(service: Service | None, feeders: frozenset[str]) -> Mapping[str, Any]:
    """How far the plan lets the sessions on ``feeders`` move up and down, per step."""
    if service is None or service.plan is None or service.last_request is None:
        raise LookupError("no plan yet")
    plan, req = service.plan, service.last_request
    topo = service.topology
    site_ok = np.array([s.feeder_id in feeders or "*" in feeders for s in topo.sites], dtype=bool)
    keep = site_ok[req.session_site] if req.n_sessions else np.zeros(0, dtype=bool)
    sub_req: PlanRequest = dataclasses.replace(
        req,
        session_site=req.session_site[keep],
        first_step=req.first_step[keep],
        last_step=req.last_step[keep],
        first_frac=req.first_frac[keep],
        last_frac=req.last_frac[keep],
        max_power_kw=req.max_power_kw[keep],
        min_power_kw=req.min_power_kw[keep],
        energy_needed_kwh=req.energy_needed_kwh[keep],
        discharge_budget_kwh=req.discharge_budget_kwh[keep],
        site_constraints=None,
    )
    sub_plan = dataclasses.replace(
        plan,
        power_kw=plan.power_kw[keep],
        energy_kwh=plan.energy_kwh[keep],
        shortfall_kwh=plan.shortfall_kwh[keep],
    )
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
    publish: Callable[[Signal], None],
    service: Callable[[], Service | None],
    clock: Clock,
    audit: AuditLog | None = None,
    hosting: Callable[[str], Mapping[str, Any]] | None = None,
) -> ApiHandle:
    """Start the REST API beside the service loop; returns once it listens."""
    entries = list(settings.tokens)
    tokens = TokenRegistry.from_config(entries)
    if audit is None and settings.audit_log is not None:
        audit = AuditLog(settings.audit_log)
    ctx = ApiContext(
        topology=topology,
        publish=publish,
        tokens=tokens,
        clock=clock.now,
        audit=audit,
        flexibility=lambda feeders: flexibility_view(service(), feeders),
        hosting=hosting,
    )
    server, thread = serve_api(
        create_app(ctx),
        settings.host,
        settings.port,
        certfile=settings.certfile,
        keyfile=settings.keyfile,
        client_ca=settings.client_ca,
    )
    from adapters.api.app import api_port

    return ApiHandle(server, thread, api_port(server))


def audit_events(log: AuditLog) -> Callable[[str, dict[str, object], datetime], None]:
    """The service's event hook writing to a hash-chained audit log."""

    def record(kind: str, payload: dict[str, object], at: datetime) -> None:
        log.append(kind, payload, at, source="service")

    return record


def kafka_publisher(producer: Any, topic: str, topology: Topology) -> Callable[[Signal], None]:
    """Publish grid signals to Kafka, keyed by feeder, and wait until they are stored.

    A cancellation names only the event, so it goes to every feeder's key: the replica
    that holds the limit drops it, the others ignore it (cancels are idempotent).
    """
    keys = sorted({f.feeder_id for f in topology.feeders} | {"fleet"})

    def publish(msg: Signal) -> None:
        targets = keys if isinstance(msg, DsoLimitCancel) else [feeder_key(topology, msg)]
        for key in targets:
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
        f, topo = service.fleet, service.topology
        n = f.n_slots
        live = np.where(f.active[:n], f.power_kw[:n], 0.0)
        site = np.bincount(f.site[:n], weights=live, minlength=topo.n_sites)
        feeder = np.bincount(topo.site_feeder, weights=site, minlength=topo.n_feeders)
        kw = {s.site_id: float(site[i]) for i, s in enumerate(topo.sites)}
        kw.update({fd.feeder_id: float(feeder[i]) for i, fd in enumerate(topo.feeders)})
        kw["fleet"] = float(site.sum())
        self._kw = kw

    def kw(self, target_id: str) -> float:
        return self._kw.get(target_id, 0.0)


def validated(
    topology: Topology, publish: Callable[[Signal], None]
) -> Callable[[Signal], str | None]:
    """Publish a grid signal after checking its target; returns the rejection reason."""

    def send(msg: Signal) -> str | None:
        if isinstance(msg, DsoLimitMessage):
            issues = msg.to_domain().validate(topology)
            if issues:
                return "; ".join(map(str, issues))
        publish(msg)
        return None

    return send


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
