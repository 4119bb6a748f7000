"""Exporting the REST API's OpenAPI document (``docs/openapi.json``); serving it (uvicorn in
a background thread, optional mutual TLS) is :mod:`adapters.ops.webserver`, re-exported
here for the API's callers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adapters.api.app import ApiContext, create_app
from adapters.api.auth import TokenRegistry
from adapters.dso.intake import LimitIntake
from adapters.ops.webserver import api_port, serve_api, stop_api
from aggregator.topology import Topology

__all__ = ["api_port", "export_openapi", "openapi_document", "serve_api", "stop_api"]


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the API (independent of any context)."""
    topology = Topology((), ())
    empty = ApiContext(topology, LimitIntake(topology, lambda _k, _m: None), TokenRegistry({}))
    return create_app(empty).openapi()


def export_openapi(path: Path) -> Path:
    """Write the OpenAPI document as JSON (sorted keys, indent 2); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(openapi_document(), indent=2, sort_keys=True, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")
    return path
