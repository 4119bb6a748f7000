"""Request checks of the REST API that come before any route runs.

* :class:`StrictJsonRoute` — bodies are parsed with duplicate keys refused (``{"a": 1,
  "a": 2}`` is a 422, never "last wins"); the body size limit itself is FastAPI's
  ``max_body_size`` (413), set in :func:`adapters.api.app.create_app`.
* :func:`on_validation_error` — a :class:`~fastapi.exceptions.RequestValidationError`
  becomes a 422 listing *every* problem (``{"detail": [{"field", "code", "message"}]}``),
  after authentication (401/403 come first, so nothing leaks to a caller without a token);
  on ``POST /v1/limits`` it adds the checks the model alone cannot make
  (:func:`limit_body_issues`) and a missing ``Idempotency-Key``.
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

from adapters.api.auth import LIMITS_WRITE, TELEMETRY_WRITE, Principal, authenticate, require_scope
from adapters.api.models import LimitIn, Problem, Problems
from aggregator.errors import Issue
from aggregator.topology import Topology

__all__ = [
    "NO_IDEMPOTENCY_KEY",
    "StrictJsonRoute",
    "limit_body_issues",
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
            self._json = json.loads(body, object_pairs_hook=_no_duplicates)
        return self._json


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
