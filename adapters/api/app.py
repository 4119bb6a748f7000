"""The REST API for DSOs (FastAPI): limits in, sites, feeders and flexibility out.

Routes (all under ``/v1``, bearer tokens with scopes — see :mod:`adapters.api.auth`):

========================================  ===================  ============================
route                                     scope                does
========================================  ===================  ============================
``POST /v1/limits``                       ``limits:write``     announce or revise a limit
``GET /v1/limits[?active_at=]``           ``limits:read``      limits in force in your areas
``GET /v1/limits/{event_id}``             ``limits:read``      one of them
``DELETE /v1/limits/{event_id}``          ``limits:write``     cancel one of yours
``GET /v1/sites``                         ``grid:read``        sites in your areas
``GET /v1/feeders/{feeder_id}``           ``grid:read``        a feeder with hosting capacity
``GET /v1/flexibility``                   ``grid:read``        how far the fleet can move
``POST /v1/telemetry``                    ``telemetry:write``  telemetry (embedded mode)
========================================  ===================  ============================

Invariants:

* **One intake.** The API only translates: a posted limit becomes a
  :class:`~aggregator.limits.DsoLimit` with source ``rest:<dso>`` and goes to the DSO intake
  (:class:`~adapters.dso.intake.LimitIntake`), which validates it, publishes it keyed by
  feeder, audits it once and keeps the book of limits in force. ``GET /v1/limits`` reads
  that book: limits from *every* source (REST, OpenADR …) on the caller's areas, with their
  ``source``.
* **Nothing is applied before everything is checked**, and the answer tells the truth: a
  201/200 means published and recorded; a 4xx means nothing was applied; a 503 means the
  publish failed and nothing was recorded (retry with the same key). Event ids match
  :data:`~adapters.dso.intake.EVENT_ID_PATTERN`; times are ISO 8601 strings with an offset
  within 2000–2100; a window already over, a ``fleet`` limit with a ``target_id``, duplicate
  JSON keys are 422; a body over :data:`MAX_BODY_BYTES` is 413.
* A DSO changes only its own limits inside its own areas: a limit outside the caller's
  areas is answered as if it did not exist (404), one of its own outside the token's areas
  is a 403, another source's limit inside them is a 403 on ``DELETE`` and a 409 on a
  ``POST`` reusing its event id. ``target_type: "transformer"`` is stored as ``"feeder"``.
* Writes are idempotent: ``POST`` requires ``Idempotency-Key`` (a 422 without one, as the
  OpenAPI document says); ``DELETE`` takes one optionally (:mod:`adapters.api.idempotency`).
* Bad input is a 422 ``{"detail": [{"field", "code", "message"}, ...]}`` listing *every*
  problem, after authentication (401/403 first).

The OpenAPI export is in :mod:`adapters.api.server`, serving and mutual TLS in
:mod:`adapters.ops.webserver`; the telemetry route in :mod:`adapters.api.telemetry`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Final

import structlog
from fastapi import APIRouter, FastAPI, Header, HTTPException, Path, Query, Response, status
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters.api.auth import (
    GridReader,
    LimitsReader,
    LimitsWriter,
    Principal,
    TokenRegistry,
    may_touch,
)
from adapters.api.checks import (
    JsonBodyLimit,
    StrictJsonRoute,
    limit_body_issues,
    on_http_error,
    on_validation_error,
    problems,
)
from adapters.api.idempotency import IdempotencyStore, StoredResponse, fingerprint
from adapters.api.models import (
    ApiTime,
    ErrorDetail,
    FeederOut,
    FlexibilityOut,
    HostingCapacity,
    LimitIn,
    LimitOut,
    Problems,
    SiteOut,
)
from adapters.api.telemetry import TelemetryIngest, telemetry_router, telemetry_schemas
from adapters.dso.intake import EVENT_ID_PATTERN, EVENT_ID_TAKEN, BookEntry, LimitIntake
from aggregator.errors import InvalidInput, TransientIO
from aggregator.limits import Direction, DsoLimit, TargetType
from aggregator.topology import Topology

__all__ = [
    "API_VERSION",
    "MAX_BODY_BYTES",
    "SOURCE",
    "ApiContext",
    "create_app",
    "dso_of",
    "rest_source",
]

API_VERSION: Final = "1.1.0"
MAX_BODY_BYTES: Final = 64 * 1024
SOURCE: Final = "rest"
REPLAYED: Final = "Idempotent-Replayed"

_log = structlog.get_logger("gridflex.api")


def rest_source(dso: str) -> str:
    """The intake source of a DSO's REST limits."""
    return f"{SOURCE}:{dso}"


