"""OpenADR 3.1 for gridflex: the VEN, its configuration, the wire objects and the mapping.

* :mod:`adapters.openadr3.config` — :class:`OpenAdr3Config` (VTN URL, OAuth 2.0 client
  credentials, subscription kind, safe-mode event, target map) and :class:`OpenAdr3Target`;
* :mod:`adapters.openadr3.wire` — the programs, events and notifications the VEN reads;
* :mod:`adapters.openadr3.mapping` — pure: events → DSO limits (units and ISO 8601 converted
  here), the safe-mode caps, report bodies;
* :mod:`adapters.openadr3.auth` — client-credentials tokens and the VTN's HTTP client;
* :mod:`adapters.openadr3.push` — webhook callback server and websocket listener;
* :mod:`adapters.openadr3.safemode` — the failsafe caps, when they apply, their file;
* :mod:`adapters.openadr3.ven` — :class:`OpenAdr3Ven`, the VEN on its own thread;
* :mod:`adapters.openadr3.readings` — USAGE / BASELINE / regulation from a running service;
* :mod:`adapters.openadr3.metrics` — the VEN's state as Prometheus gauges.

Wiring, in short (``gridflex serve`` does this when ``openadr3`` is configured)::

    ven = OpenAdr3Ven(config, publish=intake.relay, readings=readings_of)
    ven.start()
    …
    ven.stop()
"""

from __future__ import annotations

from adapters.openadr3.auth import AuthRefused, TokenSource, VtnClient, VtnError
from adapters.openadr3.config import OpenAdr3Config, OpenAdr3Target
from adapters.openadr3.mapping import (
    Readings,
    add_duration,
    event_to_limits,
    event_windows,
    limit_id,
    power_kw,
    report_body,
    safe_mode_caps,
    safe_mode_limits,
)
from adapters.openadr3.ven import OpenAdr3Ven, Ven3Status

__all__ = [
    "AuthRefused",
    "OpenAdr3Config",
    "OpenAdr3Target",
    "OpenAdr3Ven",
    "Readings",
    "TokenSource",
    "Ven3Status",
    "VtnClient",
    "VtnError",
    "add_duration",
    "event_to_limits",
    "event_windows",
    "limit_id",
    "power_kw",
    "report_body",
    "safe_mode_caps",
    "safe_mode_limits",
]
