"""The OCPP stations as an edge target: wraps :class:`~adapters.csms.ocpp.endpoint.OcppEndpoint`.

Maps the edge settings to station places and security, answers the runner's
:class:`~adapters.csms.edge.targets.EdgeTarget` calls, and turns endpoint outcomes into
:class:`~adapters.csms.edge.upstream.EdgeReport` records. Station limits (the max profile
and the TxDefaultProfile) are re-sent only when they moved by more than the deadband.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from adapters.csms.edge.autonomy import ActiveSession, Mode
from adapters.csms.edge.targets import EdgeContext
from adapters.csms.edge.upstream import EdgeReport
from adapters.csms.ocpp.endpoint import OcppEndpoint, Outcome, Security
from adapters.csms.ocpp.station import StationPlace, evse_key
from markets.activation import NOMINAL_HZ
from markets.products import FCR

__all__ = ["OcppTarget", "build"]


class OcppTarget:
    """OCPP 2.0.1/2.1 stations behind the edge."""

    name = "ocpp"

    def __init__(self, ctx: EdgeContext) -> None:
        s = ctx.settings
        o = s.ocpp
        self.ctx = ctx
        max_kw = {st.id: st.max_power_kw for st in s.stations}
        places = {
            sid: StationPlace(
                station_id=sid,
                site_id=site.site_id,
                feeder_id=site.feeder_id,
                csms_id=s.csms_id,
                max_power_kw=max_kw.get(sid, 11.0),
            )
            for site in ctx.sites
            for sid in site.station_ids
        }
        passwords = {st.id: st.password.get_secret_value() for st in s.stations if st.password}
        self.endpoint = OcppEndpoint(
            places,
            ctx.emit,
            self._outcome,
            ctx.clock.now,
            security=Security(
                profile=o.security_profile,
                passwords=passwords,
                certfile=o.certfile,
                keyfile=o.keyfile,
                cafile=o.cafile,
            ),
            heartbeat_interval_s=o.heartbeat_interval_s,
            voltage_v=o.voltage_v,
            tx_profile_s=o.tx_profile_s,
            deadband_kw=o.deadband_kw,
            min_interval_s=o.min_interval_s,
            call_timeout_s=o.call_timeout_s,
            needs_wait_s=o.needs_wait_s,
            phase_timeout_s=o.phase_timeout_s,
            fcr_reserve_kw=o.fcr_reserve_kw,
            fcr_hz=(NOMINAL_HZ, FCR.deadband_hz, FCR.full_activation_hz),
        )
        self.port = 0
        self._sent_limits: dict[str, tuple[float, float]] = {}
        for site in ctx.sites:  # what a station gets at boot before the first batch
            for sid in site.station_ids:
                share = site.cap_kw / max(len(site.station_ids), 1)
                self.endpoint.station_limits[sid] = (share, s.default_failsafe_kw)
                self._sent_limits[sid] = (share, s.default_failsafe_kw)

    def _outcome(self, o: Outcome) -> None:
        self.ctx.report(
            EdgeReport(
                ts=o.at,
                csms_id=self.ctx.settings.csms_id,
                kind=o.kind,
                station_id=o.station_id,
                evse_id=evse_key(o.station_id, o.evse_id),
                purpose=o.purpose,
                requested_kw=o.requested_kw,
                applied_kw=o.applied_kw,
                detail=o.detail,
            )
        )

    async def start(self) -> None:
        o = self.ctx.settings.ocpp
        self.port = await self.endpoint.start(o.host, o.port)

    async def stop(self) -> None:
        await self.endpoint.stop()

    def sessions(self, now: datetime) -> Sequence[ActiveSession]:
        out: list[ActiveSession] = []
        for sid, link in list(self.endpoint.links.items()):
            link.release_due(now)
            if sid not in self.endpoint.cps:
                continue
            for s in link.sessions.values():
                cap = s.max_power_kw if s.max_power_kw else link.place.max_power_kw
                out.append(
                    ActiveSession(
                        evse_id=evse_key(sid, s.evse_id),
                        site_id=link.place.site_id,
                        max_power_kw=min(cap, link.place.max_power_kw),
                    )
                )
        return out

    def evse_ids_by_station(self) -> Mapping[str, Sequence[str]]:
        return {
            sid: [evse_key(sid, e) for e in sorted(link.evses)]
            for sid, link in self.endpoint.links.items()
        }

    async def apply(self, targets_kw: Mapping[str, float], mode: Mode) -> int:
        return await self.endpoint.apply(targets_kw, export_allowed=mode == "upstream")

    async def set_station_limits(self, limits: Mapping[str, tuple[float, float]]) -> None:
        db = self.ctx.settings.ocpp.deadband_kw
        for sid, (max_kw, fs_kw) in limits.items():
            prev = self._sent_limits.get(sid)
            self._sent_limits[sid] = (max_kw, fs_kw)
            if sid not in self.endpoint.ready:
                self.endpoint.station_limits[sid] = (max_kw, fs_kw)  # sent at its (next) boot
                continue
            moved = prev is None or abs(prev[0] - max_kw) > db or abs(prev[1] - fs_kw) > db
            tighter = prev is not None and (max_kw < prev[0] or fs_kw < prev[1])
            if moved or tighter:
                await self.endpoint.set_station_limits(sid, max_kw, fs_kw)
            else:
                self._sent_limits[sid] = prev  # type: ignore[assignment]


def build(ctx: EdgeContext) -> OcppTarget:
    """The registered builder (see :data:`adapters.csms.edge.targets.TARGETS`)."""
    return OcppTarget(ctx)
