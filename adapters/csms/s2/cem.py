"""The S2 customer energy manager (CEM) over WebSocket: resource managers connect here.

:class:`S2Cem` is a WebSocket server (``websockets`` asyncio API) speaking S2 with
s2-python's message models. Each connection gets an :class:`~adapters.csms.s2.session.RmSession`
(the protocol state machine); this module only moves bytes, publishes the telemetry the
sessions yield, and turns setpoint batches (it is a
:class:`~aggregator.interfaces.SetpointSink`) and plan envelopes into ``PEBC.Instruction``s.

Invariants:

* nothing here ever awaits a ``ReceptionStatus``: sends are fire-and-forget, the RM's
  statuses are recorded by the session when they arrive (awaiting one inside a handler
  deadlocks the receive loop);
* every RM message with a ``message_id`` gets one reception status, also when it cannot be
  parsed (``INVALID_DATA`` / ``INVALID_MESSAGE``);
* a batch whose ``seq`` is not above the last one applied is dropped (as any CSMS does);
  a batch becomes, per connected EVSE, an instruction of two elements: the setpoint until
  ``valid_until`` (upper = setpoint, lower = ``min(setpoint, 0)``), then the batch's
  failsafe cap for :attr:`S2Settings.failsafe_duration_s` — so the RM itself falls back when
  the CEM goes silent (the lease);
* one live connection per EVSE: a reconnect replaces the older link;
* units: S2 W and ms ↔ kW and s only in :mod:`adapters.csms.s2.convert`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import ssl
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from typing import Any

import websockets
from s2python.common import ReceptionStatus, ReceptionStatusValues
from s2python.s2_parser import S2Parser
from s2python.s2_validation_error import S2ValidationError
from s2python.validate_values_mixin import S2MessageComponent
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from aggregator.errors import Issue
from aggregator.interfaces import Clock
from aggregator.messages import SetpointBatch, Telemetry
from aggregator.pebc import PowerEnvelope
from aggregator.sim.lpc import DEFAULT_FAILSAFE_DURATION_S

from .convert import EnvelopeSegment
from .session import InstructionRecord, Reaction, RmSession, S2Resource

__all__ = ["S2Cem", "S2Settings", "batch_segments", "plan_segments"]

log = logging.getLogger(__name__)
_NO_ID = uuid.UUID(int=0)
MAX_ELEMENTS = 288
"""S2's bound on the elements of one power envelope."""


@dataclass(frozen=True, slots=True)
class S2Settings:
    """Where the CEM listens and which resource managers it knows (by S2 resource id)."""

    csms_id: str
    resources: tuple[S2Resource, ...]
    host: str = "127.0.0.1"
    port: int = 0
    bearer_token: str | None = None
    failsafe_duration_s: float = DEFAULT_FAILSAFE_DURATION_S
    max_issues: int = 1000


def batch_segments(
    batch: SetpointBatch, i: int, now_s: float, failsafe_duration_s: float
) -> list[EnvelopeSegment]:
    """EVSE ``i`` of ``batch`` as envelope segments from ``now_s`` (POSIX s): lease, failsafe."""
    lease_s = batch.valid_until.timestamp() - now_s
    sp, fs = batch.power_kw[i], batch.failsafe_kw[i]
    out = [EnvelopeSegment(lease_s, min(sp, 0.0), sp)] if lease_s > 0.0005 else []
    out.append(EnvelopeSegment(failsafe_duration_s, 0.0, fs))
    return out


def plan_segments(envelope: PowerEnvelope) -> list[EnvelopeSegment]:
    """A plan's envelope, one segment per step (at most :data:`MAX_ELEMENTS`)."""
    n = min(envelope.steps, MAX_ELEMENTS)
    return [
        EnvelopeSegment(envelope.step_s, float(envelope.lower_kw[t]), float(envelope.upper_kw[t]))
        for t in range(n)
    ]


