"""The REST API for DSOs (FastAPI): limits in, sites, feeders and flexibility out.

Routes (all under ``/v1``, bearer tokens with scopes — see :mod:`adapters.api.auth`):

========================================  ================  ==============================
route                                     scope             does
========================================  ================  ==============================
``POST /v1/limits``                       ``limits:write``  announce or revise a DSO limit
``GET /v1/limits[?active_at=]``           ``limits:read``   the caller's live limits
``GET /v1/limits/{event_id}``             ``limits:read``   one of them
``DELETE /v1/limits/{event_id}``          ``limits:write``  cancel one of them
``GET /v1/sites``                         ``grid:read``     sites in the caller's areas
``GET /v1/feeders/{feeder_id}``           ``grid:read``     a feeder with hosting capacity
``GET /v1/flexibility``                   ``grid:read``     how far the fleet can go up/down
========================================  ================  ==============================

Invariants:

* A DSO sees and changes only its own limits inside its own areas. Another DSO's limit
  is answered as if it did not exist (404), so existence does not leak; a site outside
  the caller's areas is an "unknown site" (422) for the same reason; a feeder id outside
  the caller's areas is a 403 whether or not it exists.
* ``target_type: "transformer"`` is accepted and stored as ``"feeder"`` with the same id:
  each feeder is one transformer area in gridflex.
* Writes are idempotent: ``POST`` needs an ``Idempotency-Key`` (400 without one);
  ``DELETE`` takes one optionally. Keys are per DSO and kept 24 h. The same key with the
  same request replays the original status and body with ``Idempotent-Replayed: true``;
  with a different request it is a 409. A ``POST`` with an event id the same DSO already
  used replaces that limit (a revised event, 200); another DSO's event id is a 409.
* Every accepted write is published (``DsoLimitMessage`` / ``DsoLimitCancel``, source
  ``rest``) before it is stored, and then appended to the audit log, if one is
  configured, with source ``rest:<dso>``. A failed publish stores nothing (503; retry
  with the same key).
* Bad input is a 422 ``{"detail": [{"field", "message"}, ...]}`` listing *every* problem
  (shape, naive or misordered times, unknown targets, a missing ``Idempotency-Key``).
  Times are ISO 8601 with ``Z`` or an offset and are normalised to UTC.

Mutual TLS is the server's business: :func:`serve_api` runs uvicorn in a background
thread with ``client_ca`` as the trusted CA for client certificates (``CERT_REQUIRED``).
:func:`export_openapi` writes the OpenAPI document (``docs/openapi.json``).
"""

import hashlib
import json
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import structlog
import uvicorn
from fastapi import FastAPI, Header, HTTPException, Query, Request, Response, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from adapters.api.auth import (
    LIMITS_WRITE,
    GridReader,
    LimitsReader,
    LimitsWriter,
    Principal,
    TokenRegistry,
    authenticate,
    may_touch,
    require_scope,
)
from adapters.dso.audit import AuditLog, canonical_json, limit_cancelled, limit_received
from aggregator.errors import ConfigError, Issue, TransientIO
from aggregator.limits import DsoLimit, TargetType
from aggregator.messages import DsoLimitCancel, DsoLimitMessage
from aggregator.topology import Topology

__all__ = [
    "API_VERSION",
    "MAX_LIMIT_KW",
    "ApiContext",
    "FeederOut",
    "FlexibilityOut",
    "HostingCapacity",
    "LimitIn",
    "LimitOut",
    "LimitStore",
    "Problem",
    "Problems",
    "SiteOut",
    "StoredLimit",
    "api_port",
    "create_app",
    "export_openapi",
    "openapi_document",
    "serve_api",
    "stop_api",
]

API_VERSION: Final = "1.0.0"
MAX_LIMIT_KW: Final = 1_000_000.0
IDEMPOTENCY_TTL: Final = timedelta(hours=24)
SOURCE: Final = "rest"
REPLAYED: Final = "Idempotent-Replayed"
_NO_KEY: Final = Issue("header.Idempotency-Key", "required on POST")

_log = structlog.get_logger("gridflex.api")
_DATETIME: Final[TypeAdapter[datetime]] = TypeAdapter(datetime)

Id = Annotated[str, StringConstraints(min_length=1, max_length=128)]

# ------------------------------------------------------------------------- wire models


