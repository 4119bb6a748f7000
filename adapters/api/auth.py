"""Who may call the REST API (:mod:`adapters.api.app`): bearer tokens carrying scopes and areas.

A token stands for a :class:`Principal`: one DSO, the grid areas it may see and act on,
and its scopes. Areas are feeder ids (a transformer area is a feeder in gridflex); a
site's area is its feeder; ``"*"`` is every area, and a fleet-wide limit needs it
(:func:`may_touch`). The FastAPI dependencies :data:`LimitsReader`, :data:`LimitsWriter`
and :data:`GridReader` authenticate against the app's ``state.tokens`` and check a scope.

Scopes:

* ``limits:read`` — ``GET /v1/limits`` and ``GET /v1/limits/{event_id}``;
* ``limits:write`` — ``POST /v1/limits`` and ``DELETE /v1/limits/{event_id}``;
* ``grid:read`` — ``GET /v1/sites``, ``GET /v1/feeders/{id}``, ``GET /v1/flexibility``;
* ``telemetry:write`` — ``POST /v1/telemetry`` (embedded mode: telemetry for the service).

The :class:`TokenRegistry` keeps only the SHA-256 (hex) of each token, never the token,
and compares digests with :func:`hmac.compare_digest` against every entry (no early
exit). A missing or unknown token is a 401 with ``WWW-Authenticate: Bearer``; a known
token without the scope a route needs is a 403 (``error="insufficient_scope"``, RFC 6750).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Annotated, Any, Final

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from aggregator.errors import ConfigError, Issue
from aggregator.limits import DsoLimit, TargetType
from aggregator.topology import Topology

__all__ = [
    "ALL_AREAS",
    "GRID_READ",
    "LIMITS_READ",
    "LIMITS_WRITE",
    "SCOPES",
    "TELEMETRY_WRITE",
    "GridReader",
    "LimitsReader",
    "LimitsWriter",
    "Principal",
    "TelemetryWriter",
    "TokenRegistry",
    "authenticate",
    "current_principal",
    "hash_token",
    "limit_area",
    "may_touch",
    "require_scope",
]

LIMITS_READ: Final = "limits:read"
LIMITS_WRITE: Final = "limits:write"
GRID_READ: Final = "grid:read"
TELEMETRY_WRITE: Final = "telemetry:write"
SCOPES: Final = frozenset({LIMITS_READ, LIMITS_WRITE, GRID_READ, TELEMETRY_WRITE})
ALL_AREAS: Final = "*"

_HEX: Final = frozenset("0123456789abcdef")


def hash_token(token: str) -> str:
    """SHA-256 (lowercase hex) of a bearer token: what the registry stores."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """One DSO's identity behind a token: its areas (feeder ids or ``"*"``) and scopes."""

    dso: str
    areas: frozenset[str]
    scopes: frozenset[str]

    @property
    def all_areas(self) -> bool:
        return ALL_AREAS in self.areas

    def has_area(self, feeder_id: str) -> bool:
        return self.all_areas or feeder_id in self.areas

    def validate(self) -> list[Issue]:
        issues: list[Issue] = []
        if not self.dso:
            issues.append(Issue("dso", "must not be empty"))
        if not self.areas or any(not a for a in self.areas):
            issues.append(Issue("areas", "need at least one non-empty area", (self.dso,)))
        unknown = sorted(self.scopes - SCOPES)
        if unknown:
            issues.append(
                Issue("scopes", f"unknown scopes {unknown}; known: {sorted(SCOPES)}", (self.dso,))
            )
        return issues


