"""``gridflex edge``: run the charging-station area controller beside a site or a CSMS.

Composition root of the edge: settings (YAML file and/or ``GRIDFLEX_EDGE__*``), the wall
clock, the upstream (Kafka when ``kafka_bootstrap`` is set, else the embedded bus: a
stand-alone demo with no aggregator), and the registered targets (OCPP stations; S2
resource managers). Runs until SIGINT/SIGTERM; exit code 2 on invalid settings.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated

import typer

from aggregator.errors import ConfigError

__all__ = ["edge"]


def edge(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML settings file.", exists=True)
    ] = None,
    port: Annotated[int | None, typer.Option(help="OCPP port (overrides the settings).")] = None,
    state_dir: Annotated[
        Path | None, typer.Option(help="Buffer and state directory (overrides the settings).")
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Validate the settings, print them, and exit.")
    ] = False,
) -> None:
    """Run gridflex edge: OCPP 2.0.1/2.1 endpoint, failsafe and local balancing, durable
    telemetry buffer (see README, "Run gridflex edge")."""
    from adapters.csms.edge.settings import load_edge_settings

    try:
        settings = load_edge_settings(config)
    except ConfigError as exc:
        for issue in exc.issues:
            typer.echo(f"settings: {issue}", err=True)
        raise typer.Exit(2) from None
    if port is not None:
        settings.ocpp.port = port
    if state_dir is not None:
        settings.state_dir = state_dir
    if check:
        typer.echo(settings.model_dump_json(indent=2))
        return
    asyncio.run(_run(settings))


async def _run(settings: object) -> None:
    from adapters.csms.edge.health import serve_health
    from adapters.csms.edge.runner import EdgeRunner
    from adapters.csms.edge.settings import EdgeSettings
    from adapters.csms.edge.upstream import EmbeddedUpstream, KafkaUpstream, Upstream
    from adapters.stream.inprocess import InProcessBus, SystemClock

    assert isinstance(settings, EdgeSettings)
    upstream: Upstream
    if settings.kafka_bootstrap:
        upstream = KafkaUpstream(
            settings.kafka_bootstrap,
            settings.csms_id,
            settings.edge_id,
            topics=settings.topics(),
            reports_topic=settings.reports_topic,
        )
    else:
        upstream = EmbeddedUpstream(
            InProcessBus(),
            settings.csms_id,
            topics=settings.topics(),
            reports_topic=settings.reports_topic,
        )
    runner = EdgeRunner(settings, SystemClock(), upstream)
    health = serve_health(runner)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    typer.echo(
        f"gridflex edge {settings.edge_id} for CSMS {settings.csms_id}: OCPP on "
        f"{settings.ocpp.host}:{settings.ocpp.port} (security profile "
        f"{settings.ocpp.security_profile}), upstream "
        f"{settings.kafka_bootstrap or 'embedded'}"
        + ("" if health is None else f"; health on {settings.http_host}:{health.port}"),
        err=True,
    )
    try:
        await runner.run(stop)
    finally:
        if health is not None:
            health.stop()
    close = getattr(upstream, "close", None)
    if close is not None:
        close()