class LimitIn(BaseModel):
    """A DSO limit as posted: cap on net import (kW) of a target over ``[start, end)``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    event_id: Id | None = Field(None, description="The DSO's event id; generated if absent.")
    target_type: Literal["site", "feeder", "transformer", "fleet"] = Field(
        description="'transformer' is stored as 'feeder' (one feeder per transformer area)."
    )
    target_id: Id | None = Field(
        None, description="Site or feeder id; required unless target_type is 'fleet'."
    )
    start: datetime = Field(description="ISO 8601 with 'Z' or a UTC offset (naive rejected).")
    end: datetime = Field(description="After start; same format.")
    limit_kw: float = Field(
        strict=True, ge=0.0, le=MAX_LIMIT_KW, description="Import cap in kW (0 = off)."
    )
    priority: int = Field(0, strict=True, ge=0, le=100)


class LimitOut(BaseModel):
    """A limit as stored: what the DSO sent, translated, with owner and receipt time."""

    event_id: str
    target_type: Literal["site", "feeder", "fleet"]
    target_id: str
    start: datetime
    end: datetime
    limit_kw: float
    priority: int
    source: str
    dso: str
    created_at: datetime


class SiteOut(BaseModel):
    id: str
    feeder: str
    connection_limit_kw: float
    csms: str


class HostingCapacity(BaseModel):
    """Extra kW each site alone could draw per step without a grid violation."""

    start: datetime
    step_s: float
    site_kw: dict[str, list[float]]


class FeederOut(BaseModel):
    id: str
    name: str
    limit_kw: float
    sites: list[str]
    hosting_capacity: HostingCapacity


class FlexibilityOut(BaseModel):
    """Per plan step, how many kW the fleet in ``feeders`` can add (up) and shed (down)."""

    feeders: list[str]
    start: datetime
    step_s: float
    up_kw: list[float]
    down_kw: list[float]


class Problem(BaseModel):
    field: str
    message: str


class Problems(BaseModel):
    """Every problem found in a request (422)."""

    detail: list[Problem]


class ErrorDetail(BaseModel):
    detail: str


# --------------------------------------------------------------------------- the store


@dataclass(frozen=True, slots=True)
class StoredLimit:
    limit: DsoLimit
    dso: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class _Stored:
    fingerprint: str
    status_code: int
    body: bytes
    at: datetime


class LimitStore:
    """Limits by event id with their owner, and idempotency keys' responses (thread-safe).

    Each method locks briefly; writers hold :attr:`write_lock` around their whole
    read-check-publish-write sequence, so that writes are serialised but reads never wait
    for a publish.
    """

    def __init__(self, *, idempotency_ttl: timedelta = IDEMPOTENCY_TTL) -> None:
        self.write_lock = threading.Lock()
        self.lock = threading.Lock()
        self.idempotency_ttl = idempotency_ttl
        self._limits: dict[str, StoredLimit] = {}
        self._responses: dict[tuple[str, str], _Stored] = {}

    def get(self, event_id: str) -> StoredLimit | None:
        with self.lock:
            return self._limits.get(event_id)

    def put(self, stored: StoredLimit) -> None:
        with self.lock:
            self._limits[stored.limit.event_id] = stored

    def remove(self, event_id: str) -> StoredLimit | None:
        with self.lock:
            return self._limits.pop(event_id, None)

    def limits(self, dso: str | None = None) -> list[StoredLimit]:
        """Stored limits (of ``dso`` if given), by start then event id."""
        with self.lock:
            out = [s for s in self._limits.values() if dso is None or s.dso == dso]
        return sorted(out, key=lambda s: (s.limit.start, s.limit.event_id))

    def expire(self, now: datetime) -> None:
        """Drop limits that have ended and idempotency keys older than the TTL."""
        with self.lock:
            for k in [k for k, s in self._limits.items() if s.limit.end <= now]:
                del self._limits[k]
            old = now - self.idempotency_ttl
            for key in [k for k, r in self._responses.items() if r.at <= old]:
                del self._responses[key]

    def response(self, dso: str, key: str) -> _Stored | None:
        with self.lock:
            return self._responses.get((dso, key))

    def remember(self, dso: str, key: str, stored: _Stored) -> None:
        with self.lock:
            self._responses[(dso, key)] = stored


# ------------------------------------------------------------------------- the context


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class ApiContext:
    """What the API needs from the service around it.

    ``hosting(feeder_id)`` returns ``{"start", "step_s", "site_kw": {site: [kW...]}}``
    (raise :class:`LookupError` for a feeder without a grid model); ``flexibility(feeders)``
    returns ``{"start", "step_s", "up_kw": [...], "down_kw": [...]}`` for those feeders
    (raise :class:`LookupError` when there is no plan yet).
    """

    topology: Topology
    publish: Callable[[DsoLimitMessage | DsoLimitCancel], None]
    tokens: TokenRegistry
    store: LimitStore = field(default_factory=LimitStore)
    clock: Callable[[], datetime] = _utc_now
    audit: AuditLog | None = None
    hosting: Callable[[str], Mapping[str, Any]] | None = None
    flexibility: Callable[[frozenset[str]], Mapping[str, Any]] | None = None


def _ctx(request: Request) -> ApiContext:
    ctx = request.app.state.ctx
    assert isinstance(ctx, ApiContext)
    return ctx


IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=255, description="Unique per write"),
]

# ------------------------------------------------------------------------- validation


def _problems(issues: list[Issue]) -> JSONResponse:
    unique = list(dict.fromkeys((i.field, i.message) for i in issues))
    body = Problems(detail=[Problem(field=f, message=m) for f, m in unique])
    return JSONResponse(body.model_dump(), status_code=422)


def _pydantic_issue(err: Mapping[str, Any]) -> Issue:
    loc = tuple(err.get("loc", ()))
    kind = str(err.get("type", ""))
    if loc[:1] == ("body",):
        loc = loc[1:]
    where = ".".join(str(p) for p in loc) or "body"
    message = str(err.get("msg", "invalid"))
    if kind == "json_invalid":
        where, message = "body", f"not valid JSON: {err.get('ctx', {}).get('error', message)}"
    elif kind == "extra_forbidden":
        message = f"unknown field (allowed: {', '.join(LimitIn.model_fields)})"
    elif kind == "missing":
        message = "required"
    return Issue(where, message)


def _parse_time(value: Any) -> datetime | None:
    try:
        return _DATETIME.validate_python(value)
    except ValidationError:
        return None  # the model's own validation reports it


def _as_utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _limit_issues(data: Mapping[str, Any], principal: Principal, topo: Topology) -> list[Issue]:
    """What the model alone cannot see: naive or misordered times, unknown targets.

    Works on a raw body too (values the model rejects are skipped, it reports them).
    """
    issues: list[Issue] = []
    times = {name: _parse_time(data.get(name)) for name in ("start", "end")}
    for name, ts in times.items():
        if ts is not None and ts.utcoffset() is None:
            issues.append(
                Issue(name, "must be timezone-aware (ISO 8601 with 'Z' or an offset), not naive")
            )
    start, end = times["start"], times["end"]
    if start is not None and end is not None and _as_utc(end) <= _as_utc(start):
        issues.append(Issue("end", "must be after start"))
    kind, tid = data.get("target_type"), data.get("target_id")
    valid_id = isinstance(tid, str) and 0 < len(tid) <= 128
    if kind in ("site", "feeder", "transformer") and tid is None:
        issues.append(Issue("target_id", f"required for target_type {kind!r}"))
    elif kind == "site" and valid_id:
        site = topo.sites[topo.site_index[tid]] if tid in topo.site_index else None
        if site is None or not principal.has_area(site.feeder_id):
            where = "" if principal.all_areas else " in your areas"
            issues.append(Issue("target_id", f"unknown site {tid!r}{where}"))
    elif (
        kind in ("feeder", "transformer")
        and valid_id
        and principal.has_area(str(tid))
        and tid not in topo.feeder_index
    ):
        issues.append(Issue("target_id", f"unknown {kind} {tid!r}"))
    return issues


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    ctx = _ctx(request)
    writing = request.method == "POST"
    try:  # a body that is not JSON fails before the auth dependency runs: 401/403 first
        principal = authenticate(request, ctx.tokens)
        if writing:
            require_scope(principal, LIMITS_WRITE)
    except HTTPException as denied:
        return await http_exception_handler(request, denied)
    issues = [_pydantic_issue(err) for err in exc.errors()]
    if writing and request.url.path.endswith("/v1/limits"):
        if isinstance(exc.body, Mapping):
            issues += _limit_issues(exc.body, principal, ctx.topology)
        if not request.headers.get("idempotency-key"):
            issues.append(_NO_KEY)
    return _problems(issues)


# -------------------------------------------------------------------------- helpers


def _out(stored: StoredLimit) -> LimitOut:
    lim = stored.limit
    return LimitOut(
        event_id=lim.event_id,
        target_type=lim.target_type.value,
        target_id=lim.target_id,
        start=lim.start,
        end=lim.end,
        limit_kw=lim.limit_kw,
        priority=lim.priority,
        source=lim.source,
        dso=stored.dso,
        created_at=stored.created_at,
    )


def _fingerprint(method: str, path: str, body: Any) -> str:
    text = canonical_json({"method": method, "path": path, "body": body})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _replay_or_conflict(ctx: ApiContext, dso: str, key: str | None, fp: str) -> Response | None:
    """The stored response for a repeated key and request; 409 for a reused key."""
    if key is None:
        return None
    prior = ctx.store.response(dso, key)
    if prior is None:
        return None
    if prior.fingerprint != fp:
        raise HTTPException(
            status.HTTP_409_CONFLICT, "Idempotency-Key already used for a different request"
        )
    media = "application/json" if prior.body else None
    return Response(prior.body, prior.status_code, {REPLAYED: "true"}, media_type=media)


def _publish(ctx: ApiContext, msg: DsoLimitMessage | DsoLimitCancel) -> None:
    try:
        ctx.publish(msg)
    except Exception as exc:
        _log.error("publish_failed", event_id=msg.event_id, error=repr(exc))
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "could not pass the request on to the service; retry with the same Idempotency-Key",
        ) from exc


def _own(ctx: ApiContext, principal: Principal, event_id: str) -> StoredLimit:
    """The caller's limit ``event_id``: 404 when absent or another DSO's, 403 outside areas."""
    stored = ctx.store.get(event_id)
    if stored is None or stored.dso != principal.dso:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no limit {event_id!r}")
    if not may_touch(principal, stored.limit, ctx.topology):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"limit {event_id!r} is outside your areas")
    return stored


_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    401: {"model": ErrorDetail, "description": "Missing or invalid bearer token"},
    403: {"model": ErrorDetail, "description": "Token lacks the scope or the area"},
    422: {"model": Problems, "description": "Every problem with the request"},
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    described = {
        400: "Idempotency-Key missing",
        404: "Not found (or not yours)",
        409: "Idempotency-Key reused, or event id taken",
        503: "Not available now; retry",
    }
    out = dict(_ERRORS)
    for c in codes:
        out[c] = {"model": ErrorDetail, "description": described[c]}
    return out


# ---------------------------------------------------------------------------- the app


def create_app(ctx: ApiContext) -> FastAPI:
    """The FastAPI application over ``ctx`` (OpenAPI at ``/openapi.json``, docs at ``/docs``)."""
    app = FastAPI(
        title="gridflex DSO API",
        version=API_VERSION,
        description=(__doc__ or "").split("\n\n")[0],
    )
    app.state.ctx = ctx
    app.state.tokens = ctx.tokens
    app.add_exception_handler(RequestValidationError, _on_validation_error)

    @app.post(
        "/v1/limits",
        status_code=201,
        response_model=LimitOut,
        responses={
            200: {"model": LimitOut, "description": "Revised event"},
            **_errors(400, 409, 503),
        },
    )
    def post_limit(body: LimitIn, principal: LimitsWriter, key: IdempotencyKey = None) -> Response:
        """Announce a limit, or revise one of yours (same event id)."""
        topo = ctx.topology
        issues = _limit_issues(body.model_dump(), principal, topo)
        if issues:
            return _problems(issues + ([] if key else [_NO_KEY]))
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
        if key is None:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "Idempotency-Key header is required")
        fp = _fingerprint("POST", "/v1/limits", body.model_dump(mode="json"))
        with ctx.store.write_lock:
            now = ctx.clock()
            ctx.store.expire(now)
            replay = _replay_or_conflict(ctx, principal.dso, key, fp)
            if replay is not None:
                return replay
            event_id = body.event_id or str(uuid.uuid4())
            existing = ctx.store.get(event_id)
            if existing is not None and existing.dso != principal.dso:
                raise HTTPException(status.HTTP_409_CONFLICT, f"event id {event_id!r} is taken")
            if existing is not None and not may_touch(principal, existing.limit, topo):
                raise HTTPException(
                    status.HTTP_403_FORBIDDEN, f"limit {event_id!r} is outside your areas"
                )
            msg = DsoLimitMessage(
                ts=now,
                event_id=event_id,
                target_type=kind.value,
                target_id=target_id,
                start=_as_utc(body.start),
                end=_as_utc(body.end),
                limit_kw=body.limit_kw,
                priority=body.priority,
                source=SOURCE,
            )
            _publish(ctx, msg)
            stored = StoredLimit(msg.to_domain(), principal.dso, now)
            ctx.store.put(stored)
            if ctx.audit is not None:
                who = f"{SOURCE}:{principal.dso}"
                limit_received(ctx.audit, replace(stored.limit, source=who), now)
            code = 200 if existing is not None else 201
            content = _out(stored).model_dump_json().encode("utf-8")
            ctx.store.remember(principal.dso, key, _Stored(fp, code, content, now))
        _log.info("limit_received", event_id=event_id, dso=principal.dso, revised=code == 200)
        return Response(content, code, {"Location": f"/v1/limits/{event_id}"}, "application/json")

    @app.get("/v1/limits", responses=_errors())
    def list_limits(
        principal: LimitsReader,
        active_at: Annotated[
            datetime | None, Query(description="Only limits in force at this instant")
        ] = None,
    ) -> list[LimitOut]:
        """Your live limits in your areas, by start."""
        if active_at is not None and active_at.utcoffset() is None:
            raise _validation("query.active_at", "must be timezone-aware, not naive")
        ctx.store.expire(ctx.clock())
        out = [
            s
            for s in ctx.store.limits(principal.dso)
            if may_touch(principal, s.limit, ctx.topology)
            and (active_at is None or s.limit.start <= active_at < s.limit.end)
        ]
        return [_out(s) for s in out]

    @app.get("/v1/limits/{event_id}", responses=_errors(404))
    def get_limit(event_id: str, principal: LimitsReader) -> LimitOut:
        """One of your limits."""
        ctx.store.expire(ctx.clock())
        return _out(_own(ctx, principal, event_id))

    @app.delete("/v1/limits/{event_id}", status_code=204, responses=_errors(404, 409, 503))
    def delete_limit(
        event_id: str, principal: LimitsWriter, key: IdempotencyKey = None
    ) -> Response:
        """Cancel one of your limits."""
        fp = _fingerprint("DELETE", f"/v1/limits/{event_id}", None)
        with ctx.store.write_lock:
            now = ctx.clock()
            ctx.store.expire(now)
            replay = _replay_or_conflict(ctx, principal.dso, key, fp)
            if replay is not None:
                return replay
            _own(ctx, principal, event_id)
            _publish(ctx, DsoLimitCancel(ts=now, event_id=event_id, source=SOURCE))
            ctx.store.remove(event_id)
            if ctx.audit is not None:
                limit_cancelled(ctx.audit, event_id, now, source=f"{SOURCE}:{principal.dso}")
            if key is not None:
                ctx.store.remember(principal.dso, key, _Stored(fp, 204, b"", now))
        _log.info("limit_cancelled", event_id=event_id, dso=principal.dso)
        return Response(status_code=204)

    @app.get("/v1/sites", responses=_errors())
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

    @app.get("/v1/feeders/{feeder_id}", responses=_errors(404))
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

    @app.get("/v1/flexibility", responses=_errors(503))
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

    return app


def _validation(field_name: str, message: str) -> RequestValidationError:
    return RequestValidationError(
        [{"loc": tuple(field_name.split(".")), "msg": message, "type": "value_error"}]
    )


# ------------------------------------------------------------------- export and serve


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the API (independent of any context)."""
    empty = ApiContext(Topology((), ()), lambda _msg: None, TokenRegistry({}))
    return create_app(empty).openapi()


