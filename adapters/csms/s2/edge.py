"""S2 resource managers as an edge target (``"s2"`` in :data:`adapters.csms.edge.targets.TARGETS`).

:class:`S2Target` runs an :class:`~adapters.csms.s2.cem.S2Cem` inside ``gridflex edge`` and
answers the runner's :class:`~adapters.csms.edge.targets.EdgeTarget` calls:

* a resource manager is placed like a station: its S2 ``resource_id`` (or its name) is a
  station id listed on a site of the edge settings; its EVSE id is ``<station id>/1``;
  with :attr:`S2EdgeSettings.bearer_token` set, every RM must present it;
* ``sessions`` — every RM whose constraints started a session, with the upper bound of its
  power constraints as its maximum (and an ``evse_heartbeat`` upstream for each, at most
  every :attr:`S2EdgeSettings.heartbeat_s`: S2 has no heartbeat of its own);
* ``apply`` — per EVSE, a ``PEBC.Instruction``: the target (kW) for
  :attr:`S2EdgeSettings.instruction_s`, then the station's failsafe for the failsafe
  duration (so the RM falls back by itself when the edge goes silent). Sent when the target
  moved beyond :attr:`S2EdgeSettings.deadband_kw`, is tighter than the last one sent, or
  the last instruction's first element is past half its life. Returns the number of
  instructions *sent*: acceptance arrives later (``InstructionStatusUpdate``) and is never
  awaited; refusals and clamps become :class:`~adapters.csms.edge.upstream.EdgeReport`s
  (kinds ``s2_rejected``, ``s2_clamped``, ``s2_refused``);
* ``set_station_limits`` — the station's (max, failsafe) kW: the max caps every target,
  the failsafe is the instruction's second element.

Telemetry (``session_started`` / ``meter_value`` / ``session_ended``) goes to the edge's
buffer through ``ctx.emit("telemetry", feeder id, message)``.

Settings: :class:`S2EdgeSettings` (host, port, TLS / mutual TLS, bearer token, deadband,
instruction length, heartbeat),
from ``ctx.settings.s2`` (the class lives with the edge's settings), else from the
environment (``GRIDFLEX_EDGE__S2__…``, the same names the nested section would read).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from adapters.csms.edge.autonomy import ActiveSession, Mode
from adapters.csms.edge.settings import S2EdgeSettings
from adapters.csms.edge.upstream import EdgeReport
from aggregator.errors import Issue
from aggregator.messages import Telemetry

from .cem import S2Cem, S2Settings
from .convert import EnvelopeSegment
from .session import S2Resource

if TYPE_CHECKING:
    from adapters.csms.edge.targets import EdgeContext

__all__ = ["S2EdgeSettings", "S2Target", "build"]

_REPORT_KIND = {
    "instruction_rejected": "s2_rejected",
    "instruction_aborted": "s2_rejected",
    "instruction_refused": "s2_rejected",
    "clamped_upper": "s2_clamped",
    "clamped_lower": "s2_clamped",
    "cap_unreachable": "s2_clamped",
    "unknown_resource": "s2_refused",
    "no_common_version": "s2_refused",
    "pebc_not_offered": "s2_refused",
}


@dataclass(slots=True)
class _Sent:
    kw: float
    failsafe_kw: float
    refresh_at: datetime


class S2Target:
    """S2 PEBC resource managers behind the edge."""

    name = "s2"

    def __init__(self, ctx: EdgeContext, settings: S2EdgeSettings | None = None) -> None:
        self.ctx = ctx
        cfg = settings or getattr(ctx.settings, "s2", None) or S2EdgeSettings()
        self.cfg = cfg
        resources = tuple(
            S2Resource(sid, f"{sid}/1", site.site_id, site.feeder_id)
            for site in ctx.sites
            for sid in site.station_ids
        )
        self.station_of = {r.evse_id: r.resource_id for r in resources}
        self.cem = S2Cem(
            S2Settings(
                csms_id=ctx.settings.csms_id,
                resources=resources,
                host=cfg.host,
                port=cfg.port,
                bearer_token=cfg.bearer_token,
                failsafe_duration_s=ctx.settings.failsafe_duration_s,
            ),
            self._telemetry,
            ctx.clock,
            ssl_context=cfg.ssl_context(),
            on_issue=self._issue,
        )
        self.port = 0
        self.limits: dict[str, tuple[float, float]] = {}
        self._sent: dict[str, _Sent] = {}

    def _telemetry(self, msg: Telemetry) -> None:
        self.ctx.emit("telemetry", msg.feeder_id, msg)

    def _issue(self, issue: Issue) -> None:
        kind = _REPORT_KIND.get(issue.code)
        if kind is None:
            return
        evse = next((i for i in issue.ids if i in self.station_of), "")
        self.ctx.report(
            EdgeReport(
                ts=self.ctx.clock.now(),
                csms_id=self.ctx.settings.csms_id,
                kind=kind,
                station_id=self.station_of.get(evse, ""),
                evse_id=evse,
                purpose="pebc",
                detail=f"{issue.code}: {issue.message}"[:500],
            )
        )

    async def start(self) -> None:
        self.port = await self.cem.start()

    async def stop(self) -> None:
        await self.cem.close()

    def sessions(self, now: datetime) -> Sequence[ActiveSession]:
        out: list[ActiveSession] = []
        for evse_id in self.cem.connected():
            s = self.cem.session(evse_id)
            if s is None or s.resource is None or s.session_id is None or s.limits is None:
                continue
            beat = s.heartbeat(now, self.cfg.heartbeat_s)
            if beat is not None:
                self._telemetry(beat)
            out.append(
                ActiveSession(
                    evse_id=evse_id,
                    site_id=s.resource.site_id,
                    max_power_kw=s.limits.power_constraints().upper_kw,
                )
            )
        return out

    def evse_ids_by_station(self) -> Mapping[str, Sequence[str]]:
        return {self.station_of[e]: [e] for e in self.cem.connected() if e in self.station_of}

    def _due(self, evse_id: str, kw: float, fs_kw: float, now: datetime) -> bool:
        prev = self._sent.get(evse_id)
        if prev is None or now >= prev.refresh_at:
            return True
        tighter = kw < prev.kw - 1e-9 or fs_kw < prev.failsafe_kw - 1e-9
        return tighter or abs(kw - prev.kw) > self.cfg.deadband_kw or fs_kw != prev.failsafe_kw

    async def apply(self, targets_kw: Mapping[str, float], mode: Mode) -> int:
        now = self.ctx.clock.now()
        first: list[tuple[str, list[EnvelopeSegment], _Sent]] = []
        rest: list[tuple[str, list[EnvelopeSegment], _Sent]] = []
        for evse_id, target in targets_kw.items():
            s = self.cem.session(evse_id)
            if s is None or s.session_id is None:
                self._sent.pop(evse_id, None)
                continue
            max_kw, fs_kw = self.limits.get(
                self.station_of.get(evse_id, ""),
                (float("inf"), self.ctx.settings.default_failsafe_kw),
            )
            kw = min(target, max_kw)
            if mode != "upstream":
                kw = max(kw, 0.0)  # export only on upstream's word
            if not self._due(evse_id, kw, fs_kw, now):
                continue
            segments = [
                EnvelopeSegment(self.cfg.instruction_s, min(kw, 0.0), kw),
                EnvelopeSegment(self.ctx.settings.failsafe_duration_s, 0.0, min(fs_kw, max_kw)),
            ]
            prev = self._sent.get(evse_id)
            item = (
                evse_id,
                segments,
                _Sent(kw, fs_kw, now + timedelta(seconds=self.cfg.instruction_s / 2)),
            )
            (first if prev is not None and kw < prev.kw else rest).append(item)
        sent = 0
        for phase in (first, rest):  # every tightening goes out before any loosening
            ids = await asyncio.gather(*(self.cem.send_segments(e, segs) for e, segs, _ in phase))
            for (evse_id, _, rec), iid in zip(phase, ids, strict=True):
                if iid is not None:
                    sent += 1
                    self._sent[evse_id] = rec
        return sent

    async def set_station_limits(self, limits: Mapping[str, tuple[float, float]]) -> None:
        self.limits.update(limits)


def build(ctx: EdgeContext) -> S2Target:
    """The registered builder (see :data:`adapters.csms.edge.targets.TARGETS`)."""
    return S2Target(ctx)
