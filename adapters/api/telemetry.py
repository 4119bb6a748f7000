"""``POST /v1/telemetry``: how embedded ``gridflex serve`` hears about sessions.

Without Kafka nothing else feeds the service's in-process bus. This route takes a JSON
array of 1–:data:`MAX_MESSAGES` telemetry messages in *exactly* the schema of the
``gridflex.telemetry`` topic (:data:`aggregator.messages.Telemetry`: session started, meter
value, session ended, EVSE heartbeat), checks every one with the topic's own decoder and
hands them to the service's loop (:class:`TelemetryIngest`), in order.

Invariants:

* all or nothing: one bad message makes a 422 listing *every* problem of *every* message
  (``field`` is ``[index].field``), and nothing is handed over;
* a 202 means handed to the service's queue, not yet applied: the service may still
  reject a message for its state (an unknown EVSE's meter value, a stale timestamp), as it
  does on Kafka, and counts it;
* scope ``telemetry:write``; on Kafka (no ingest configured) the route answers 503: send
  telemetry to the topic instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Final

from fastapi import APIRouter, Body, HTTPException, Response, status
from pydantic import TypeAdapter

from adapters.api.auth import TelemetryWriter
from adapters.api.checks import StrictJsonRoute, problems
from adapters.api.models import ErrorDetail, Problems, TelemetryAccepted
from aggregator.errors import InvalidInput, Issue
from aggregator.messages import Telemetry, decode_telemetry

__all__ = ["MAX_MESSAGES", "TelemetryIngest", "telemetry_router", "telemetry_schemas"]

MAX_MESSAGES: Final = 1000
_REF: Final = "#/components/schemas/{model}"


TelemetryIngest = Callable[[Sequence[bytes]], None]
"""Takes validated telemetry records (JSON bytes, the topic's schema); thread-safe."""


def telemetry_schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    """(the request body schema, the component schemas it refers to)."""
    schema = TypeAdapter(Telemetry).json_schema(ref_template=_REF, mode="validation")
    defs = schema.pop("$defs", {})
    body = {"type": "array", "minItems": 1, "maxItems": MAX_MESSAGES, "items": schema}
    return body, defs


def telemetry_router(ingest: Callable[[], TelemetryIngest | None]) -> APIRouter:
    router = APIRouter(route_class=StrictJsonRoute)
    body_schema, _ = telemetry_schemas()

    @router.post(
        "/v1/telemetry",
        status_code=202,
        response_model=TelemetryAccepted,
        responses={
            401: {"model": ErrorDetail, "description": "Missing or invalid bearer token"},
            403: {"model": ErrorDetail, "description": "Token lacks the scope"},
            413: {"model": ErrorDetail, "description": "Body larger than 64 KiB"},
            422: {"model": Problems, "description": "Every problem of every message"},
            503: {"model": ErrorDetail, "description": "No embedded ingest (use Kafka)"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": body_schema}},
            }
        },
    )
    def post_telemetry(
        messages: Annotated[list[Any], Body(min_length=1, max_length=MAX_MESSAGES)],
        principal: TelemetryWriter,
    ) -> Response:
        """Telemetry for the embedded service, in the ``gridflex.telemetry`` schema."""
        sink = ingest()
        if sink is None:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "this replica reads telemetry from Kafka; publish to the telemetry topic",
            )
        records: list[bytes] = []
        issues: list[Issue] = []
        for n, message in enumerate(messages):
            try:
                raw = json.dumps(message, allow_nan=False).encode("utf-8")
            except ValueError:
                issues.append(
                    Issue(field=f"[{n}]", message="NaN and infinity are not numbers", code="finite")
                )
                continue
            try:
                decode_telemetry(raw)
            except InvalidInput as exc:
                issues += [
                    Issue(
                        field=f"[{n}].{i.field}" if i.field else f"[{n}]",
                        message=i.message,
                        ids=i.ids,
                        code=i.code,
                    )
                    for i in exc.issues
                ]
                continue
            records.append(raw)
        if issues:
            return problems(issues)
        sink(records)
        body = TelemetryAccepted(accepted=len(records)).model_dump_json().encode("utf-8")
        return Response(body, 202, media_type="application/json")

    return router