def export_openapi(path: Path) -> Path:
    """Write the OpenAPI document as JSON (sorted keys, indent 2); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(openapi_document(), indent=2, sort_keys=True, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def serve_api(
    app: FastAPI,
    host: str,
    port: int,
    *,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    client_ca: Path | None = None,
    start_timeout_s: float = 10.0,
) -> tuple[uvicorn.Server, threading.Thread]:
    """Run ``app`` with uvicorn in a daemon thread; returns when it listens.

    With ``certfile``/``keyfile`` it serves HTTPS; with ``client_ca`` too, clients must
    present a certificate signed by that CA (mutual TLS; refused in the handshake
    otherwise). ``port=0`` picks a free port (:func:`api_port`). Stop with :func:`stop_api`.
    """
    issues: list[Issue] = []
    if (certfile is None) != (keyfile is None):
        issues.append(Issue("tls", "certfile and keyfile go together"))
    if client_ca is not None and certfile is None:
        issues.append(Issue("tls.client_ca", "mutual TLS needs certfile and keyfile"))
    if issues:
        raise ConfigError(issues)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        ssl_ca_certs=client_ca,
        ssl_cert_reqs=ssl.CERT_REQUIRED if client_ca is not None else ssl.CERT_NONE,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="gridflex-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise TransientIO(f"the API server did not start on {host}:{port}")
        time.sleep(0.01)
    return server, thread


def api_port(server: uvicorn.Server) -> int:
    """The port a started server listens on (useful after ``port=0``)."""
    sockname = server.servers[0].sockets[0].getsockname()
    return int(sockname[1])


def stop_api(server: uvicorn.Server, thread: threading.Thread, timeout_s: float = 10.0) -> None:
    """Ask the server to finish its requests and stop; wait for its thread."""
    server.should_exit = True
    thread.join(timeout_s)
