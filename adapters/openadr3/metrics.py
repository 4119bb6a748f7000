"""The OpenADR 3 VEN's state as Prometheus metrics, read from its status at each scrape.

``gridflex_openadr3_connected`` (1 while the last exchange with the VTN succeeded),
``gridflex_openadr3_auth_refused`` (1 while the token endpoint or VTN refuses the VEN),
``gridflex_openadr3_safe_mode`` (1 while the safe-mode caps are applied),
``gridflex_openadr3_seconds_since_contact`` (since the last successful exchange; -1 before
the first), ``gridflex_openadr3_events`` (events in force), ``gridflex_openadr3_polls``,
``gridflex_openadr3_notifications`` and ``gridflex_openadr3_reports`` (counts since start)
and ``gridflex_openadr3_push_ready`` (websocket connected / webhook serving).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Gauge

from adapters.openadr3.ven import OpenAdr3Ven

__all__ = ["export_ven3_metrics"]


def export_ven3_metrics(ven: OpenAdr3Ven, registry: CollectorRegistry) -> None:
    def since_contact() -> float:
        last = ven.status().last_contact
        return -1.0 if last is None else (datetime.now(UTC) - last).total_seconds()

    gauges = {
        "connected": ("1 while the last exchange with the VTN succeeded", "connected"),
        "auth_refused": ("1 while the VEN's credentials or token are refused", "auth_refused"),
        "safe_mode": ("1 while the safe-mode caps are applied", "safe_mode_active"),
        "events": ("OpenADR 3 events in force", "events"),
        "polls": ("Complete reads of programs and events since start", "polls"),
        "notifications": ("Notifications pushed since start", "notifications"),
        "reports": ("Reports sent since start", "reports"),
        "push_ready": ("1 while the push channel is up", "push_ready"),
    }

    def reader(attr: str) -> Callable[[], float]:
        return lambda: float(getattr(ven.status(), attr))

    for name, (doc, attr) in gauges.items():
        Gauge(f"gridflex_openadr3_{name}", doc, registry=registry).set_function(reader(attr))
    Gauge(
        "gridflex_openadr3_seconds_since_contact",
        "Seconds since the last successful exchange with the VTN (-1: none yet)",
        registry=registry,
    ).set_function(since_contact)