@dataclass(slots=True)
class _Link:
    session: RmSession
    ws: ServerConnection
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class S2Cem:
    """A CEM serving S2 resource managers; a setpoint sink for its CSMS id."""

    def __init__(
        self,
        settings: S2Settings,
        telemetry: Callable[[Telemetry], None],
        clock: Clock,
        *,
        ssl_context: ssl.SSLContext | None = None,
        on_issue: Callable[[Issue], None] | None = None,
    ) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self.clock = clock
        self.ssl_context = ssl_context
        self.on_issue = on_issue
        self.issues: deque[Issue] = deque(maxlen=settings.max_issues)
        self._resources = {r.resource_id: r for r in settings.resources}
        self._links: dict[str, _Link] = {}
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_seq = -1
        self._tasks: set[asyncio.Task[object]] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> int:
        """Listen; returns the bound port (``port=0`` picks a free one)."""
        self._loop = asyncio.get_running_loop()
        self._server = await serve(
            self._serve,
            self.settings.host,
            self.settings.port,
            ssl=self.ssl_context,
            process_request=self._authorise,
            compression=None,  # small frames: permessage-deflate costs CPU and saves little
        )
        return self.port

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the CEM is not started")
        return int(next(iter(self._server.sockets)).getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()

    async def run(self) -> None:
        """Serve until cancelled (the CEM's own entry point, without the edge runner)."""
        await self.start()
        try:
            await asyncio.Future()
        finally:
            await self.close()

    def _authorise(self, conn: ServerConnection, request: Request) -> Response | None:
        token = self.settings.bearer_token
        got = request.headers.get("Authorization", "")
        if token is None or hmac.compare_digest(got.encode(), f"Bearer {token}".encode()):
            return None
        return conn.respond(HTTPStatus.UNAUTHORIZED, "bearer token required\n")

    # ------------------------------------------------------------------ state

    def connected(self) -> list[str]:
        """EVSE ids of the resource managers connected now."""
        return sorted(self._links)

    def session(self, evse_id: str) -> RmSession | None:
        link = self._links.get(evse_id)
        return link.session if link else None

    def instructions(self, evse_id: str) -> list[InstructionRecord]:
        """What became of each instruction sent to ``evse_id`` (oldest first)."""
        s = self.session(evse_id)
        return list(s.instructions.values()) if s else []

    # ------------------------------------------------------------------ receiving

    async def _serve(self, ws: ServerConnection) -> None:
        session = RmSession(self._resources, self.settings.csms_id, self.clock)
        link = _Link(session, ws)
        try:
            await self._send(link, [session.hello()])
            async for raw in ws:
                reaction = self._react(session, raw)
                res = session.resource
                if res is not None and (old := self._links.get(res.evse_id)) is not link:
                    self._links[res.evse_id] = link  # a reconnect replaces the older link
                    if old is not None:
                        self._spawn(old.ws.close(1000, "replaced by a newer connection"))
                await self._send(link, reaction.out)
                self._emit(reaction.telemetry, reaction.issues)
                if reaction.close:
                    break
        except websockets.ConnectionClosed:
            pass
        finally:
            self._emit(session.close(), [])
            res = session.resource
            if res is not None and self._links.get(res.evse_id) is link:
                del self._links[res.evse_id]
            await ws.close()

    def _react(self, session: RmSession, raw: str | bytes) -> Reaction:
        try:
            msg = S2Parser.parse_as_any_message(raw)
        except S2ValidationError as exc:
            try:
                mid = uuid.UUID(str(json.loads(raw).get("message_id")))
            except (ValueError, AttributeError):
                mid = _NO_ID
            return self._refuse(mid, ReceptionStatusValues.INVALID_MESSAGE, str(exc)[:200])
        except (ValueError, AttributeError, TypeError):  # not JSON, not UTF-8, not an object
            return self._refuse(_NO_ID, ReceptionStatusValues.INVALID_DATA, "not a JSON object")
        return session.on_message(msg)

    @staticmethod
    def _refuse(mid: uuid.UUID, status: ReceptionStatusValues, label: str) -> Reaction:
        r = Reaction()
        r.out.append(ReceptionStatus(subject_message_id=mid, status=status, diagnostic_label=label))
        r.issues.append(
            Issue(field="message", code=status.value.lower(), ids=(str(mid),), message=label)
        )
        return r

    async def _send(self, link: _Link, messages: Sequence[S2MessageComponent]) -> None:
        if not messages:
            return
        async with link.lock:  # one sender at a time keeps the order of each reply
            for m in messages:
                await link.ws.send(m.to_json())

    def _emit(self, telemetry: list[Telemetry], issues: list[Issue]) -> None:
        for t in telemetry:
            self.telemetry(t)
        for i in issues:
            self.issues.append(i)
            log.info("s2: %s", i)
            if self.on_issue is not None:
                self.on_issue(i)

    # ------------------------------------------------------------------ sending

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def publish(self, batch: SetpointBatch) -> bool:
        """SetpointSink: schedule the batch's instructions; ``False`` if not for this CEM."""
        if batch.csms_id != self.settings.csms_id or self._loop is None:
            return False
        coro = self.send_batch(batch)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._spawn(coro)
        else:
            asyncio.run_coroutine_threadsafe(coro, self._loop)
        return True

    async def send_batch(self, batch: SetpointBatch) -> list[str]:
        """Send one instruction per connected EVSE of ``batch``; returns the instruction ids."""
        if batch.csms_id != self.settings.csms_id or batch.seq <= self._last_seq:
            return []
        self._last_seq = batch.seq
        now = self.clock.now()
        now_s = now.timestamp()
        sends = []
        for i, evse_id in enumerate(batch.evse_ids):
            link = self._links.get(evse_id)
            if link is None:
                continue
            segs = batch_segments(batch, i, now_s, self.settings.failsafe_duration_s)
            sends.append(self._instruct(link, segs, None))
        done = await asyncio.gather(*sends, return_exceptions=True)
        return [d for d in done if isinstance(d, str)]

    async def send_plan(self, evse_id: str, envelope: PowerEnvelope) -> str | None:
        """Send a plan's envelope (one element per step from its start); the instruction id."""
        return await self.send_segments(evse_id, plan_segments(envelope), envelope.start)

    async def send_segments(
        self, evse_id: str, segments: list[EnvelopeSegment], start: datetime | None = None
    ) -> str | None:
        """Send ``segments`` from ``start`` (default now); the instruction id, if sent."""
        link = self._links.get(evse_id)
        if link is None:
            return None
        return await self._instruct(link, segments, start)

    async def _instruct(
        self, link: _Link, segments: list[EnvelopeSegment], start: datetime | None
    ) -> str | None:
        msg, issues = link.session.instruct(segments, start)
        self._emit([], issues)
        if msg is None:
            return None
        with contextlib.suppress(websockets.ConnectionClosed):
            await self._send(link, [msg])
            return str(msg.id)
        return None
