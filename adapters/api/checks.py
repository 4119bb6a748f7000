"""Request checks of the REST API that come before any route runs.

* :class:`StrictJsonRoute` — bodies are parsed as UTF-8 with duplicate keys refused
  (``{"a": 1, "a": 2}`` is a 422, never "last wins");
* :class:`JsonBodyLimit` — bodies over the size limit are a JSON 413.
* :func:`on_validation_error` — a :class:`~fastapi.exceptions.RequestValidationError`
  becomes a 422 listing *every* problem (``{"detail": [{"field", "code", "message"}]}``),
  after authentication (401/403 come first, so nothing leaks to a caller without a token);
  on ``POST /v1/limits`` it adds the checks the model alone cannot make
  (:func:`limit_body_issues`) and a missing ``Idempotency-Key``.
* :func:`on_http_error` — a 405 names every method of the path in ``Allow``.
* :func:`limit_body_issues` — on a raw or parsed body: end after start, a target id where
  the target type needs one (and none for ``fleet``), targets known and inside the caller's
  areas.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from fastapi import HTTPException, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.api.auth import LIMITS_WRITE, TELEMETRY_WRITE, Principal, authenticate, require_scope
from adapters.api.models import LimitIn, Problem, Problems
from aggregator.errors import Issue
from aggregator.topology import Topology

__all__ = [
    "NO_IDEMPOTENCY_KEY",
    "JsonBodyLimit",
    "StrictJsonRoute",
    "limit_body_issues",
    "on_http_error",
    "on_validation_error",
    "problems",
    "pydantic_issue",
]

NO_IDEMPOTENCY_KEY: Final = Issue(
    field="header.Idempotency-Key", message="required on POST", code="missing"
)
_TIME: Final[TypeAdapter[datetime]] = TypeAdapter(datetime)


class DuplicateKeyError(json.JSONDecodeError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(f"duplicate key {key[:60]!r}", "", 0)
        out[key] = value
    return out


class _StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise json.JSONDecodeError("not UTF-8", "", exc.start) from None
            self._json = json.loads(text, object_pairs_hook=_no_duplicates)
        return self._json


class JsonBodyLimit:
    """ASGI middleware capping request bodies at ``max_bytes``: a longer ``Content-Length``
    is a JSON 413 before anything reads the body; a body without a length that grows past
    the cap stops the read with the same 413 (raised as an HTTP error from ``receive``, so
    the app's handlers answer it)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> StarletteHTTPException:
        return StarletteHTTPException(413, f"the body is larger than {self.max_bytes} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            detail = self._too_large().detail
            await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()
            return message

        await self.app(scope, limited, send)


class StrictJsonRoute(APIRoute):
    """A route whose JSON bodies refuse duplicate keys (a 422 ``json_invalid``)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(_StrictJsonRequest(request.scope, request.receive))

        return strict


def problems(issues: list[Issue]) -> JSONResponse:
    """A 422 listing every distinct issue."""
    unique = list(dict.fromkeys((i.field, i.code, i.message) for i in issues))
    body = Problems(detail=[Problem(field=f, code=c, message=m) for f, c, m in unique])
    return JSONResponse(body.model_dump(), status_code=422)


def pydantic_issue(err: Mapping[str, Any], allowed: tuple[str, ...] = ()) -> Issue:
    """One FastAPI/pydantic validation error as an :class:`Issue` (``body.`` dropped)."""
    loc = tuple(err.get("loc", ()))
    kind = str(err.get("type", "invalid"))
    if loc[:1] == ("body",):
        loc = loc[1:]
    where = ".".join(str(p) for p in loc) or "body"
    message = str(err.get("msg", "invalid"))
    if kind == "json_invalid":
        where, message = "body", f"not valid JSON: {err.get('ctx', {}).get('error', message)}"
    elif kind == "extra_forbidden":
        message = f"unknown field (allowed: {', '.join(allowed)})" if allowed else "unknown field"
    elif kind == "missing":
        message = "required"
    return Issue(field=where, message=message, code=kind)


def _time(value: Any) -> datetime | None:
    """A time string as UTC (naive read as UTC) to order start and end; ``None`` when it
    is not a usable time (the model's own validation reports why)."""
    if not isinstance(value, str | datetime):
        return None
    try:
        ts = _TIME.validate_python(value)
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    except (ValidationError, OverflowError):
        return None


def limit_body_issues(data: Mapping[str, Any], principal: Principal, topo: Topology) -> list[Issue]:
    """What the model alone cannot see (works on a raw body: bad values are skipped)."""
    issues: list[Issue] = []
    start, end = _time(data.get("start")), _time(data.get("end"))
    if start is not None and end is not None and end <= start:
        issues.append(Issue(field="end", message="must be after start", code="end_before_start"))
    kind, tid = data.get("target_type"), data.get("target_id")
    valid_id = isinstance(tid, str) and 0 < len(tid) <= 128
    if kind == "fleet" and tid is not None:
        issues.append(
            Issue(
                field="target_id",
                message="a fleet limit takes no target_id",
                code="fleet_has_no_target",
            )
        )
    elif kind in ("site", "feeder", "transformer") and tid is None:
        issues.append(
            Issue(field="target_id", message=f"required for target_type {kind!r}", code="missing")
        )
    elif kind == "site" and valid_id:
        site = topo.sites[topo.site_index[tid]] if tid in topo.site_index else None
        if site is None or not principal.has_area(site.feeder_id):
            where = "" if principal.all_areas else " in your areas"
            issues.append(
                Issue(
                    field="target_id", message=f"unknown site {tid!r}{where}", code="unknown_site"
                )
            )
    elif (
        kind in ("feeder", "transformer")
        and valid_id
        and principal.has_area(str(tid))
        and tid not in topo.feeder_index
    ):
        issues.append(
            Issue(field="target_id", message=f"unknown {kind} {tid!r}", code="unknown_feeder")
        )
    return issues


async def on_validation_error(request: Request, exc: Exception) -> Response:
    """422 with every problem, after authentication and the write scope."""
    assert isinstance(exc, RequestValidationError)
    ctx = request.app.state.ctx
    path = request.url.path
    writing = request.method == "POST"
    scope = TELEMETRY_WRITE if path.endswith("/v1/telemetry") else LIMITS_WRITE
    try:  # a body that is not JSON fails before the auth dependency runs: 401/403 first
        principal = authenticate(request, ctx.tokens)
        if writing:
            require_scope(principal, scope)
    except HTTPException as denied:
        return await http_exception_handler(request, denied)
    allowed = tuple(LimitIn.model_fields) if path.endswith("/v1/limits") else ()
    issues = [pydantic_issue(err, allowed) for err in exc.errors()]
    if writing and path.endswith("/v1/limits") and isinstance(exc.body, Mapping):
        issues += limit_body_issues(exc.body, principal, ctx.topology)
    return problems(issues)


async def on_http_error(request: Request, exc: Exception) -> Response:
    """HTTP errors as usual, but a 405 lists in ``Allow`` every method of the path (Starlette
    names only those of the first route that matched the path)."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code != 405:
        return await http_exception_handler(request, exc)
    routes = request.app.router.routes
    methods = {
        m
        for m in ("DELETE", "GET", "PATCH", "POST", "PUT")
        if any(r.matches({**request.scope, "method": m})[0] is Match.FULL for r in routes)
    }
    allow = ", ".join(sorted(methods))
    return JSONResponse({"detail": "Method Not Allowed"}, 405, headers={"Allow": allow})
