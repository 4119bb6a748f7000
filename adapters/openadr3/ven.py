"""The OpenADR 3.1 VEN: OAuth 2.0, programs and events by poll and by push, limits to the
intake, the safe-mode failsafe, and USAGE / BASELINE / regulation reports.

:class:`OpenAdr3Ven` runs on its own thread (``openadr3-ven``). At start it gets a token by
client credentials (:mod:`adapters.openadr3.auth`; the token URL from the configuration or
the VTN's ``GET /auth/server``), finds or creates its VEN object (``venName``), and — when
configured — subscribes to EVENT and PROGRAM changes by websocket or webhook
(:mod:`adapters.openadr3.push`). Then, every ``poll_interval_s`` or at once when a push
arrives, it reads the programs it follows and their events.

Rules the VEN keeps:

* Every limit goes to ``publish`` — in ``gridflex serve`` the one DSO intake
  (:meth:`adapters.dso.intake.LimitIntake.relay`), which validates, keys, publishes and
  audits it once; ``publish`` returns a rejection reason or ``None``.
* An event is applied when it is new or its ``modificationDateTime`` changed: its limits
  (:func:`~adapters.openadr3.mapping.event_to_limits`) are published and the ids its
  previous version had and this one has not are cancelled. While ``publish`` refuses any
  of its limits (the bus is down, the intake says no), the event is applied again at
  every poll. An event that is gone from the
  VTN (deleted, or no longer visible to this VEN) has all its limits cancelled — only after
  a *complete* successful read, never because a read failed.
* The **safe-mode event** is not applied as a limit while the VTN is reachable: its caps
  are kept. When no exchange with the VTN has succeeded for ``safe_mode_after_s`` (network
  down, VTN down, token refused), the caps are published as limits
  (:func:`~adapters.openadr3.mapping.safe_mode_limits`, renewed while offline); the first
  successful exchange afterwards cancels them. Limits already published stay in force
  either way (the intake holds them until their windows end).
* Refused credentials (:class:`~adapters.openadr3.auth.AuthRefused`) publish nothing, are
  reported in :meth:`OpenAdr3Ven.status` and retried with a backoff (doubling up to 5 min).
* Reports: every ``report_interval_s`` one REPORT per event in force (created once, then
  updated with PUT) with, per reported target, ``readings(target)`` (USAGE, BASELINE and
  up/down regulation available, kW).

Threading: ``publish`` and ``readings`` are called on the VEN's threads (poll, websocket or
webhook, serialised by one lock), so they must be thread-safe.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import httpx
from pydantic import ValidationError

from adapters.openadr3.auth import AuthRefused, TokenSource, VtnClient, VtnError
from adapters.openadr3.config import OpenAdr3Config, OpenAdr3Target
from adapters.openadr3.mapping import (
    Readings,
    event_to_limits,
    event_windows,
    is_safe_mode,
    report_body,
    safe_mode_caps,
)
from adapters.openadr3.push import NOTIFY_PATH, WebhookServer, WebsocketListener
from adapters.openadr3.safemode import SafeMode
from adapters.openadr3.wire import Event, Notification, Program, Ven
from aggregator.errors import GridflexError, Issue, TransientIO
from aggregator.messages import DsoLimitCancel, DsoLimitMessage

__all__ = ["OpenAdr3Ven", "Publish", "Ven3Status"]

log = logging.getLogger("gridflex.openadr3")

Publish = Callable[[DsoLimitMessage | DsoLimitCancel], str | None]
ReadingsOf = Callable[[OpenAdr3Target], Readings]
_PAGE: Final = 50
_MAX_BACKOFF_S: Final = 300.0


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Ven3Status:
    """What the VEN knows about itself (a snapshot)."""

    running: bool
    connected: bool  # the last exchange with the VTN succeeded
    ven_id: str | None
    last_contact: datetime | None
    last_error: str | None
    auth_refused: bool
    events: int  # events applied and in force
    safe_mode_caps: int  # targets with a failsafe cap known
    safe_mode_active: bool
    polls: int
    push_ready: bool  # the websocket is connected / the webhook serves (False: none)
    notifications: int
    reports: int
    rejected: tuple[str, ...]  # the last rejections by publish (newest last)


@dataclass
class _Applied:
    version: datetime | None
    limit_ids: frozenset[str]
    event: Event


class OpenAdr3Ven:
    """An OpenADR 3.1 VEN feeding DSO limits to ``publish`` (see the module docstring)."""

    def __init__(
        self,
        config: OpenAdr3Config,
        publish: Publish,
        readings: ReadingsOf | None = None,
        *,
        clock: Callable[[], datetime] = _utc_now,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.config = config
        self._publish = publish
        self._readings = readings
        self._clock = clock
        self._http = httpx.Client(timeout=config.timeout_s, transport=transport)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: VtnClient | None = None
        self._ven_id: str | None = None
        self._applied: dict[str, _Applied] = {}
        self._program_ids: frozenset[str] = frozenset()  # followed, as of the last poll
        self._safe = SafeMode(config)
        self._last_contact: datetime | None = None
        self._connected = False
        self._last_error: str | None = None
        self._auth_refused = False
        self._polls = 0
        self._notifications = 0
        self._reports = 0
        self._report_ids: dict[str, str] = {}
        self._rejected: deque[str] = deque(maxlen=20)
        self.issues: deque[Issue] = deque(maxlen=200)  # the newest problems seen
        self._push: WebhookServer | WebsocketListener | None = None
        self.webhook_token = secrets.token_urlsafe(24)

    # ------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the VEN is already started")
        self._thread = threading.Thread(target=self._run, name="openadr3-ven", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(15)
        if self._push is not None:
            self._push.stop()
        self._http.close()

    def status(self) -> Ven3Status:
        with self._lock:
            return Ven3Status(
                running=self._thread is not None and self._thread.is_alive(),
                connected=self._connected,
                ven_id=self._ven_id,
                last_contact=self._last_contact,
                last_error=self._last_error,
                auth_refused=self._auth_refused,
                events=len(self._applied),
                safe_mode_caps=len(self._safe.caps),
                safe_mode_active=self._safe.active,
                polls=self._polls,
                push_ready=self._push_ready(),
                notifications=self._notifications,
                reports=self._reports,
                rejected=tuple(self._rejected),
            )

    def wait_connected(self, timeout_s: float) -> bool:
        """Wait until the VEN has read its programs and events once."""
        end = time.monotonic() + timeout_s
        while True:
            st = self.status()
            if st.polls > 0 and st.connected:
                return True
            if time.monotonic() >= end:
                return False
            self._stop.wait(0.05)

    def _push_ready(self) -> bool:
        push = self._push
        if isinstance(push, WebsocketListener):
            return push.connected.is_set()
        return push is not None

    @property
    def webhook_port(self) -> int | None:
        return self._push.port if isinstance(self._push, WebhookServer) else None

    # ----------------------------------------------------------------------- main loop

    def _run(self) -> None:
        cfg = self.config
        backoff = cfg.poll_interval_s
        next_poll = next_report = time.monotonic()
        started = self._clock()
        while not self._stop.is_set():
            if self._wake.is_set() or time.monotonic() >= next_poll:
                self._wake.clear()
                refused = self._exchange()
                if self._connected:
                    backoff = cfg.poll_interval_s
                elif refused:  # credentials: back off, doubling
                    backoff = min(backoff * 2, _MAX_BACKOFF_S)
                next_poll = time.monotonic() + backoff
            if self._connected and time.monotonic() >= next_report:
                next_report = time.monotonic() + cfg.report_interval_s
                try:
                    self.send_reports()
                except (GridflexError, httpx.HTTPError, KeyError) as exc:  # never stops limits
                    log.warning("openadr3 report: %s: %s", type(exc).__name__, exc)
            self._check_safe_mode(started)
            due = min(next_poll, next_report if self._connected else next_poll)
            # at least once a second: the safe-mode check must not wait for a long backoff
            self._wake.wait(max(0.0, min(due - time.monotonic(), 1.0)))

    def _exchange(self) -> bool:
        """Connect if needed and poll; ``True`` when the credentials were refused."""
        try:
            if self._client is None:
                self._connect()
            self.poll()
        except AuthRefused as exc:
            self._failed(exc, auth=True)
            return True
        except (TransientIO, VtnError) as exc:
            self._failed(exc)
        except Exception as exc:  # a bug must not end the VEN (nor safe mode): log, go on
            log.exception("openadr3 VEN loop")
            self._failed(TransientIO(f"{type(exc).__name__}: {exc}"))
        return False

    def _failed(self, exc: GridflexError, *, auth: bool = False) -> None:
        with self._lock:
            self._connected = False
            self._auth_refused = auth
            self._last_error = f"{type(exc).__name__}: {exc}"
        log.warning("openadr3: %s", self._last_error)

    def _contact(self) -> None:
        with self._lock:
            self._connected = True
            self._auth_refused = False
            self._last_error = None
            self._last_contact = self._clock()
            if self._safe.active:
                for cancel in self._safe.leave(self._clock()):
                    self._send(cancel)
                log.info("openadr3: VTN reachable again: safe mode off")

    def _connect(self) -> None:
        cfg = self.config
        token_url = cfg.token_url
        if token_url is None:
            try:
                r = self._http.get(f"{cfg.vtn_url.rstrip('/')}/auth/server")
                r.raise_for_status()
                token_url = str(r.json()["tokenURL"])
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                raise TransientIO(f"GET /auth/server: {type(exc).__name__}: {exc}") from exc
        tokens = TokenSource(
            self._http, token_url, cfg.client_id, cfg.client_secret.get_secret_value()
        )
        client = VtnClient(self._http, cfg.vtn_url, tokens)
        self._ven_id = self._find_or_create_ven(client)
        self._client = client
        self._subscribe(client)

    def _find_or_create_ven(self, client: VtnClient) -> str:
        name = self.config.ven_name
        found = client.get("/vens", venName=name) or []
        for raw in found:
            ven = Ven.model_validate(raw)
            if ven.ven_name == name:
                return ven.id
        created = client.post("/vens", {"objectType": "VEN_VEN_REQUEST", "venName": name})
        return Ven.model_validate(created).id

    def _subscribe(self, client: VtnClient) -> None:
        cfg = self.config
        if cfg.subscription == "none" or self._push is not None:
            return
        operation: dict[str, Any] = {
            "objects": ["EVENT", "PROGRAM"],
            "operations": ["CREATE", "UPDATE", "DELETE"],
        }
        if cfg.subscription == "webhook":
            server = WebhookServer(
                cfg.callback_host, cfg.callback_port, self.webhook_token, self.on_notification
            )
            server.start()
            self._push = server
            operation |= {
                "mechanism": "WEBHOOK",
                "callbackUrl": cfg.callback_url
                or f"http://{cfg.callback_host}:{server.port}{NOTIFY_PATH}",
                "bearerToken": self.webhook_token,
            }
        else:
            ws_url = "ws" + cfg.vtn_url.rstrip("/")[4:] + "/notifiers/ws"
            self._push = WebsocketListener(ws_url, client.tokens.token, self.on_notification)
            self._push.start()
            operation |= {"mechanism": "WEBSOCKET"}
        client.post(
            "/subscriptions",
            {"clientName": cfg.ven_name, "objectOperations": [operation]},
        )

    # ------------------------------------------------------------------- programs, events

    def poll(self) -> None:
        """Read the followed programs and all their events; apply what changed."""
        client = self._client
        if client is None:
            raise TransientIO("not connected")
        programs = [Program.model_validate(p) for p in self._all(client, "/programs")]
        wanted = set(self.config.program_names)
        followed = [p for p in programs if not wanted or p.program_name in wanted]
        self._program_ids = frozenset(p.id for p in followed)
        events: list[Event] = []
        for p in followed:
            for raw in self._all(client, "/events", programID=p.id):
                try:
                    events.append(Event.model_validate(raw))
                except ValidationError as exc:
                    self._issue("event", "bad_event", f"{exc.error_count()} problems", raw)
        with self._lock:
            self._contact()
            seen = {e.id for e in events}
            for event in events:
                self._apply(event)
            for gone in [i for i in self._applied if i not in seen]:
                self._withdraw(gone)
            if not any(is_safe_mode(e, self.config) for e in events):
                self._safe.set_caps({})
            self._polls += 1

    def _all(self, client: VtnClient, path: str, **params: Any) -> list[Any]:
        out: list[Any] = []
        while True:
            page = client.get(path, skip=len(out), limit=_PAGE, **params) or []
            out.extend(page)
            if len(page) < _PAGE:
                return out

    def on_notification(self, note: Notification) -> None:
        """A push: apply an event at once (or withdraw a deleted one), then poll."""
        with self._lock:
            self._notifications += 1
            if note.object_type == "EVENT":
                try:
                    event = Event.model_validate(note.object)
                except ValidationError as exc:
                    self._issue(
                        "notification", "bad_event", f"{exc.error_count()} problems", note.object
                    )
                else:
                    if note.operation == "DELETE":
                        self._withdraw(event.id)
                    elif self._follows(event.program_id):
                        self._apply(event)
        self._wake.set()

    def _follows(self, program_id: str) -> bool:
        """Whether events of this program are ours (unknown programs: the poll decides)."""
        return not self.config.program_names or program_id in self._program_ids

    def _apply(self, event: Event) -> None:
        if is_safe_mode(event, self.config):
            caps, issues = safe_mode_caps(event, self.config)
            self._safe.set_caps(caps)
            self.issues.extend(issues)
            return
        known = self._applied.get(event.id)
        if known is not None and known.version == event.version and event.version is not None:
            return
        limits, issues = event_to_limits(event, self.config, self._clock())
        self.issues.extend(issues)
        published = {m.event_id for m in limits if self._send(m)}
        old = known.limit_ids if known is not None else frozenset()
        for gone in sorted(old - published):
            self._send(DsoLimitCancel(ts=self._clock(), event_id=gone, source=self.config.source))
        # a limit not taken (publish failed or refused) is tried again at the next poll:
        # the version is only remembered once every limit of it is in
        version = event.version if len(published) == len(limits) else None
        self._applied[event.id] = _Applied(version, frozenset(published), event)
        log.info("openadr3 event %s: %d limits, %d issues", event.id, len(published), len(issues))

    def _withdraw(self, event_id: str) -> None:
        known = self._applied.pop(event_id, None)
        if known is None:
            return
        for lid in sorted(known.limit_ids):
            self._send(DsoLimitCancel(ts=self._clock(), event_id=lid, source=self.config.source))
        self._report_ids.pop(event_id, None)

    def _send(self, msg: DsoLimitMessage | DsoLimitCancel) -> bool:
        try:
            why = self._publish(msg)
        except Exception as exc:  # publish must not stop the VEN
            why = f"{type(exc).__name__}: {exc}"
        if why is not None:
            self._rejected.append(f"{msg.event_id}: {why}")
            log.warning("openadr3 %s %s rejected: %s", msg.type, msg.event_id, why)
        return why is None

    def _issue(self, field: str, code: str, message: str, raw: Any) -> None:
        rid = str(raw.get("id", "?")) if isinstance(raw, dict) else "?"
        self.issues.append(Issue(field=field, code=code, message=message, ids=(rid,)))

    # ------------------------------------------------------------------------ safe mode

    def _check_safe_mode(self, started: datetime) -> None:
        now = self._clock()
        with self._lock:
            offline_s = (now - (self._last_contact or started)).total_seconds()
            limits = self._safe.due(now, offline_s)
            if limits:
                ok = all([self._send(m) for m in limits])
                log.warning(
                    "openadr3: VTN unreachable for %.0f s: safe mode on (%d caps, published=%s)",
                    offline_s,
                    len(limits),
                    ok,
                )

    # -------------------------------------------------------------------------- reports

    def send_reports(self) -> int:
        """One REPORT per event in force now (created, then updated); returns how many."""
        client, readings = self._client, self._readings
        if client is None or readings is None:
            return 0
        now = self._clock()
        with self._lock:
            events = [a.event for a in self._applied.values()]
        sent = 0
        for event in events:
            windows, _ = event_windows(event, now)
            if not any(w.start <= now < w.end for w in windows):
                continue
            names = event.targets or ("",)
            values: dict[str, Readings] = {}
            for name in names:
                target = self.config.targets.get(name) if name else self.config.ven_target
                if target is not None and target.report:
                    values[name or self.config.ven_name] = readings(target)
            if not values:
                continue
            body = report_body(
                event, self.config.ven_name, values, now, self.config.report_interval_s
            )
            rid = self._report_ids.get(event.id)
            if rid is not None:
                try:
                    client.put(f"/reports/{rid}", body)
                except VtnError as exc:
                    if exc.status != 404:
                        raise
                    rid = None  # the VTN dropped it: create it again
            if rid is None:
                created = client.post("/reports", body)
                self._report_ids[event.id] = str(created["id"])
            sent += 1
        with self._lock:
            self._reports += sent
        return sent
