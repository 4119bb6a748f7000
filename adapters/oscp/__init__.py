"""OSCP 2.0 for gridflex: the Flexibility Provider (FP) side of a link with a Capacity
Provider (CP, the DSO), its configuration, wire messages and mapping.

* :mod:`adapters.oscp.config` — :class:`OscpConfig` (tokens, CP, timing, group → target);
* :mod:`adapters.oscp.wire` — the OSCP 2.0 messages (pydantic, ``extra="forbid"``);
* :mod:`adapters.oscp.mapping` — pure: forecasts → DSO limits (units → kW here), the
  measurement and adjustment bodies;
* :mod:`adapters.oscp.client` — requests to the CP (httpx, token, request ids);
* :mod:`adapters.oscp.server` — the FP's endpoints (FastAPI on uvicorn);
* :mod:`adapters.oscp.provider` — :class:`OscpProvider`: the link, fallback, measurements;
* :mod:`adapters.oscp.readings` — measured / required kW per target from a running service.

Wiring, in short (``gridflex serve`` does this when ``oscp`` is configured)::

    fp = OscpProvider(config, publish=intake.relay, readings=readings)
    server, thread, port = serve_fp(fp)
    fp.start()
    …
    fp.stop(); stop_api(server, thread)
"""

from __future__ import annotations

from adapters.oscp.client import CpClient, CpRefused
from adapters.oscp.config import FP_PATH, OscpConfig, OscpGroup
from adapters.oscp.mapping import block_kw, forecast_issues, forecast_limits, limit_id
from adapters.oscp.provider import OscpProvider, OscpStatus
from adapters.oscp.readings import FleetReadings
from adapters.oscp.server import create_fp_app, serve_fp

__all__ = [
    "FP_PATH",
    "CpClient",
    "CpRefused",
    "FleetReadings",
    "OscpConfig",
    "OscpGroup",
    "OscpProvider",
    "OscpStatus",
    "block_kw",
    "create_fp_app",
    "forecast_issues",
    "forecast_limits",
    "limit_id",
    "serve_fp",
]
