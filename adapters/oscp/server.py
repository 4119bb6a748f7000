"""The FP's OSCP 2.0 endpoints (FastAPI), served with uvicorn on its own thread.

Under :data:`~adapters.oscp.config.FP_PATH` the Capacity Provider calls ``/register``,
``/handshake``, ``/handshake_acknowledgement`` (also the ``_acknowledgment`` spelling pyoscp
uses), ``/heartbeat`` and ``/update_group_capacity_forecast``. Each request, in order:

1. the token (``Authorization: Token …``) — missing or wrong: **401**, counted, the body
   is not read further;
2. ``X-Request-ID`` present, the body JSON and a valid message (``extra="forbid"``), and
   then what the message means (a known group, blocks that end after they start, OSCP
   2.0) — any problem: **400** with *every* problem as ``{"issues": [{field, code, message,
   ids}]}``, counted, nothing applied;
3. the provider's handler; **204**.

:func:`serve_fp` starts it (port 0: any free port) and tells the provider its base URL.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from adapters.ops.webserver import api_port, serve_api
from adapters.oscp.config import FP_PATH
from adapters.oscp.provider import OscpProvider
from adapters.oscp.wire import (
    GroupCapacityForecast,
    Handshake,
    HandshakeAcknowledgement,
    Heartbeat,
    Register,
)
from aggregator.errors import Issue

__all__ = ["create_fp_app", "serve_fp"]

Handler = Callable[[Any, str, str | None], list[Issue] | None]


def _issue_json(i: Issue) -> dict[str, Any]:
    return {"field": i.field, "code": i.code, "message": i.message, "ids": list(i.ids)}


def _pydantic_issues(exc: ValidationError) -> list[Issue]:
    return [
        Issue(
            field=".".join(str(p) for p in e["loc"]) or "body",
            code=str(e["type"]),
            message=str(e["msg"]),
        )
        for e in exc.errors()
    ]


def create_fp_app(provider: OscpProvider) -> FastAPI:
    """The FP's endpoints over ``provider``."""
    app = FastAPI(title="gridflex OSCP 2.0 flexibility provider", openapi_url=None)

    def route(
        path: str, model: type[BaseModel], handle: Handler, *, register: bool = False
    ) -> None:
        async def endpoint(request: Request) -> Response:
            if not provider.authenticate(request.headers.get("authorization"), register=register):
                return JSONResponse(
                    {"issues": [{"field": "Authorization", "code": "invalid_token"}]},
                    status_code=401,
                )
            issues: list[Issue] = []
            request_id = request.headers.get("x-request-id")
            if not request_id:
                issues.append(
                    Issue(field="X-Request-ID", code="missing_header", message="is required")
                )
            msg: BaseModel | None = None
            try:
                msg = model.model_validate(json.loads(await request.body()))
            except ValueError as exc:  # JSON or ValidationError (a ValueError)
                if isinstance(exc, ValidationError):
                    issues += _pydantic_issues(exc)
                else:
                    issues.append(Issue(field="body", code="invalid_json", message=str(exc)))
            if msg is not None and request_id:
                corr = request.headers.get("x-correlation-id")
                found = await run_in_threadpool(handle, msg, request_id, corr)
                issues += found or []
            if issues:
                provider.count("bad_request")
                return JSONResponse({"issues": [_issue_json(i) for i in issues]}, status_code=400)
            return Response(status_code=204)

        app.post(f"{FP_PATH}/{path}", status_code=204)(endpoint)

    route(
        "register",
        Register,
        lambda m, rid, corr: provider.on_register(m, rid, corr),
        register=True,
    )
    route("handshake", Handshake, lambda m, rid, corr: provider.on_handshake(m, rid))
    for spelling in ("handshake_acknowledgement", "handshake_acknowledgment"):
        route(spelling, HandshakeAcknowledgement, lambda m, rid, c: provider.on_handshake_ack(m))
    route("heartbeat", Heartbeat, lambda m, rid, corr: provider.on_heartbeat(m))
    route(
        "update_group_capacity_forecast",
        GroupCapacityForecast,
        lambda m, rid, corr: provider.on_forecast(m, rid),
    )
    return app


def serve_fp(provider: OscpProvider) -> tuple[uvicorn.Server, Any, int]:
    """Serve the FP's endpoints on the configured host/port; returns (server, thread, port)
    once it listens, with ``provider.base_url`` set (``public_url`` when configured)."""
    cfg = provider.config
    server, thread = serve_api(create_fp_app(provider), cfg.host, cfg.port)
    port = api_port(server)
    if provider.base_url is None:
        provider.base_url = f"http://{cfg.host}:{port}{FP_PATH}"
    return server, thread, port
