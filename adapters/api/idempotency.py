"""Idempotency keys of the REST API: the first response to each (DSO, key), kept 24 h.

A repeated key with the same request (same method, path and canonical body) replays the
stored status and body with ``Idempotent-Replayed: true``; with a different request it is a
409. Thread-safe; writers serialise their whole check-apply-remember sequence on the DSO
intake's lock, so a replay never races the write it replays.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from adapters.dso.chain import canonical_json

__all__ = ["IDEMPOTENCY_TTL", "IdempotencyStore", "StoredResponse", "fingerprint"]

IDEMPOTENCY_TTL: Final = timedelta(hours=24)


def fingerprint(method: str, path: str, body: Any) -> str:
    """SHA-256 of the canonical JSON of a request (method, path, body)."""
    text = canonical_json({"method": method, "path": path, "body": body})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredResponse:
    fingerprint: str
    status_code: int
    body: bytes
    at: datetime


class IdempotencyStore:
    """Responses by (DSO, Idempotency-Key), dropped after ``ttl``."""

    def __init__(self, *, ttl: timedelta = IDEMPOTENCY_TTL) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._responses: dict[tuple[str, str], StoredResponse] = {}

    def get(self, dso: str, key: str, now: datetime) -> StoredResponse | None:
        with self._lock:
            old = now - self.ttl
            for k in [k for k, r in self._responses.items() if r.at <= old]:
                del self._responses[k]
            return self._responses.get((dso, key))

    def remember(self, dso: str, key: str, stored: StoredResponse) -> None:
        with self._lock:
            self._responses[(dso, key)] = stored

    def __len__(self) -> int:
        with self._lock:
            return len(self._responses)
