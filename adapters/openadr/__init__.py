"""OpenADR 2.0b for gridflex: the VEN, its configuration and the event mapping.

One import for the three modules that make up the OpenADR adapter:

* :mod:`adapters.openadr.config` — :class:`OpenAdrConfig` (VTN URL, TLS material, VTN
  fingerprint, target map, SIMPLE levels) and :class:`OpenAdrTarget`;
* :mod:`adapters.openadr.mapping` — the pure functions: :func:`event_to_limits`,
  :func:`event_to_prices`, :func:`decide_opt`, :func:`price_series`;
* :mod:`adapters.openadr.ven` — :class:`OpenAdrVen`, openleadr's client on its own
  thread (registration, polling, opt in/out, TELEMETRY_USAGE reports).

Wiring, in short::

    ven = OpenAdrVen(config, publish=hand_to_service, measured_kw=power_of_target)
    ven.start()            # registers in the background; ven.wait_registered(…)
    …
    ven.stop()
"""

from __future__ import annotations

from adapters.openadr.config import OpenAdrConfig, OpenAdrTarget
from adapters.openadr.mapping import (
    Feasibility,
    OptType,
    PricePoint,
    decide_opt,
    event_to_limits,
    event_to_prices,
    limit_event_id,
    price_series,
)
from adapters.openadr.ven import OpenAdrVen, OptDecision, VenStatus, export_ven_metrics

__all__ = [
    "Feasibility",
    "OpenAdrConfig",
    "OpenAdrTarget",
    "OpenAdrVen",
    "OptDecision",
    "OptType",
    "PricePoint",
    "VenStatus",
    "decide_opt",
    "event_to_limits",
    "event_to_prices",
    "export_ven_metrics",
    "limit_event_id",
    "price_series",
]
