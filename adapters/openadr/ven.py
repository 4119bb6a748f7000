"""The OpenADR 2.0b VEN: openleadr's ``OpenADRClient`` on its own asyncio thread.

:class:`OpenAdrVen` registers with the VTN (plain HTTP, or mutual TLS with XML signatures
when :class:`~adapters.openadr.config.OpenAdrConfig` names cert, key, CA and the VTN's
fingerprint), polls it, turns every event into DSO limits with
:func:`~adapters.openadr.mapping.event_to_limits`, hands them to ``publish`` and answers
the VTN ``optIn`` or ``optOut``. It offers one TELEMETRY_USAGE report (``powerReal`` in W,
sampled every ``report_interval_s``) per configured target with ``report=True``, the value
being ``measured_kw(gridflex target id) × 1000``.

Threading: everything — ``publish``, ``measured_kw``, ``feasibility``, ``on_prices``,
the audit log — is called on the VEN's own thread, so they must be thread-safe (hand the
message to the service's thread, e.g. through a queue). ``publish`` may return a rejection
reason (as :meth:`aggregator.service.replica.Service.on_grid_signal` does); a rejection or an
exception makes the VEN opt out.

Rules the VEN keeps:

* Limits it understood are always published, even when it opts out: honouring a cap only
  makes the grid safer. It opts out when the event has problems (unknown target,
  unsupported signal …), when a limit is infeasible or when publishing failed; the reason
  is logged, audited as part of the decision (:attr:`OpenAdrVen.decisions`) — OpenADR's
  ``oadrCreatedEvent`` has no field for it and openleadr's VTN does not serve ``EiOpt``.
* A modified event replaces its limits: ids the new version no longer has are cancelled.
  A cancelled event cancels every limit published for it.
* openleadr checks XML signatures with one shared signxml verifier that is not
  thread-safe; :meth:`OpenAdrVen.start` swaps in a verifier per call, process-wide
  (:mod:`adapters.openadr.client`).
* Registration state is truthful: the VEN counts as registered only after the VTN
  answered ``oadrCreatePartyRegistration`` with status 200 and a registration id, and
  while its exchanges keep getting OK answers — ``max_failed_exchanges`` answers in a
  row with an error status (e.g. 463), or none, drop it (:class:`~adapters.openadr.client.Client`).
  ``gridflex serve`` shows it in ``/readyz`` (not ready while unregistered) and in the
  metrics ``gridflex_openadr_registered``, ``gridflex_openadr_registration_attempts`` and
  ``gridflex_openadr_registration_failures`` (:func:`export_ven_metrics`).
* A failed registration (TLS refused, wrong VTN fingerprint, VTN said no) publishes
  nothing; it is retried with a fresh client after ``registration_retry_s``, doubling
  after each consecutive failure up to ``registration_backoff_max_s``, and
  :meth:`OpenAdrVen.status` tells why it failed (openleadr's own warning text). A
  registration lost later (VTN cancelled it, errors on every exchange) starts over at once.
* Limits go to ``publish`` — in ``gridflex serve`` the DSO intake, which validates,
  publishes and audits each limit once; the VEN itself audits only its opt decisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from openleadr import enums  # type: ignore[import-untyped, unused-ignore]
from prometheus_client import CollectorRegistry, Gauge

from adapters.dso.audit import AuditLog
from adapters.openadr.client import (
    Client,
    ErrorCapture,
    close,
    power_real,
    thread_safe_signature_checks,
    until_stopped,
)
from adapters.openadr.config import OpenAdrConfig, OpenAdrTarget
from adapters.openadr.mapping import (
    Feasibility,
    OptType,
    PricePoint,
    decide_opt,
    event_to_limits,
    event_to_prices,
)
from aggregator.errors import ConfigError, InvalidInput, Issue
from aggregator.interfaces import Clock
from aggregator.messages import DsoLimitCancel, DsoLimitMessage

__all__ = ["OpenAdrVen", "OptDecision", "VenStatus", "export_ven_metrics", "retry_delay_s"]

log = logging.getLogger("gridflex.openadr")

Publish = Callable[[DsoLimitMessage | DsoLimitCancel], str | None]
REPORT_SPECIFIER_ID = "gridflex-telemetry-usage"
_WATCH_S = 5.0  # how often a registered VEN checks that it still is


@dataclass(frozen=True, slots=True)
class OptDecision:
    """What the VEN answered to one version of one OpenADR event, and why."""

    event_id: str
    modification_number: int
    status: str
    opt: OptType
    reason: str
    limit_ids: tuple[str, ...]
    issues: tuple[Issue, ...]
    at: datetime


@dataclass(frozen=True, slots=True)
class VenStatus:
    """Registration state: ``registered`` is live (the VTN can revoke it)."""

    running: bool
    registered: bool
    ven_id: str | None
    registration_id: str | None
    attempts: int
    last_error: str | None
    events: int
    failures: int = 0  # consecutive failed registrations (resets when registered)


def retry_delay_s(first_s: float, failures: int, max_s: float) -> float:
    """Exponential backoff: ``first_s`` after one failure, doubling, at most ``max_s``."""
    return float(min(max_s, first_s * 2.0 ** max(0, min(failures, 64) - 1)))


def export_ven_metrics(ven: OpenAdrVen, registry: CollectorRegistry) -> None:
    """Registration state as metrics, read at each scrape."""
    Gauge(
        "gridflex_openadr_registered", "1 while registered with the VTN", registry=registry
    ).set_function(lambda: float(ven.status().registered))
    Gauge(
        "gridflex_openadr_registration_attempts",
        "Registration attempts since start",
        registry=registry,
    ).set_function(lambda: float(ven.status().attempts))
    Gauge(
        "gridflex_openadr_registration_failures",
        "Failed registrations in a row",
        registry=registry,
    ).set_function(lambda: float(ven.status().failures))


class _SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class _State:
    published: dict[str, set[str]] = field(default_factory=dict)  # OpenADR id → limit ids
    decisions: dict[str, OptDecision] = field(default_factory=dict)
    attempts: int = 0
    events: int = 0
    failures: int = 0


class OpenAdrVen:
    """An OpenADR VEN feeding DSO limits to ``publish``; :meth:`start` / :meth:`stop`."""

    def __init__(
        self,
        config: OpenAdrConfig,
        publish: Publish,
        measured_kw: Callable[[str], float],
        *,
        audit: AuditLog | None = None,
        on_prices: Callable[[Sequence[PricePoint]], None] | None = None,
        feasibility: Feasibility | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self._publish = publish
        self._measured_kw = measured_kw
        self._audit = audit
        self._on_prices = on_prices
        self._feasibility = feasibility
        self._clock: Clock = clock or _SystemClock()
        self._state = _State()
        self._lock = threading.Lock()
        self._capture = ErrorCapture()
        self._failure: str | None = None  # why the last failed registration failed
        self._registered = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._client: Any = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the VEN's thread; registration happens there (see :meth:`wait_registered`)."""
        issues = self.config.file_issues()
        if issues:
            raise ConfigError(issues)
        if self._thread is not None:
            raise RuntimeError("the VEN is already running")
        thread_safe_signature_checks()
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._main, name="openadr-ven", daemon=True)
        logging.getLogger("openleadr").addHandler(self._capture)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop polling and reporting, close the HTTP session, join the thread."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None or loop is None or stop is None:
            return
        if not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout_s)
        logging.getLogger("openleadr").removeHandler(self._capture)
        self._thread = None
        self._registered.clear()

    def wait_registered(self, timeout_s: float) -> bool:
        """Block until registered with the VTN; ``False`` on time-out."""
        return self._registered.wait(timeout_s)

    def status(self) -> VenStatus:
        client = self._client
        reg_id = getattr(client, "registration_id", None)
        with self._lock:
            attempts, events = self._state.attempts, self._state.events
            failures = self._state.failures
        return VenStatus(
            running=self._thread is not None and self._thread.is_alive(),
            registered=bool(reg_id) and self._registered.is_set(),
            ven_id=getattr(client, "ven_id", None),
            registration_id=reg_id,
            attempts=attempts,
            last_error=self._capture.text or self._failure,
            events=events,
            failures=failures,
        )

    @property
    def decisions(self) -> dict[str, OptDecision]:
        """The last decision per OpenADR event id."""
        with self._lock:
            return dict(self._state.decisions)

    def _main(self) -> None:
        loop = self._loop
        assert loop is not None
        self._capture.thread_id = threading.get_ident()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._run())
        except Exception:
            log.exception("openadr: the VEN stopped on an error")
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _run(self) -> None:
        stop = self._stop
        assert stop is not None
        retry = self.config.registration_retry_s
        while not stop.is_set():
            with self._lock:
                self._state.attempts += 1
            self._capture.messages = []
            try:
                client = self._new_client()
            except (OSError, ValueError) as exc:  # unreadable certificate or key
                client = None
                self._capture.add(f"cannot create the client: {type(exc).__name__}: {exc}")
            else:
                self._client = client
                finished, error = await until_stopped(client.run(), stop)
                if not finished:
                    break
                if error is not None:
                    self._capture.add(error)
            if client is not None and client.registration_id:
                log.info("openadr: registered as %s (%s)", client.ven_id, client.registration_id)
                self._capture.messages = []
                self._failure = None
                with self._lock:
                    self._state.failures = 0
                self._registered.set()
                while client.registration_id and not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), _WATCH_S)
                if stop.is_set():
                    break
                # the VTN cancelled the registration or a re-registration failed
                self._registered.clear()
                self._failure = self._capture.text or "registration lost"
                log.warning("openadr: registration lost: %s", self._failure)
                await close(client)
                continue
            self._failure = self._capture.text or "registration failed"
            with self._lock:
                self._state.failures += 1
                failures = self._state.failures
            await close(client)
            if retry is None:
                log.warning("openadr: registration failed: %s", self._failure)
                await stop.wait()
                break
            wait_s = retry_delay_s(retry, failures, self.config.registration_backoff_max_s)
            log.warning(
                "openadr: registration failed (%d in a row), next attempt in %.0f s: %s",
                failures,
                wait_s,
                self._failure,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait_s)
        await close(self._client)

    def _new_client(self) -> Any:
        c = self.config
        client = Client(
            ven_name=c.ven_name,
            vtn_url=c.vtn_url,
            cert=str(c.cert) if c.cert else None,
            key=str(c.key) if c.key else None,
            passphrase=c.key_passphrase.get_secret_value() if c.key_passphrase else None,
            vtn_fingerprint=c.vtn_fingerprint,
            show_fingerprint=False,
            ca_file=str(c.ca) if c.ca else None,
            ven_id=c.ven_id,
            check_hostname=c.check_hostname,
        )
        client.max_failed_exchanges = c.max_failed_exchanges
        if c.poll_interval_s is not None:
            client.poll_override = timedelta(seconds=c.poll_interval_s)
        client.add_handler("on_event", self.handle_event)
        client.add_handler("on_update_event", self.handle_event)
        interval = timedelta(seconds=c.report_interval_s)
        for resource_id, target in c.targets.items():
            if not target.report:
                continue
            client.add_report(
                callback=lambda t=target: self._measure(t),
                resource_id=resource_id,
                measurement=power_real(),
                data_collection_mode="incremental",
                report_specifier_id=REPORT_SPECIFIER_ID,
                r_id=f"{resource_id}:powerReal",
                report_name=enums.REPORT_NAME.TELEMETRY_USAGE,
                reading_type=enums.READING_TYPE.DIRECT_READ,
                report_type=enums.REPORT_TYPE.READING,
                report_duration=interval,
                sampling_rate=interval,
                unit="W",
                scale="none",
            )
        return client

    # ------------------------------------------------------------------ callbacks

    def _measure(self, target: OpenAdrTarget) -> float:
        """TELEMETRY_USAGE value in W (OpenADR's unit).

        When the power cannot be read this raises, so that openleadr's scheduled job fails
        and no report goes out (an empty report makes openleadr's own VTN answer HTTP 500).
        """
        kw = float(self._measured_kw(target.id))
        if not math.isfinite(kw):
            raise ValueError(f"measured_kw({target.id!r}) is not finite: {kw!r}")
        return kw * 1000.0

    def handle_event(self, event: dict[str, Any]) -> OptType:
        """Map one OpenADR event (new or modified version), publish, and answer the VTN.

        openleadr calls this on the VEN's thread for every new event and every new
        modification number (``on_event`` and ``on_update_event``); it never raises.
        """
        try:
            return self._handle(event)
        except Exception:
            log.exception("openadr: event handling failed; opting out")
            return "optOut"

    def _handle(self, event: dict[str, Any]) -> OptType:
        now = self._clock.now()
        desc = event.get("event_descriptor", {})
        oid = str(desc.get("event_id"))
        status = str(desc.get("event_status", "")).lower()
        messages, issues = event_to_limits(event, self.config, now)
        prices, price_issues = event_to_prices(event, self.config, now)
        issues += price_issues
        with self._lock:
            self._state.events += 1
            before = set(self._state.published.get(oid, set()))
        limits = [m for m in messages if isinstance(m, DsoLimitMessage)]
        wanted = {m.event_id for m in limits}
        cancels = [m for m in messages if isinstance(m, DsoLimitCancel)]
        named = {m.event_id for m in cancels}
        source = self.config.source
        cancels += [  # limits of an earlier version that this one no longer has
            DsoLimitCancel(ts=now, event_id=lid, source=source)
            for lid in sorted(before - wanted - named)
        ]
        rejected: list[str] = []
        live = set(before)
        outgoing: list[DsoLimitMessage | DsoLimitCancel] = [*cancels, *limits]
        for msg in outgoing:
            why = self._send(msg, now, known=msg.event_id in before)
            if why is not None:
                rejected.append(f"{msg.event_id}: {why}")
            elif isinstance(msg, DsoLimitCancel):
                live.discard(msg.event_id)
            else:
                live.add(msg.event_id)
        if prices and self._on_prices is not None:
            try:
                self._on_prices(prices)
            except Exception as exc:
                log.exception("openadr: on_prices failed")
                rejected.append(f"prices: {type(exc).__name__}: {exc}")
        opt, reason = decide_opt(limits, self._feasibility)
        reasons = [str(i) for i in issues] + rejected + ([reason] if reason else [])
        if status == "cancelled":
            opt = "optIn"  # acknowledge the cancellation
        elif issues or rejected:
            opt = "optOut"
        decision = OptDecision(
            event_id=oid,
            modification_number=int(desc.get("modification_number") or 0),
            status=status,
            opt=opt,
            reason="; ".join(reasons)[:2000],
            limit_ids=tuple(sorted(live)),
            issues=tuple(issues),
            at=now,
        )
        with self._lock:
            if live:
                self._state.published[oid] = live
            else:
                self._state.published.pop(oid, None)
            self._state.decisions[oid] = decision
        self._audit_decision(decision)
        level = logging.INFO if opt == "optIn" else logging.WARNING
        log.log(level, "openadr: event %s (%s) → %s %s", oid, status, opt, decision.reason)
        return opt

    def _send(
        self, msg: DsoLimitMessage | DsoLimitCancel, now: datetime, *, known: bool
    ) -> str | None:
        """Hand one message to ``publish`` (the DSO intake, which validates, publishes and
        audits it once); the rejection reason or ``None``."""
        try:
            why = self._publish(msg)
        except Exception as exc:
            log.exception("openadr: publish failed for %s", msg.event_id)
            return f"publish failed: {type(exc).__name__}: {exc}"
        return str(why) if why else None

    def _audit_decision(self, d: OptDecision) -> None:
        if self._audit is None:
            return
        payload = {
            "event_id": d.event_id,
            "modification_number": d.modification_number,
            "status": d.status,
            "opt": d.opt,
            "reason": d.reason,
            "limit_ids": list(d.limit_ids),
        }
        try:
            self._audit.append("openadr.opt", payload, d.at, source=self.config.source)
        except (InvalidInput, OSError, ValueError):
            log.exception("openadr: audit append failed for %s", d.event_id)
