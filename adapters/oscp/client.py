"""Requests from the FP to the Capacity Provider: OSCP 2.0 over HTTP(S) with httpx.

Every request carries ``Authorization: Token <token>`` (the token the CP gave gridflex in
its ``Register``), a fresh ``X-Request-ID`` and, when it answers an earlier message, that
message's id as ``X-Correlation-ID``. The CP answers 204 (any 2xx is taken); anything else
raises :class:`CpRefused` (a 4xx: the CP said no — e.g. 401/403 for a token it does not
know) or :class:`~aggregator.errors.TransientIO` (network, 5xx), and the provider counts it.

Interop: pyoscp 0.1.0's CP serves the acknowledgement at ``/handshake_acknowledgment``
(sic); OSCP 2.0 names it ``/handshake_acknowledgement``. :meth:`CpClient.post` takes
fallback paths and remembers the one that answered.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from aggregator.errors import GridflexError, TransientIO

__all__ = ["ACK_PATHS", "CpClient", "CpRefused"]

ACK_PATHS = ("handshake_acknowledgement", "handshake_acknowledgment")


class CpRefused(GridflexError):
    """The CP answered a request with a 4xx."""

    def __init__(self, path: str, status: int, text: str) -> None:
        super().__init__(f"{path}: HTTP {status}: {text[:200]}")
        self.path = path
        self.status = status


class CpClient:
    """POSTs to one CP's base URL (thread-safe: httpx.Client is)."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        self._path_of: dict[str, str] = {}

    def post(
        self,
        base_url: str,
        path: str | tuple[str, ...],
        body: dict[str, Any],
        token: str,
        *,
        correlation_id: str | None = None,
    ) -> str:
        """POST ``body`` to ``base_url/path`` (the first of ``path`` that is not a 404);
        returns the request id sent."""
        paths = (path,) if isinstance(path, str) else path
        known = self._path_of.get(paths[0])
        tried = (known,) if known is not None else paths
        request_id = uuid.uuid4().hex
        headers = {"Authorization": f"Token {token}", "X-Request-ID": request_id}
        if correlation_id is not None:
            headers["X-Correlation-ID"] = correlation_id
        last: CpRefused | None = None
        for p in tried:
            url = f"{base_url.rstrip('/')}/{p}"
            try:
                r = self.http.post(url, json=body, headers=headers)
            except httpx.HTTPError as exc:
                raise TransientIO(f"POST {p}: {type(exc).__name__}: {exc}") from exc
            if r.is_success:
                self._path_of[paths[0]] = p
                return request_id
            if r.status_code >= 500:
                raise TransientIO(f"POST {p}: HTTP {r.status_code}: {r.text[:200]}")
            last = CpRefused(p, r.status_code, r.text)
            if r.status_code != 404:
                break
        assert last is not None
        raise last
