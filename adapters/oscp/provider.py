"""The OSCP 2.0 Flexibility Provider: the link with one Capacity Provider, its forecasts as
DSO limits, the fallback when the CP is silent, measurements and adjustment requests.

:class:`OscpProvider` holds the link's state; its server (:mod:`adapters.oscp.server`)
calls the ``on_*`` handlers on uvicorn's threads, and its worker thread (``oscp-fp``) sends
what gridflex owes the CP (:mod:`adapters.oscp.client`). Rules it keeps:

* **Tokens**: the CP's ``/register`` must carry the out-of-band registration token (or the
  token issued since); every other request the token gridflex issued at registration; a
  wrong or missing one is a 401, counted.
* **Registration**: a ``Register`` without ``X-Correlation-ID`` (the CP starts) is answered
  by gridflex's own, correlated, with a fresh token; with ``cp_base_url`` gridflex starts.
* **Handshake**: answered (after the 204) by a ``HandshakeAcknowledgement`` asking the CP
  for heartbeats every :attr:`OscpConfig.heartbeat_interval_s`; gridflex then sends the
  CP heartbeats at the interval the CP asked for (``offline_mode_at`` = 3 intervals on).
* **Forecasts** (checked whole first: a problem is a 400 and nothing is applied):
  CONSUMPTION blocks → limits through ``publish`` (the one DSO intake in
  ``gridflex serve``), the previous forecast of the group revised by id and what it had
  beyond cancelled; GENERATION of a site group the same as export caps on the site (of
  other groups recorded, not applied); FALLBACK_CONSUMPTION kept for the fallback;
  FALLBACK_GENERATION and OPTIMUM recorded and counted, not applied. A limit ``publish``
  refuses is reported to the CP as a ``GroupCapacityComplianceError``.
* **Fallback**: the CP is *degraded* after :attr:`OscpConfig.degraded_s` without a
  heartbeat, *offline* past its last ``offline_mode_at`` (or ``offline_after_s`` without
  one). Degraded or offline, the FALLBACK_CONSUMPTION blocks are published as limits that
  start when offline mode begins (already, when offline): the caps in force now do not
  change while the CP is merely late, but every setpoint batch's failsafe value — which
  respects every cap known over the lease and failsafe period — already does. The next
  heartbeat cancels them.
* **Measurements**: each group's measured net import (``readings.measured_kw``) is
  integrated every second and sent as an accumulating kWh register every
  ``measurement_interval_s``. **Adjustment**: when the sessions of a group need more
  (``readings.required_kw``) than a CONSUMPTION block in force gives, gridflex asks once
  per block and forecast for what they need (AdjustGroupCapacityForecast).

Threading: state is under one lock, never held across an HTTP request to the CP (the CP
may call back while gridflex waits for it).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Literal

import httpx

from adapters.oscp.client import ACK_PATHS, CpClient, CpRefused
from adapters.oscp.config import OscpConfig
from adapters.oscp.mapping import (
    adjust_asks,
    forecast_issues,
    forecast_limits,
    measurement,
)
from adapters.oscp.persist import LinkFile
from adapters.oscp.state import Energy, GroupReadings, Job, Link, OscpStatus, State, utc_now
from adapters.oscp.wire import (
    OSCP_VERSION,
    ForecastType,
    GroupCapacityComplianceError,
    GroupCapacityForecast,
    Handshake,
    HandshakeAcknowledgement,
    Heartbeat,
    Register,
    RequiredBehaviour,
    VersionUrl,
    dump,
)
from aggregator.errors import GridflexError, Issue
from aggregator.messages import DsoLimitCancel, DsoLimitMessage

__all__ = ["GroupReadings", "OscpProvider", "OscpStatus", "Publish"]

log = logging.getLogger("gridflex.oscp")

Publish = Callable[[DsoLimitMessage | DsoLimitCancel], str | None]
_ATTEMPTS = 5


class OscpProvider:
    """An OSCP 2.0 FP feeding DSO limits to ``publish`` (see the module docstring)."""

    def __init__(
        self,
        config: OscpConfig,
        publish: Publish,
        readings: GroupReadings | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
        transport: httpx.BaseTransport | None = None,
        tick_s: float = 0.2,
    ) -> None:
        self.config = config
        self._publish = publish
        self._readings = readings
        self._clock = clock
        self._tick_s = tick_s
        self._http = httpx.Client(timeout=config.timeout_s, transport=transport)
        self.cp = CpClient(self._http)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._s = State()
        self._link_file = LinkFile(config.state_file, self._s)
        self._jobs: deque[Job] = deque()
        self._energy: dict[str, Energy] = {}
        self._counts: dict[str, int] = {}
        self._rejected: deque[str] = deque(maxlen=20)
        self.issues: deque[Issue] = deque(maxlen=200)
        self.base_url: str | None = config.public_url  # set by the server when it listens

    # ------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the OSCP provider is already started")
        if self.config.cp_base_url is not None and self.config.cp_token is not None:
            self._queue("register", self._register_first)
        self._thread = threading.Thread(target=self._run, name="oscp-fp", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)
        self._http.close()

    def status(self) -> OscpStatus:
        with self._lock:
            s = self._s
            return OscpStatus(
                running=self._thread is not None and self._thread.is_alive(),
                registered=s.cp_url is not None and s.cp_token is not None,
                handshaken=s.handshake_at is not None,
                link=self._link(self._clock()),
                last_heartbeat=s.last_heartbeat,
                offline_mode_at=s.offline_at,
                fallback_active=s.fallback_active,
                limits=sum(len(v) for v in s.limit_ids.values()),
                counts=dict(self._counts),
                recorded=s.recorded(),
                rejected=tuple(self._rejected),
            )

    def count(self, what: str) -> None:
        with self._lock:
            self._counts[what] = self._counts.get(what, 0) + 1

    # ---------------------------------------------------------------- inbound (server)

    def authenticate(self, header: str | None, *, register: bool = False) -> bool:
        """Whether ``Authorization`` carries a token the CP may use here (counted if not)."""
        token = header[6:].strip() if header and header.startswith("Token ") else None
        with self._lock:
            ok = token is not None and (
                secrets.compare_digest(token, self._s.issued or "\0")
                or (
                    register
                    and secrets.compare_digest(
                        token, self.config.registration_token.get_secret_value()
                    )
                )
            )
        if not ok:
            self.count("refused_token")
        return ok

    def on_register(
        self, msg: Register, request_id: str, correlation_id: str | None
    ) -> list[Issue]:
        url = next((v.base_url for v in msg.version_url if v.version == OSCP_VERSION), None)
        if url is None:
            offered = ", ".join(v.version for v in msg.version_url)
            return [
                Issue(
                    field="version_url",
                    code="unsupported_version",
                    message=f"OSCP {OSCP_VERSION} only (offered: {offered[:60]})",
                )
            ]
        with self._lock:
            self._s.cp_url, self._s.cp_token = url, msg.token
            self.count("register_received")
            if correlation_id is None:  # the CP starts: answer with a fresh token
                self._s.issued = secrets.token_urlsafe(32)
                issued = self._s.issued
                self._queue("register", lambda: self._send_register(issued, request_id))
        log.info("oscp: registered with CP at %s", url)
        return []

    def on_handshake(self, msg: Handshake, request_id: str) -> None:
        with self._lock:
            self._s.cp_interval_s = msg.required_behaviour.heartbeat_interval
            self._s.handshake_at = self._clock()
            self.count("handshake_received")
            self._queue("handshake_acknowledgement", lambda: self._send_ack(request_id))

    def on_handshake_ack(self, msg: HandshakeAcknowledgement) -> None:
        with self._lock:
            rb = msg.required_behaviour
            if rb is not None and rb.heartbeat_interval is not None:
                self._s.cp_interval_s = rb.heartbeat_interval
            self._s.handshake_at = self._s.handshake_at or self._clock()
            self.count("handshake_ack_received")

    def on_heartbeat(self, msg: Heartbeat) -> None:
        with self._lock:
            now = self._clock()
            self._s.last_heartbeat, self._s.offline_at = now, msg.offline_mode_at
            self.count("heartbeat_received")
            if self._s.fallback_active:
                self._send_all(self._cancels(self._s.fallback_ids, now))
                self._s.fallback_ids, self._s.fallback_active = frozenset(), False
                log.info("oscp: CP heartbeat again: fallback withdrawn")

    def on_forecast(self, fc: GroupCapacityForecast, request_id: str) -> list[Issue]:
        """Apply a checked forecast; every problem returned (then nothing is applied)."""
        issues = forecast_issues(fc, self.config)
        if issues:
            return issues
        with self._lock:
            now = self._clock()
            self._s.revision += 1
            self._s.forecasts[(fc.group_id, fc.type)] = (fc, self._s.revision)
            self.count(f"forecast_{fc.type.value.lower()}")
            site = self.config.groups[fc.group_id].type == "site"
            if fc.type is ForecastType.CONSUMPTION:
                self._apply(fc, request_id, now, "consumption", "import", fc.group_id)
            elif fc.type is ForecastType.GENERATION and site:  # export caps are per site
                self._apply(fc, request_id, now, "generation", "export", f"{fc.group_id}#gen")
            elif fc.type is ForecastType.FALLBACK_CONSUMPTION:
                if self._s.fallback_active:
                    self._publish_fallback(now)
            else:
                log.warning(
                    "oscp: %s forecast for group %s recorded, not applied",
                    fc.type.value,
                    fc.group_id,
                )
        return []

    def _apply(
        self,
        fc: GroupCapacityForecast,
        request_id: str,
        now: datetime,
        kind: str,
        direction: Literal["import", "export"],
        book: str,
    ) -> None:
        """Publish a forecast's limits, cancel what the group's previous one had more."""
        limits = forecast_limits(fc, self.config, now, kind=kind, direction=direction)
        published = self._send_all(limits)
        new = frozenset(m.event_id for m in limits)
        old = self._s.limit_ids.get(book, frozenset())
        self._send_all(self._cancels(old - new, now))
        # a revision refused leaves the previous limit of that id in force
        self._s.limit_ids[book] = published | (old & new)
        if published != new:
            self._queue("compliance_error", lambda: self._send_compliance(fc, request_id))

    # ----------------------------------------------------------------------- the link

    def _link(self, now: datetime) -> Link:
        s = self._s
        seen = s.last_heartbeat or s.handshake_at
        if seen is None:
            return "none"
        if now >= self._deadline(seen):
            return "offline"
        if (now - seen).total_seconds() > self.config.degraded_s:
            return "degraded"
        return "up"

    def _deadline(self, seen: datetime) -> datetime:
        if self._s.offline_at is not None and self._s.last_heartbeat is not None:
            return self._s.offline_at
        return seen + timedelta(seconds=self.config.offline_after_s)

    def check_link(self) -> Link:
        """Publish the fallback when the CP is degraded or offline (worker, each tick)."""
        with self._lock:
            now = self._clock()
            link = self._link(now)
            degraded = link in ("degraded", "offline") and not self._s.fallback_active
            if degraded and self._publish_fallback(now):
                log.warning("oscp: CP %s: fallback capacity published", link)
            return link

    def _publish_fallback(self, now: datetime) -> bool:
        s = self._s
        seen = s.last_heartbeat or s.handshake_at or now
        start = self._deadline(seen)
        limits = [
            m
            for (group, kind), (fc, _) in sorted(s.forecasts.items())
            if kind is ForecastType.FALLBACK_CONSUMPTION
            for m in forecast_limits(fc, self.config, now, kind="fallback", not_before=start)
        ]
        if not limits:
            return False
        published = self._send_all(limits)
        self._send_all(self._cancels(s.fallback_ids - published, now))
        s.fallback_ids, s.fallback_active = published, True
        self.count("fallback_published")
        return True

    # ----------------------------------------------------------------- publish helpers

    def _cancels(self, ids: frozenset[str], now: datetime) -> list[DsoLimitCancel]:
        return [DsoLimitCancel(ts=now, event_id=i, source=self.config.source) for i in sorted(ids)]

    def _send_all(self, msgs: list[DsoLimitMessage] | list[DsoLimitCancel]) -> frozenset[str]:
        ok: set[str] = set()
        for msg in msgs:
            try:
                why = self._publish(msg)
            except Exception as exc:  # publish must never stop the provider
                why = f"{type(exc).__name__}: {exc}"
            if why is None:
                ok.add(msg.event_id)
            else:
                self._rejected.append(f"{msg.event_id}: {why}")
                self.count("publish_rejected")
                log.warning("oscp %s %s rejected: %s", msg.type, msg.event_id, why)
        return frozenset(ok)

    # --------------------------------------------------------------- outbound (worker)

    def _queue(self, name: str, run: Callable[[], None]) -> None:
        self._jobs.append(Job(name, run))

    def _peer(self) -> tuple[str, str]:
        with self._lock:
            url, token = self._s.cp_url, self._s.cp_token
        if url is None or token is None:
            raise CpRefused("-", 0, "not registered with the CP yet")
        return url, token

    def _our_versions(self) -> list[VersionUrl]:
        if self.base_url is None:
            raise RuntimeError("the FP's base URL is unknown (server not started)")
        return [VersionUrl(version=OSCP_VERSION, base_url=self.base_url)]

    def _register_first(self) -> None:
        cfg = self.config
        assert cfg.cp_base_url is not None and cfg.cp_token is not None
        with self._lock:
            self._s.issued = self._s.issued or secrets.token_urlsafe(32)
            issued = self._s.issued
        body = dump(Register(token=issued, version_url=self._our_versions()))
        self.cp.post(cfg.cp_base_url, "register", body, cfg.cp_token.get_secret_value())
        self.count("register_sent")

    def _send_register(self, issued: str, correlation_id: str) -> None:
        url, token = self._peer()
        body = dump(Register(token=issued, version_url=self._our_versions()))
        self.cp.post(url, "register", body, token, correlation_id=correlation_id)
        self.count("register_sent")

    def _send_ack(self, correlation_id: str) -> None:
        url, token = self._peer()
        rb = RequiredBehaviour(
            heartbeat_interval=self.config.heartbeat_interval_s,
            measurement_configuration=["CONTINUOUS"],
        )
        body = dump(HandshakeAcknowledgement(required_behaviour=rb))
        self.cp.post(url, ACK_PATHS, body, token, correlation_id=correlation_id)
        self.count("handshake_ack_sent")

    def _send_compliance(self, fc: GroupCapacityForecast, correlation_id: str) -> None:
        url, token = self._peer()
        body = dump(
            GroupCapacityComplianceError(
                message="gridflex could not apply every block as a limit",
                forecasted_blocks=fc.forecasted_blocks,
            )
        )
        self.cp.post(
            url, "group_capacity_compliance_error", body, token, correlation_id=correlation_id
        )
        self.count("compliance_error_sent")

    def _run(self) -> None:
        next_hb = next_sample = next_meas = time.monotonic()
        next_meas += self.config.measurement_interval_s
        while not self._stop.is_set():
            try:
                self._run_jobs()
                if time.monotonic() >= next_hb:
                    next_hb = time.monotonic() + self._heartbeat()
                if time.monotonic() >= next_sample:
                    next_sample = time.monotonic() + 1.0
                    self._sample()
                    self._adjust()
                if time.monotonic() >= next_meas:
                    next_meas = time.monotonic() + self.config.measurement_interval_s
                    self._measurements()
                self.check_link()
                with self._lock:
                    self._link_file.keep(self._s)
            except Exception:  # a bug must not end the provider (nor the fallback)
                log.exception("oscp provider loop")
            self._stop.wait(self._tick_s)

    def _run_jobs(self) -> None:
        for _ in range(len(self._jobs)):
            job = self._jobs.popleft()
            try:
                job.run()
            except (GridflexError, RuntimeError) as exc:
                job.attempts += 1
                self.count(f"{job.name}_failed")
                self._rejected.append(f"{job.name}: {exc}")
                log.warning("oscp %s failed (%d): %s", job.name, job.attempts, exc)
                if job.attempts < _ATTEMPTS:
                    self._jobs.append(job)

    def _heartbeat(self) -> float:
        """Send a heartbeat when the CP asked for them; returns seconds to the next."""
        with self._lock:
            interval = self._s.cp_interval_s
        if interval is None:
            return 1.0
        try:
            url, token = self._peer()
            offline_at = self._clock() + timedelta(seconds=3 * interval)
            self.cp.post(url, "heartbeat", dump(Heartbeat(offline_mode_at=offline_at)), token)
            self.count("heartbeat_sent")
        except GridflexError as exc:
            self.count("heartbeat_failed")
            log.warning("oscp heartbeat: %s", exc)
        return float(interval)

    def _targets(self) -> list[tuple[str, str]]:
        return [
            (gid, g.id if g.type != "fleet" else "fleet") for gid, g in self.config.groups.items()
        ]

    def _sample(self) -> None:
        if self._readings is None:
            return
        now = self._clock()
        for gid, tid in self._targets():
            e = self._energy.setdefault(gid, Energy(since=now))
            if e.last_kw is not None and e.last_at is not None:
                e.kwh += e.last_kw * (now - e.last_at).total_seconds() / 3600.0
            e.last_kw, e.last_at = self._readings.measured_kw(tid), now

    def _measurements(self) -> None:
        try:
            url, token = self._peer()
        except CpRefused:
            return
        now = self._clock()
        for gid, group in self.config.groups.items():
            e = self._energy.get(gid)
            if not group.measurements or e is None:
                continue
            try:
                self.cp.post(
                    url,
                    "update_group_measurements",
                    dump(measurement(gid, e.kwh, e.since, now)),
                    token,
                )
                self.count("measurements_sent")
            except GridflexError as exc:
                self.count("measurements_failed")
                log.warning("oscp measurements for %s: %s", gid, exc)

    def _adjust(self) -> None:
        if self._readings is None or not self.config.adjust:
            return
        now = self._clock()
        with self._lock:
            asks = adjust_asks(
                self._s.forecasts, self.config, self._readings.required_kw, now, self._s.asked
            )
        for key, body in asks:
            try:
                url, token = self._peer()
                self.cp.post(url, "adjust_group_capacity_forecast", dump(body), token)
            except GridflexError as exc:
                self.count("adjust_failed")
                log.warning("oscp adjust %s: %s", key, exc)
                continue
            with self._lock:
                self._s.asked.add(key)
            self.count("adjust_sent")