def dso_of(source: str) -> str | None:
    """The DSO behind a REST source (``rest:<dso>``), else ``None``."""
    prefix = SOURCE + ":"
    return source[len(prefix) :] if source.startswith(prefix) else None


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class ApiContext:
    """What the API needs from the service around it.

    ``hosting(feeder_id)`` returns ``{"start", "step_s", "site_kw": {site: [kW...]}}``
    (raise :class:`LookupError` for a feeder without a grid model); ``flexibility(feeders)``
    returns ``{"start", "step_s", "up_kw": [...], "down_kw": [...]}`` (raise
    :class:`LookupError` when there is no plan yet); ``telemetry(records)`` takes validated
    telemetry (``None``: the route answers 503, telemetry goes to the Kafka topic).
    """

    topology: Topology
    intake: LimitIntake
    tokens: TokenRegistry
    idempotency: IdempotencyStore = field(default_factory=IdempotencyStore)
    clock: Callable[[], datetime] = _utc_now
    hosting: Callable[[str], Mapping[str, Any]] | None = None
    flexibility: Callable[[frozenset[str]], Mapping[str, Any]] | None = None
    telemetry: TelemetryIngest | None = None


IdempotencyKey = Annotated[
    str,
    Header(alias="Idempotency-Key", min_length=1, max_length=255, description="Unique per write"),
]
OptionalIdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=255, description="Unique per write"),
]
EventIdPath = Annotated[str, Path(pattern=EVENT_ID_PATTERN, description="An event id")]

