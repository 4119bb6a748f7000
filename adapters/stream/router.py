"""Records to typed calls on the service, and dead letters for what cannot be applied.

:func:`route` decodes one consumed record by its topic and calls the service's typed entry
point (``on_telemetry``, ``on_grid_signal``, ``on_frequency``). It never raises for bad
input: it returns a :class:`Rejection` (a stable ``code`` plus a detail), and
:func:`dead_letter_headers` turns it into the headers of the record written to the
dead-letter topic, so the stream never stops (bytewax's ``oks``/``errs`` split).

Reason codes: ``invalid`` (not a valid message of the topic: malformed JSON, a missing or
mistyped field — the detail lists every issue), ``no_value`` (a tombstone on an input
topic), ``not_ready`` (no service: the partition is being handed over), ``unknown_topic``,
the fleet's own codes (``unknown_site``, ``stale`` …) as it returns them, and
``limit_rejected`` (a DSO limit the service refused, with its issues). The ``reason``
header keeps today's text (``code`` alone when there is no detail, else ``code: detail``)
so consumers of the dead-letter topic see no change; ``reason-code`` carries the code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from adapters.stream.transport import Headers, Message
from aggregator.errors import InvalidInput
from aggregator.fleet import ApplyOutcome, ApplyResult
from aggregator.interfaces import Topics
from aggregator.messages import (
    FrequencySignal,
    GridSignal,
    Telemetry,
    decode_frequency,
    decode_grid_signal,
    decode_telemetry,
)

__all__ = ["Rejection", "RoutedService", "dead_letter_headers", "route", "route_frequency"]


class RoutedService(Protocol):
    """The service's typed entry points the router calls."""

    def on_telemetry(self, msg: Telemetry) -> ApplyResult: ...

    def on_grid_signal(self, msg: GridSignal) -> str | None: ...

    def on_frequency(self, msg: FrequencySignal) -> object: ...


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a record was not applied: a stable ``code`` and a human detail."""

    code: str
    detail: str = ""

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.detail}" if self.detail else self.code


def _invalid(exc: InvalidInput) -> Rejection:
    return Rejection("invalid", "; ".join(str(i) for i in exc.issues)[:500])


_CODE = re.compile(r"[a-z][a-z0-9_]*")


def _from_reason(reason: str, default_code: str) -> Rejection:
    code, _, detail = reason.partition(":")
    if _CODE.fullmatch(code.strip()):
        return Rejection(code.strip(), detail.strip()[:500])
    return Rejection(default_code, reason[:500])


def route(service: RoutedService | None, msg: Message, topics: Topics) -> Rejection | None:
    """Apply one record of the telemetry or grid-signals topic; ``None`` when applied (or a
    harmless duplicate), else why not."""
    if service is None:
        return Rejection("not_ready")
    if msg.value is None:
        return Rejection("no_value", "a tombstone on an input topic")
    try:
        if msg.topic == topics.telemetry:
            res = service.on_telemetry(decode_telemetry(msg.value))
            if res.outcome is ApplyOutcome.REJECTED:
                return _from_reason(res.reason or "rejected", "rejected")
            return None
        if msg.topic == topics.grid_signals:
            reason = service.on_grid_signal(decode_grid_signal(msg.value))
            return None if reason is None else Rejection("limit_rejected", reason[:500])
    except InvalidInput as exc:
        return _invalid(exc)
    return Rejection("unknown_topic", msg.topic)


def route_frequency(service: RoutedService, msg: Message) -> Rejection | None:
    """Apply one frequency record (the newest of a poll: older samples are superseded)."""
    if msg.value is None:
        return Rejection("no_value", "a tombstone on the frequency topic")
    try:
        service.on_frequency(decode_frequency(msg.value))
    except InvalidInput as exc:
        return _invalid(exc)
    return None


def dead_letter_headers(msg: Message, rejection: Rejection) -> Headers:
    """Headers of the dead letter of ``msg``: the reason, its code and where it came from."""
    return (
        ("reason", rejection.reason.encode()[:1000]),
        ("reason-code", rejection.code.encode()),
        ("source-topic", msg.topic.encode()),
        ("source-partition", str(msg.partition).encode()),
        ("source-offset", str(msg.offset).encode()),
    )
