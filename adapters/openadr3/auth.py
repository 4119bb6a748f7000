"""OAuth 2.0 client credentials (RFC 6749 §4.4) for the OpenADR 3 VEN, and its HTTP client.

:class:`TokenSource` fetches a bearer token from the token endpoint (``client_id`` and
``client_secret`` by HTTP Basic, ``grant_type=client_credentials`` in a form body), keeps it
until shortly before ``expires_in`` ends, and fetches a fresh one when told the VTN refused
it. :class:`VtnClient` sends every VTN request with that token; a ``401`` is answered once
by a fresh token and the request repeated, a second ``401`` (or a ``403``) is an
:class:`AuthRefused`.

Invariants: a refused token request (``400``/``401``: wrong secret, unknown client) is an
:class:`AuthRefused` carrying the endpoint's OAuth ``error`` code, never retried in a loop
here (the VEN backs off); a token answer without ``access_token`` or with a ``token_type``
other than ``Bearer`` is refused too. Network failures and 5xx are
:class:`~aggregator.errors.TransientIO`. Secrets never appear in messages or logs.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Final

import httpx

from aggregator.errors import GridflexError, TransientIO

__all__ = ["AuthRefused", "TokenSource", "VtnClient", "VtnError"]

_EARLY_S: Final = 30.0  # renew this long before the token's expiry


class AuthRefused(GridflexError):
    """The token endpoint or the VTN refused the VEN's credentials or token."""


class VtnError(GridflexError):
    """The VTN answered a request with an error status other than 401/403 (kept: ``status``)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class TokenSource:
    """Bearer tokens by client credentials, cached until shortly before they expire."""

    def __init__(
        self, http: httpx.Client, token_url: str, client_id: str, client_secret: str
    ) -> None:
        self._http = http
        self.token_url = token_url
        self._client_id = client_id
        self._secret = client_secret
        self._lock = threading.Lock()
        self._token: str | None = None
        self._valid_until = 0.0
        self.fetched = 0

    def token(self, *, fresh: bool = False) -> str:
        with self._lock:
            if fresh or self._token is None or time.monotonic() >= self._valid_until:
                self._token, lifetime_s = self._fetch()
                self._valid_until = time.monotonic() + max(0.0, lifetime_s - _EARLY_S)
                self.fetched += 1
            return self._token

    def forget(self) -> None:
        with self._lock:
            self._token = None

    def _fetch(self) -> tuple[str, float]:
        try:
            r = self._http.post(
                self.token_url,
                data={"grant_type": "client_credentials"},
                auth=(self._client_id, self._secret),
                headers={"Accept": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise TransientIO(f"token endpoint {self.token_url}: {type(exc).__name__}") from exc
        if r.status_code >= 500:
            raise TransientIO(f"token endpoint {self.token_url} answered {r.status_code}")
        body = _json(r)
        if r.status_code != 200:
            code = body.get("error", "?") if isinstance(body, dict) else "?"
            raise AuthRefused(
                f"token endpoint refused client {self._client_id!r}: {r.status_code} {code}"
            )
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise AuthRefused("token endpoint answered without an access_token")
        if str(body.get("token_type", "")).lower() != "bearer":
            raise AuthRefused(f"token type {body.get('token_type')!r} is not Bearer")
        expires = body.get("expires_in", 3600)
        lifetime_s = float(expires) if isinstance(expires, int | float) else 3600.0
        return body["access_token"], lifetime_s


def _json(r: httpx.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return None


class VtnClient:
    """JSON requests to the VTN with a bearer token (one retry with a fresh one on 401)."""

    def __init__(self, http: httpx.Client, base_url: str, tokens: TokenSource) -> None:
        self._http = http
        self.base_url = base_url.rstrip("/")
        self.tokens = tokens

    def request(
        self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        """The decoded JSON answer (``None`` for an empty body)."""
        url = f"{self.base_url}{path}"
        for attempt in (0, 1):
            token = self.tokens.token(fresh=attempt == 1)
            try:
                r = self._http.request(
                    method,
                    url,
                    json=json,
                    params=params,
                    headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                )
            except httpx.HTTPError as exc:
                raise TransientIO(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
            if r.status_code == 401 and attempt == 0:
                self.tokens.forget()
                continue
            if r.status_code in (401, 403):
                raise AuthRefused(f"{method} {path}: the VTN refused the token ({r.status_code})")
            if r.status_code >= 500:
                raise TransientIO(f"{method} {path}: VTN answered {r.status_code}")
            if r.status_code >= 400:
                detail = _json(r)
                title = (
                    detail.get("title") or detail.get("detail")
                    if isinstance(detail, dict)
                    else r.text[:200]
                )
                raise VtnError(f"{method} {path}: {r.status_code} {title}", r.status_code)
            return _json(r) if r.content else None
        raise AssertionError("unreachable")

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, json=body)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)