_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    401: {"model": ErrorDetail, "description": "Missing or invalid bearer token"},
    403: {"model": ErrorDetail, "description": "Token lacks the scope or the area"},
    422: {"model": Problems, "description": "Every problem with the request"},
}
_DESCRIBED: Final = {
    404: "Not found (or outside your areas)",
    409: "Idempotency-Key reused, or event id taken by another source",
    413: "Body larger than 64 KiB",
    503: "Not available now; retry",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses: 401, 403, 422 and ``codes``."""
    out = dict(_ERRORS)
    for c in codes:
        out[c] = {"model": ErrorDetail, "description": _DESCRIBED[c]}
    return out


def _out(entry: BookEntry) -> LimitOut:
    lim = entry.limit
    return LimitOut(
        event_id=lim.event_id,
        target_type=lim.target_type.value,
        target_id=lim.target_id,
        start=lim.start,
        end=lim.end,
        limit_kw=lim.limit_kw,
        priority=lim.priority,
        direction=lim.direction.value,
        source=lim.source,
        dso=dso_of(lim.source),
        created_at=entry.received_at,
    )


def _replay_or_conflict(ctx: ApiContext, dso: str, key: str | None, fp: str) -> Response | None:
    """The stored response for a repeated key and request; 409 for a reused key."""
    if key is None:
        return None
    prior = ctx.idempotency.get(dso, key, ctx.clock())
    if prior is None:
        return None
    if prior.fingerprint != fp:
        raise HTTPException(
            status.HTTP_409_CONFLICT, "Idempotency-Key already used for a different request"
        )
    media = "application/json" if prior.body else None
    return Response(prior.body, prior.status_code, {REPLAYED: "true"}, media_type=media)


def _unavailable(exc: TransientIO) -> HTTPException:
    _log.error("publish_failed", error=str(exc))
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        "could not pass the request on to the service; nothing was applied; retry with the "
        "same Idempotency-Key",
    )


def _visible(ctx: ApiContext, principal: Principal, event_id: str) -> BookEntry:
    """A limit in force the caller may see: 404 when absent or outside the caller's areas
    (403 when it is the caller's own, outside this token's areas)."""
    entry = ctx.intake.book.get(event_id)
    if entry is not None and entry.limit.end <= ctx.clock():
        entry = None
    if entry is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no limit {event_id!r}")
    if not may_touch(principal, entry.limit, ctx.topology):
        if dso_of(entry.source) == principal.dso:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"limit {event_id!r} is outside your areas"
            )
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no limit {event_id!r}")
    return entry


def _limits_router(ctx: ApiContext) -> APIRouter:
    router = APIRouter(route_class=StrictJsonRoute)

    @router.post(
        "/v1/limits",
        status_code=201,
        response_model=LimitOut,
        responses={
            200: {"model": LimitOut, "description": "Revised event"},
            **errors(409, 413, 503),
        },
    )
    def post_limit(body: LimitIn, principal: LimitsWriter, key: IdempotencyKey) -> Response:
        """Announce a limit, or revise one of yours (same event id)."""
        topo = ctx.topology
        issues = limit_body_issues(body.model_dump(), principal, topo)
        if issues:
            return problems(issues)
        kind = (
            TargetType.FEEDER if body.target_type == "transformer" else TargetType(body.target_type)
        )
        target_id = body.target_id or "fleet"
        area = None if kind is TargetType.FLEET else target_id
        if kind is TargetType.SITE:
            area = topo.sites[topo.site_index[target_id]].feeder_id
        if area is None and not principal.all_areas:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "a fleet limit needs all areas ('*')")
        if area is not None and not principal.has_area(area):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"feeder {area!r} is not in your areas")
        fp = fingerprint("POST", "/v1/limits", body.model_dump(mode="json"))
        source = rest_source(principal.dso)
        with ctx.intake.lock:
            replay = _replay_or_conflict(ctx, principal.dso, key, fp)
            if replay is not None:
                return replay
            event_id = body.event_id or str(uuid.uuid4())
            existing = ctx.intake.book.get(event_id)
            mine = existing is not None and existing.source == source
            if mine and existing is not None and not may_touch(principal, existing.limit, topo):
                raise HTTPException(
                    status.HTTP_403_FORBIDDEN, f"limit {event_id!r} is outside your areas"
                )
            limit = DsoLimit(
                event_id=event_id,
                target_type=kind,
                target_id=target_id,
                start=body.start,
                end=body.end,
                limit_kw=body.limit_kw,
                priority=body.priority,
                source=source,
                direction=Direction(body.direction),
            )
            try:
                entry, before = ctx.intake.submit(limit)
            except InvalidInput as exc:
                if any(i.code == EVENT_ID_TAKEN for i in exc.issues):
                    raise HTTPException(
                        status.HTTP_409_CONFLICT, f"event id {event_id!r} is taken"
                    ) from None
                return problems(list(exc.issues))
            except TransientIO as exc:
                raise _unavailable(exc) from None
            code = 200 if before is not None else 201
            content = _out(entry).model_dump_json().encode("utf-8")
            ctx.idempotency.remember(
                principal.dso, key, StoredResponse(fp, code, content, entry.received_at)
            )
        _log.info("limit_received", event_id=event_id, dso=principal.dso, revised=code == 200)
        return Response(content, code, {"Location": f"/v1/limits/{event_id}"}, "application/json")

    @router.get("/v1/limits", responses=errors())
    def list_limits(
        principal: LimitsReader,
        active_at: Annotated[
            ApiTime | None, Query(description="Only limits in force at this instant")
        ] = None,
    ) -> list[LimitOut]:
        """Limits in force in your areas, from every source, by start."""
        out = [
            e
            for e in ctx.intake.book.entries(ctx.clock())
            if may_touch(principal, e.limit, ctx.topology)
            and (active_at is None or e.limit.start <= active_at < e.limit.end)
        ]
        return [_out(e) for e in out]

    @router.get("/v1/limits/{event_id}", responses=errors(404))
    def get_limit(event_id: EventIdPath, principal: LimitsReader) -> LimitOut:
        """One limit in force in your areas."""
        return _out(_visible(ctx, principal, event_id))

    @router.delete("/v1/limits/{event_id}", status_code=204, responses=errors(404, 409, 503))
    def delete_limit(
        event_id: EventIdPath, principal: LimitsWriter, key: OptionalIdempotencyKey = None
    ) -> Response:
        """Cancel one of your limits."""
        fp = fingerprint("DELETE", f"/v1/limits/{event_id}", None)
        source = rest_source(principal.dso)
        with ctx.intake.lock:
            replay = _replay_or_conflict(ctx, principal.dso, key, fp)
            if replay is not None:
                return replay
            entry = _visible(ctx, principal, event_id)
            if entry.source != source:
                raise HTTPException(
                    status.HTTP_403_FORBIDDEN,
                    f"limit {event_id!r} comes from {entry.source!r}; only its sender cancels it",
                )
            try:
                ctx.intake.cancel(event_id, source=source)
            except TransientIO as exc:
                raise _unavailable(exc) from None
            if key is not None:
                ctx.idempotency.remember(
                    principal.dso, key, StoredResponse(fp, 204, b"", ctx.clock())
                )
        _log.info("limit_cancelled", event_id=event_id, dso=principal.dso)
        return Response(status_code=204)

    return router


def _grid_router(ctx: ApiContext) -> APIRouter:
    router = APIRouter(route_class=StrictJsonRoute)

    @router.get("/v1/sites", responses=errors())
    def list_sites(principal: GridReader) -> list[SiteOut]:
        """Sites in your areas."""
        return [
            SiteOut(
                id=s.site_id,
                feeder=s.feeder_id,
                connection_limit_kw=s.connection_limit_kw,
                csms=s.csms_id,
            )
            for s in ctx.topology.sites
            if principal.has_area(s.feeder_id)
        ]

    @router.get("/v1/feeders/{feeder_id}", responses=errors(404))
    def get_feeder(feeder_id: str, principal: GridReader) -> FeederOut:
        """A feeder in your areas with each site's hosting capacity per step."""
        topo = ctx.topology
        if not principal.has_area(feeder_id):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"feeder {feeder_id!r} is not in your areas"
            )
        if feeder_id not in topo.feeder_index:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no feeder {feeder_id!r}")
        if ctx.hosting is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no grid model")
        try:
            hosting = HostingCapacity.model_validate(ctx.hosting(feeder_id))
        except LookupError:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, f"no grid model for {feeder_id!r}"
            ) from None
        feeder = topo.feeders[topo.feeder_index[feeder_id]]
        return FeederOut(
            id=feeder.feeder_id,
            name=feeder.name,
            limit_kw=feeder.limit_kw,
            sites=[s.site_id for s in topo.sites if s.feeder_id == feeder_id],
            hosting_capacity=hosting,
        )

    @router.get("/v1/flexibility", responses=errors(503))
    def get_flexibility(principal: GridReader) -> FlexibilityOut:
        """How far the fleet in your areas can go up and down in each plan step."""
        feeders = frozenset(
            f.feeder_id for f in ctx.topology.feeders if principal.has_area(f.feeder_id)
        )
        unavailable = HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no plan yet")
        if ctx.flexibility is None:
            raise unavailable
        try:
            data = ctx.flexibility(feeders)
        except LookupError:
            raise unavailable from None
        return FlexibilityOut.model_validate({**data, "feeders": sorted(feeders)})

    return router


def create_app(ctx: ApiContext) -> FastAPI:
    """The FastAPI application over ``ctx`` (OpenAPI at ``/openapi.json``, docs at ``/docs``)."""
    app = FastAPI(
        title="gridflex DSO API",
        version=API_VERSION,
        description=(__doc__ or "").split("\n\n")[0],
    )
    app.state.ctx = ctx
    app.state.tokens = ctx.tokens
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_middleware(JsonBodyLimit, max_bytes=MAX_BODY_BYTES)
    app.include_router(_limits_router(ctx))
    app.include_router(_grid_router(ctx))
    app.include_router(telemetry_router(lambda: ctx.telemetry))
    _with_telemetry_schemas(app)
    return app


def _with_telemetry_schemas(app: FastAPI) -> None:
    """Add the telemetry message schemas the ``/v1/telemetry`` body refers to."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = build()
            doc.setdefault("components", {}).setdefault("schemas", {}).update(
                telemetry_schemas()[1]
            )
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