class TokenRegistry:
    """Principals by the SHA-256 (hex) of their token; raises :class:`ConfigError` listing
    every bad entry."""

    def __init__(self, principals: Mapping[str, Principal]) -> None:
        issues: list[Issue] = []
        for digest, principal in principals.items():
            if len(digest) != 64 or not set(digest) <= _HEX:
                shown = digest[:8] + "…" if len(digest) > 8 else digest
                issues.append(Issue("tokens", "key must be a SHA-256 hex digest", (shown,)))
            issues += [replace(i, field=f"tokens.{i.field}") for i in principal.validate()]
        if issues:
            raise ConfigError(issues)
        self._entries: tuple[tuple[bytes, Principal], ...] = tuple(
            (d.encode("ascii"), p) for d, p in principals.items()
        )

    @classmethod
    def from_tokens(cls, tokens: Mapping[str, Principal]) -> TokenRegistry:
        """A registry from plain tokens (tests, development): only their hashes are kept."""
        return cls({hash_token(t): p for t, p in tokens.items()})

    @classmethod
    def from_config(cls, entries: Iterable[Mapping[str, Any]]) -> TokenRegistry:
        """From configuration entries ``{sha256, dso, areas: [...], scopes: [...]}``."""
        principals: dict[str, Principal] = {}
        issues: list[Issue] = []
        for i, e in enumerate(entries):
            try:
                digest = str(e["sha256"]).lower()
                areas = e["areas"]
                scopes = e["scopes"]
                if isinstance(areas, str) or isinstance(scopes, str):
                    raise TypeError("areas and scopes must be lists")
                principals[digest] = Principal(
                    str(e["dso"]), frozenset(map(str, areas)), frozenset(map(str, scopes))
                )
            except (KeyError, TypeError, AttributeError):
                issues.append(Issue(f"tokens[{i}]", "needs sha256, dso, areas and scopes lists"))
        if issues:
            raise ConfigError(issues)
        return cls(principals)

    def resolve(self, token: str) -> Principal | None:
        """The principal of ``token``, or ``None``; compares against every entry."""
        digest = hash_token(token).encode("ascii")
        found: Principal | None = None
        for known, principal in self._entries:
            if hmac.compare_digest(digest, known):
                found = principal
        return found

    def __len__(self) -> int:
        return len(self._entries)


def _unauthorized(message: str, error: str | None = None) -> HTTPException:
    challenge = 'Bearer realm="gridflex"' + (f', error="{error}"' if error else "")
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=message, headers={"WWW-Authenticate": challenge}
    )


def authenticate(request: Request, registry: TokenRegistry) -> Principal:
    """The caller's principal from ``Authorization: Bearer <token>``; 401 otherwise.

    The principal is also kept on ``request.state.principal`` for the error handlers.
    """
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized("missing bearer token (Authorization: Bearer <token>)")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("the Authorization header must be 'Bearer <token>'", "invalid_request")
    principal = registry.resolve(token)
    if principal is None:
        raise _unauthorized("invalid bearer token", "invalid_token")
    request.state.principal = principal
    return principal


def require_scope(principal: Principal, scope: str) -> None:
    """403 unless ``principal`` holds ``scope``."""
    if scope not in principal.scopes:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"this token lacks the scope {scope!r}",
            headers={
                "WWW-Authenticate": (
                    f'Bearer realm="gridflex", error="insufficient_scope", scope="{scope}"'
                )
            },
        )


def limit_area(limit: DsoLimit, topology: Topology) -> str | None:
    """The area (feeder) of a limit's target; ``None`` for the fleet."""
    if limit.target_type is TargetType.SITE:
        i = topology.site_index.get(limit.target_id)
        return topology.sites[i].feeder_id if i is not None else limit.target_id
    if limit.target_type is TargetType.FEEDER:
        return limit.target_id
    return None


def may_touch(principal: Principal, limit: DsoLimit, topology: Topology) -> bool:
    """Whether the limit's target lies in the principal's areas (the fleet needs ``"*"``)."""
    area = limit_area(limit, topology)
    return principal.all_areas if area is None else principal.has_area(area)


# --------------------------------------------------------- FastAPI dependencies

_bearer = HTTPBearer(auto_error=False, description="A token issued to one DSO.")


def current_principal(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, authenticated against the app's ``state.tokens`` registry."""
    registry = request.app.state.tokens
    assert isinstance(registry, TokenRegistry)
    return authenticate(request, registry)


def _scoped(scope: str) -> Callable[[Principal], Principal]:
    def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        require_scope(principal, scope)
        return principal

    return check


LimitsReader = Annotated[Principal, Depends(_scoped(LIMITS_READ))]
LimitsWriter = Annotated[Principal, Depends(_scoped(LIMITS_WRITE))]
GridReader = Annotated[Principal, Depends(_scoped(GRID_READ))]
TelemetryWriter = Annotated[Principal, Depends(_scoped(TELEMETRY_WRITE))]
