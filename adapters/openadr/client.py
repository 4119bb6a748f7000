"""openleadr glue for the VEN: the client, and what openleadr 0.5.36 needs around it.

Everything here is specific to openleadr (the OpenADR library) and kept apart from the
VEN's logic in :mod:`adapters.openadr.ven`:

* :class:`Client` — ``OpenADRClient`` with a configurable poll interval (openleadr only
  follows the VTN's ``requestedOadrPollFreq``);
* :class:`ErrorCapture` — openleadr reports failures only as log lines (a TLS error, a
  wrong VTN fingerprint, a refused registration all end as "No RegistrationID received");
  this keeps the last distinct ones logged on the VEN's thread so the VEN can say why;
* :func:`thread_safe_signature_checks` — openleadr verifies every XML signature with one
  module-level signxml ``XMLVerifier``, whose ``verify`` keeps per-call state on the
  instance: two threads verifying at once (a VEN beside a VTN or another VEN in one
  process) fail good signatures at random. This swaps in a verifier per call;
* :func:`power_real` — a fresh ``powerReal`` item base (openleadr mutates the shared enum);
* :func:`until_stopped`, :func:`close` — run and stop a client whatever its state.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from openleadr import (  # type: ignore[import-untyped, unused-ignore]
    OpenADRClient,
    messaging,
    objects,
)
from signxml.verifier import XMLVerifier

__all__ = [
    "Client",
    "ErrorCapture",
    "close",
    "power_real",
    "response_status",
    "thread_safe_signature_checks",
    "until_stopped",
]

log = logging.getLogger("gridflex.openadr")


class ErrorCapture(logging.Handler):
    """The last distinct warnings openleadr logged on the VEN's thread (why it failed)."""

    def __init__(self, keep: int = 4) -> None:
        super().__init__(logging.WARNING)
        self.thread_id: int | None = None
        self.keep = keep
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread_id:
            self.add(record.getMessage())

    def add(self, message: str) -> None:
        message = message[:500]
        if message not in self.messages:
            self.messages = [*self.messages, message][-self.keep :]

    @property
    def text(self) -> str | None:
        return " | ".join(self.messages) or None


def response_status(message_type: str | None, payload: Any) -> int | None:
    """The OpenADR status of a VTN answer: its ``response_code`` (200 = OK), 200 for an
    answer without one, ``None`` for no usable answer (HTTP error, bad XML or signature)."""
    if message_type is None or not isinstance(payload, dict):
        return None
    response = payload.get("response")
    if isinstance(response, dict) and "response_code" in response:
        try:
            return int(response["response_code"])
        except (TypeError, ValueError):
            return None
    return 200


class Client(OpenADRClient):  # type: ignore[misc, unused-ignore]
    """openleadr's client, truthful about its registration, with gridflex's poll interval.

    openleadr 0.5.36 keeps a registration id that ``oadrQueryRegistration`` returned even
    when ``oadrCreatePartyRegistration`` is answered with an error status (e.g. 463), and
    treats an error status on a poll as "nothing new": a VTN that refuses every message
    leaves it "registered". Here a registration holds only after a 200 answer with a
    registration id, and ``max_failed_exchanges`` consecutive exchanges without a 200
    (error status, HTTP error, bad signature) drop it, so the VEN starts over.
    """

    poll_override: timedelta | None = None
    max_failed_exchanges: int = 3

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failed_exchanges = 0
        self.last_status: int | None = None

    async def create_party_registration(self, *args: Any, **kwargs: Any) -> Any:
        result = await super().create_party_registration(*args, **kwargs)
        ok = (
            isinstance(result, tuple)
            and len(result) == 2
            and response_status(result[0], result[1]) == 200
        )
        if not ok:
            self.registration_id = None  # refused: whatever a query said before
        if self.registration_id and self.poll_override is not None:
            self.poll_frequency = self.poll_override
        return result

    async def _perform_request(self, service: str, message: Any) -> Any:
        result = await super()._perform_request(service, message)
        message_type, payload = result if isinstance(result, tuple) else (None, None)
        status = response_status(message_type, payload)
        self.last_status = status
        if status == 200:
            self.failed_exchanges = 0
        else:
            self.failed_exchanges += 1
            if self.registration_id and self.failed_exchanges >= self.max_failed_exchanges:
                log.warning(
                    "openadr: %d exchanges in a row without an OK answer (last status %s); "
                    "registration %s counts as lost",
                    self.failed_exchanges,
                    status,
                    self.registration_id,
                )
                self.registration_id = None
        return result


class _FreshVerifier:
    """A signxml verifier per call: ``XMLVerifier.verify`` keeps per-call state on the
    instance, and openleadr verifies every signature with one module-level instance."""

    def verify(self, *args: Any, **kwargs: Any) -> Any:
        return XMLVerifier().verify(*args, **kwargs)


def thread_safe_signature_checks() -> None:
    """Make openleadr's XML signature checks safe when two threads verify at once (a VEN
    beside a VTN or another VEN in one process); otherwise good signatures fail at random."""
    if not isinstance(messaging.VERIFIER, _FreshVerifier):
        messaging.VERIFIER = _FreshVerifier()


def power_real() -> Any:
    """A fresh powerReal item base (openleadr mutates the shared enum member's scale)."""
    return objects.Measurement(
        name="powerReal",
        description="RealPower",
        unit="W",
        scale="none",
        power_attributes=objects.PowerAttributes(hertz=50, voltage=230, ac=True),
    )


async def until_stopped(run: Any, stop: asyncio.Event) -> tuple[bool, str | None]:
    """Await ``run`` unless ``stop`` is set first (then cancel it): (finished, its error)."""
    task = asyncio.ensure_future(run)
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return False, None
    stopper.cancel()
    await asyncio.gather(stopper, return_exceptions=True)
    exc = task.exception() if not task.cancelled() else None
    if exc is None:
        return True, None
    # openleadr raises little, but an unreadable key file does
    log.error("openadr: registration raised %s: %s", type(exc).__name__, exc)
    return True, f"{type(exc).__name__}: {exc}"[:500]


async def close(client: Any) -> None:
    """Stop a client whatever state it is in (openleadr's stop needs an HTTP session)."""
    if client is None:
        return
    try:
        if client.scheduler.running:
            client.scheduler.shutdown(wait=False)
        if client.report_queue_task is not None:
            client.report_queue_task.cancel()
        if client.client_session is not None and not client.client_session.closed:
            await client.client_session.close()
    except Exception:
        log.exception("openadr: closing the client failed")
