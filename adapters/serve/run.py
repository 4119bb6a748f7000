"""``gridflex serve``: one replica with health endpoints, on Kafka or the in-process bus.

The loop runs until SIGTERM/SIGINT, then stops polling, publishes what is pending,
commits and closes. Logs are structured (JSON in production) with feeder, partition and
offset context on every rejected record.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from types import FrameType

import structlog

from adapters.dso.intake import LimitIntake
from adapters.openadr3.readings import PlanReadings
from adapters.ops.health import HealthServer
from adapters.ops.metrics import Metrics
from adapters.oscp.readings import FleetReadings
from adapters.serve.settings import ServeSettings, load_feeder_models, load_topology
from adapters.serve.wiring import (
    BusInbox,
    PowerSnapshot,
    PriceInbox,
    audit_events,
    consumer_lag,
    hosting_view,
    open_audit,
    service_events,
    start_api,
    start_history,
    start_oscp,
    start_ven,
    start_ven3,
    ven_ready,
)
from adapters.stream.inprocess import InProcessBus, RecordingSink, SystemClock
from aggregator.errors import ConfigError, InvalidInput, raise_if_issues
from aggregator.interfaces import SetpointSink
from aggregator.service.planrunner import EngineFactory, ProcessPlanRunner
from aggregator.service.replica import Service
from markets.activation import ReserveActivation

__all__ = ["configure_logging", "serve"]


def configure_logging(fmt: str, level: str) -> None:
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    )
    logging.basicConfig(level=level, stream=sys.stderr, format="%(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("openleadr").setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
    )


def serve(
    settings: ServeSettings,
    stop: threading.Event | None = None,
    *,
    sink: SetpointSink | None = None,
) -> int:
    """Run until ``stop`` is set or a termination signal arrives; returns an exit code.

    ``sink`` takes the embedded service's setpoint batches (default: kept in memory; on
    Kafka they go to the setpoints topic and ``sink`` is not used)."""
    configure_logging(settings.log_format, settings.log_level)
    log = structlog.get_logger("gridflex.serve")
    stop = stop or threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal", signum=signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    try:
        topology = load_topology(settings.topology)
        config = settings.service.config()
        raise_if_issues(config.validate(), ConfigError)
    except InvalidInput as exc:  # reported like a settings error, not as a traceback
        log.error("invalid_configuration", issues=[str(i) for i in exc.issues])
        return 2
    metrics = Metrics()
    clock = SystemClock()
    try:  # the whole chain is verified: a broken one is refused, never continued
        api_log = settings.api.audit_log if settings.api is not None else None  # older name
        audit = open_audit(settings.audit_log or api_log, metrics.registry)
    except InvalidInput as exc:
        log.error("audit_log_refused", issues=[str(i) for i in exc.issues])
        return 2
    history = start_history(settings.history, topology, metrics.registry)  # off: None
    events = service_events(audit_events(audit) if audit is not None else None, history)
    if settings.kafka is not None:
        from adapters.stream.runner import StreamRunner

        try:  # topics are created at start; one that cannot be is named, with its command
            runner = StreamRunner(
                topology,
                config,
                settings.kafka,
                clock=clock,
                metrics=metrics,
                events=events,
                wrap_sink=history.tee if history is not None else None,
            )
        except ConfigError as exc:
            log.error("kafka_topics", issues=[str(i) for i in exc.issues])
            if history is not None:
                history.close(timeout_s=1.0)
            return 2
        http = HealthServer(
            settings.http_host,
            settings.http_port,
            metrics,
            ready=lambda: runner.ready and ven_ready(ven),
            last_loop=lambda: runner.last_loop,
        )
        ven = None
        http.start()
        api = None
        intake = None
        follower = None
        dso_sides = (settings.api, settings.openadr, settings.openadr3, settings.oscp)
        if any(side is not None for side in dso_sides):
            from adapters.dso.replay import GridSignalFollower
            from adapters.serve.wiring import kafka_publisher

            publish = kafka_publisher(runner.producer, runner.topics.grid_signals)
            intake = LimitIntake(topology, publish, audit=audit, clock=clock.now, fleet_shares=True)
            follower = GridSignalFollower(
                settings.kafka.bootstrap, runner.topics.grid_signals, intake
            )
            replayed = follower.replay()  # the book before the API answers, then kept current
            follower.start()
            log.info("limits_replayed", records=replayed, in_force=len(intake.book))
        keys = None  # idempotency keys on a compacted topic: they survive restarts
        if settings.api is not None and intake is not None:
            from adapters.api.durable import KafkaIdempotencyStore

            keys = KafkaIdempotencyStore(
                settings.kafka.bootstrap, f"{runner.topics.grid_signals}.api-idempotency"
            )
            keys.replay()
            keys.start()
            hosting = hosting_view(load_feeder_models(settings.topology), topology, clock)
            api = start_api(
                settings.api,
                topology,
                intake,
                lambda: runner.service,
                clock,
                hosting,
                idempotency=keys,
            )
            log.info("api", port=api.port, mutual_tls=settings.api.client_ca is not None)
        power, prices = PowerSnapshot(), PriceInbox()
        if settings.openadr is not None and intake is not None:
            ven = start_ven(settings.openadr, intake, power, prices, audit, metrics.registry)
            log.info("openadr_ven", vtn=settings.openadr.vtn_url)
        readings3, ven3 = PlanReadings(), None  # OpenADR 3.1 VEN (off unless configured)
        if settings.openadr3 is not None and intake is not None:
            ven3 = start_ven3(settings.openadr3, intake, readings3, metrics.registry)
            log.info("openadr3_ven", vtn=settings.openadr3.vtn_url)
        oscp_readings, oscp = FleetReadings(), None  # OSCP 2.0 FP (off unless configured)
        if settings.oscp is not None and intake is not None:
            oscp = start_oscp(settings.oscp, intake, oscp_readings)
            log.info("oscp_fp", port=oscp.port, groups=len(settings.oscp.groups))
        log.info(
            "serving",
            mode="kafka",
            bootstrap=settings.kafka.bootstrap,
            group=settings.kafka.group_id,
            http_port=http.port,
        )
        splitter = None  # fleet caps re-split by demand (confluent-kafka only)
        if settings.kafka.fleet_split_interval_s > 0 and settings.kafka.client == "confluent":
            from adapters.stream.fleet import FleetSplitter

            splitter = FleetSplitter(settings.kafka, topology).start()
        try:
            refreshed = lagged = 0.0
            while not stop.is_set():
                runner.poll_once()
                if time.monotonic() - refreshed >= 1.0:
                    refreshed = time.monotonic()
                    power.refresh(runner.service)
                    prices.drain(runner.service)
                    readings3.refresh(runner.service)
                    oscp_readings.refresh(runner.service)
                    metrics.fleet.observe(runner.service)
                if time.monotonic() - lagged >= 15.0:  # broker round trips: seldom
                    lagged = time.monotonic()
                    consumed = [runner.topics.telemetry, runner.topics.grid_signals]
                    metrics.fleet.set_consumer_lag(consumer_lag(runner.transport, consumed))
                if history is not None:
                    history.sample(runner.service)
        finally:
            if ven is not None:
                ven.stop()
            if ven3 is not None:
                ven3.stop()
            if oscp is not None:
                oscp.stop()
            if api is not None:
                api.stop()
            if keys is not None:
                keys.stop()
            if follower is not None:
                follower.stop()
            if splitter is not None:
                splitter.stop()
            runner.close()
            if history is not None:
                history.close()
            http.stop()
            log.info("stopped", audit_head=audit.head if audit is not None else None)
        return 0
    bus = InProcessBus()
    setpoints = metrics.fleet.leases(sink if sink is not None else RecordingSink())
    if history is not None:  # setpoint sums per site/feeder come from the delivered batches
        setpoints = history.tee(setpoints)
    svc = Service(  # the planner in a worker process: this loop never waits for a plan
        topology,
        config,
        clock=clock,
        sink=setpoints,
        events=events,
        activation=ReserveActivation(),
        runner=ProcessPlanRunner(EngineFactory(config)),
    )
    last = [time.monotonic()]
    ven = None
    http = HealthServer(
        settings.http_host,
        settings.http_port,
        metrics,
        ready=lambda: ven_ready(ven),
        last_loop=lambda: last[0],
    )
    http.start()
    metrics.ready.set(1)
    inbox = BusInbox()  # API and VEN threads -> the in-process bus, drained by this loop
    intake = LimitIntake(
        topology, inbox.publisher(svc.topics.grid_signals), audit=audit, clock=clock.now
    )
    api = None
    if settings.api is not None:
        hosting = hosting_view(load_feeder_models(settings.topology), topology, clock)
        telemetry = inbox.ingest(svc.topics.telemetry)
        api = start_api(settings.api, topology, intake, lambda: svc, clock, hosting, telemetry)
        log.info("api", port=api.port, mutual_tls=settings.api.client_ca is not None)
    power, prices = PowerSnapshot(), PriceInbox()
    if settings.openadr is not None:
        ven = start_ven(settings.openadr, intake, power, prices, audit, metrics.registry)
        log.info("openadr_ven", vtn=settings.openadr.vtn_url)
    readings3, ven3 = PlanReadings(), None
    if settings.openadr3 is not None:
        ven3 = start_ven3(settings.openadr3, intake, readings3, metrics.registry)
        log.info("openadr3_ven", vtn=settings.openadr3.vtn_url)
    oscp_readings, oscp = FleetReadings(), None
    if settings.oscp is not None:
        oscp = start_oscp(settings.oscp, intake, oscp_readings)
        log.info("oscp_fp", port=oscp.port, groups=len(settings.oscp.groups))
    log.info("serving", mode="embedded", http_port=http.port)
    observed = 0.0
    try:
        while not stop.is_set():
            last[0] = time.monotonic()
            inbox.drain_into(bus)
            prices.drain(svc)
            power.refresh(svc)
            readings3.refresh(svc)
            oscp_readings.refresh(svc)
            for rec in bus.poll():
                if (reason := svc.handle(rec)) is not None:
                    metrics.rejected.labels(reason[:40]).inc()
            if time.monotonic() - observed >= 1.0:
                observed = time.monotonic()
                metrics.set_headroom(metrics.fleet.observe(svc))
            svc.tick()
            if history is not None:
                history.sample(svc)
            stop.wait(settings.tick_s)
    finally:
        if ven is not None:
            ven.stop()
        if ven3 is not None:
            ven3.stop()
        if oscp is not None:
            oscp.stop()
        if api is not None:
            api.stop()
        svc.close()  # stops the plan worker
        if history is not None:
            history.close()
        http.stop()
        log.info("stopped", audit_head=audit.head if audit is not None else None)
    return 0
