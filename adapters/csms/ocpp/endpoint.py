"""The OCPP 2.0.1/2.1 CSMS endpoint: websockets server, security profiles, profile dispatch.

Stations connect to ``ws(s)://host:port/<any path>/<station id>`` with subprotocol
``ocpp2.1`` or ``ocpp2.0.1`` (2.1 preferred); security profiles 1–3 are checked at the
HTTP upgrade or the TLS handshake (:mod:`adapters.csms.ocpp.security`).

A station that reconnects without rebooting keeps what the edge knew of it (open
transactions, device model, the profiles it holds); a BootNotification starts it afresh.
After boot the endpoint reads the device model (rate unit, phases, 2.1 dynamic profiles),
sends the ChargingStationMaxProfile on EVSE 0 (the station's share of the site cap) and
the persistent TxDefaultProfile at the failsafe limit. :meth:`OcppEndpoint.apply` sends
per-EVSE TxProfiles: every *tightening* of every station first, concurrently, then the
new and loosening ones, so a site never holds a looser sum than both its old and new
limits; a site with a tightening not confirmed (rejected, or its station slower than
``phase_timeout_s``) loosens nothing that cycle. A slow station never holds the cycle
longer than ``phase_timeout_s`` per phase: it goes on in the background and is skipped
until done. Every answer other than Accepted, every rounding and every GetCompositeSchedule
check is recorded as an :class:`Outcome` and given to ``report``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from adapters.csms.ocpp.cp import CsmsChargePoint21, CsmsChargePoint201, charge_point_class
from adapters.csms.ocpp.profiles import (
    Limit,
    SendPolicy,
    freq_watt_curve,
    profile_id,
    station_max_profile,
    to_limit,
    tx_default_profile,
    tx_profile,
)
from adapters.csms.ocpp.security import Security, authenticate, station_id
from adapters.csms.ocpp.station import Emit, StationLink, StationPlace, parse_evse_key

__all__ = ["OcppEndpoint", "Outcome", "Security"]  # Security re-exported from .security

LOG = logging.getLogger("gridflex.edge.ocpp")
SUBPROTOCOLS: tuple[Any, ...] = ("ocpp2.1", "ocpp2.0.1")
DEVICE_MODEL = (
    ("SmartChargingCtrlr", "RateUnit"),
    ("EVSE", "SupplyPhases"),
    ("SmartChargingCtrlr", "SupportsDynamicProfiles"),
    ("V2XChargingCtrlr", "SupportedOperationModes"),  # 2.1: LocalFrequency, CentralSetpoint …
)
CP = CsmsChargePoint201 | CsmsChargePoint21


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """Something the station answered that upstream must know."""

    at: datetime
    station_id: str
    evse_id: int
    kind: Literal["rejected", "rounded", "composite_mismatch", "composite_ok", "call_failed"]
    purpose: str
    requested_kw: float
    applied_kw: float
    detail: str = ""


class OcppEndpoint:
    """Accepts station connections and sends them charging profiles."""

    def __init__(
        self,
        places: Mapping[str, StationPlace],
        emit: Emit,
        report: Callable[[Outcome], None],
        clock: Callable[[], datetime],
        *,
        security: Security,
        heartbeat_interval_s: int = 60,
        voltage_v: float = 230.0,
        tx_profile_s: int = 900,
        deadband_kw: float = 0.2,
        min_interval_s: float = 10.0,
        call_timeout_s: float = 30.0,
        needs_wait_s: float = 10.0,
        phase_timeout_s: float = 5.0,
        fcr_reserve_kw: float = 0.0,
        fcr_hz: tuple[float, float, float] = (50.0, 0.01, 0.2),
    ) -> None:
        self.places = places
        self.phase_timeout_s = phase_timeout_s
        self._busy: dict[str, asyncio.Task[tuple[int, bool]]] = {}
        self.fcr_reserve_kw = fcr_reserve_kw
        self.fcr_hz = fcr_hz
        self.emit = emit
        self.report = report
        self.clock = clock
        self.security = security
        self.heartbeat_interval_s = heartbeat_interval_s
        self.voltage_v = voltage_v
        self.tx_profile_s = tx_profile_s
        self.deadband_kw = deadband_kw
        self.min_interval_s = min_interval_s
        self.call_timeout_s = call_timeout_s
        self.needs_wait_s = needs_wait_s
        self.links: dict[str, StationLink] = {}
        self.cps: dict[str, CP] = {}
        self.policies: dict[str, SendPolicy] = {}
        self.station_limits: dict[str, tuple[float, float]] = {}  # max kW, failsafe kW
        self.defaults_sent: dict[str, set[int]] = {}  # EVSEs holding our TxDefaultProfile
        self.ready: set[str] = set()
        self.outcomes: list[Outcome] = []
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ server

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen; returns the bound port."""
        self._server = await serve(
            self._connection,
            host,
            port,
            subprotocols=SUBPROTOCOLS,
            ssl=self.security.ssl_context(),
            process_request=self._authenticate,
            ping_interval=None,
            max_size=2**20,
            compression=None,  # small JSON frames: deflate costs more CPU than it saves
        )
        sock = next(iter(self._server.sockets))
        return int(sock.getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for t in list(self._tasks):
            t.cancel()

    def _authenticate(self, conn: ServerConnection, request: Request) -> Response | None:
        return authenticate(self.security, self.places, conn, request)

    async def _connection(self, ws: ServerConnection) -> None:
        sid = station_id(ws.request.path if ws.request else "")
        sub = str(ws.subprotocol or "")
        if sub not in SUBPROTOCOLS:
            await ws.close(1002, "subprotocol ocpp2.1 or ocpp2.0.1 required")
            return
        old = self.links.get(sid)
        resumed = old is not None and old.booted and old.ocpp_version == sub
        if old is not None and resumed:
            link = old  # a reconnect without reboot: sessions, device model, sent profiles stay
        else:
            link = StationLink(
                self.places[sid],
                self.emit,
                ocpp_version=sub,
                voltage_v=self.voltage_v,
                needs_wait_s=self.needs_wait_s,
                clock=self.clock,
            )
            self.policies[sid] = SendPolicy(
                self.deadband_kw, self.min_interval_s, self.tx_profile_s / 3
            )
        cp = charge_point_class(sub)(sid, ws, response_timeout=self.call_timeout_s)
        cp.link = link
        cp.heartbeat_interval_s = self.heartbeat_interval_s
        cp.on_booted = lambda: self._spawn(self._setup(sid))
        self.links[sid] = link
        self.cps[sid] = cp
        if resumed:
            self.ready.add(sid)  # a BootNotification (reboot) runs the setup again
        try:
            await cp.start()
        except Exception as exc:
            LOG.info("station %s disconnected: %s", sid, exc)
        finally:
            if self.cps.get(sid) is cp:
                del self.cps[sid]
                self.ready.discard(sid)

    def _spawn(self, coro: Any) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ calls

    async def _call(self, sid: str, payload: Any) -> Any:
        cp = self.cps.get(sid)
        if cp is None:
            return None
        try:
            return await cp.call(payload, suppress=False)
        except Exception as exc:
            self._outcome(sid, 0, "call_failed", type(payload).__name__, 0, 0, repr(exc)[:200])
            return None

    def _outcome(
        self, sid: str, evse: int, kind: Any, purpose: str, req: float, app: float, detail: str = ""
    ) -> None:
        o = Outcome(
            at=self.clock(),
            station_id=sid,
            evse_id=evse,
            kind=kind,
            purpose=purpose,
            requested_kw=req,
            applied_kw=app,
            detail=detail,
        )
        self.outcomes.append(o)
        self.report(o)

    def _calls(self, sid: str) -> Any:
        link = self.links[sid]
        if link.is_21:
            from ocpp.v21 import call
        else:
            from ocpp.v201 import call
        return call

    async def _setup(self, sid: str) -> None:
        """Device model, then the station max and TxDefault profiles (after every boot: a
        rebooted station may have lost its TxProfiles, so every EVSE's next one is new)."""
        link, call = self.links[sid], self._calls(sid)
        self.policies[sid] = SendPolicy(
            self.deadband_kw, self.min_interval_s, self.tx_profile_s / 3
        )
        got = await self._call(
            sid,
            call.GetVariables(
                get_variable_data=[
                    {"component": {"name": c}, "variable": {"name": v}} for c, v in DEVICE_MODEL
                ]
            ),
        )
        values: dict[str, str] = {}
        for r in getattr(got, "get_variable_result", None) or []:
            if r.get("attribute_status") == "Accepted" and "attribute_value" in r:
                values[f"{r['component']['name']}.{r['variable']['name']}"] = r["attribute_value"]
        link.on_device_model(values)
        max_kw, failsafe_kw = self.station_limits.get(sid, (self.places[sid].max_power_kw, 0.0))
        await self.set_station_limits(sid, max_kw, failsafe_kw)
        self.ready.add(sid)

    async def set_station_limits(self, sid: str, max_kw: float, failsafe_kw: float) -> None:
        """ChargingStationMaxProfile (EVSE 0) at ``max_kw``; TxDefaultProfile at ``failsafe_kw``
        on EVSE 0 (per known EVSE when the quirks say so; EVSEs that appear later get theirs
        at the next :meth:`apply`)."""
        self.station_limits[sid] = (max_kw, failsafe_kw)
        link = self.links.get(sid)
        if link is None or sid not in self.cps:
            return
        call, elec = self._calls(sid), link.electrical()
        now = self.clock()
        if link.quirks.max_profile_on_evse0:
            lim = to_limit(max_kw, elec)
            await self._set(sid, 0, station_max_profile(lim, elec.phases, now), lim, "max", call)
        lim = to_limit(failsafe_kw, elec)
        evses = sorted(link.evses) if link.quirks.tx_default_per_evse and link.evses else [0]
        done = self.defaults_sent.setdefault(sid, set())
        done.clear()
        for e in evses:
            if await self._set(
                sid, e, tx_default_profile(e, lim, elec.phases), lim, "default", call
            ):
                done.add(e)

    async def _late_defaults(self, sid: str) -> None:
        """A per-EVSE TxDefaultProfile for EVSEs that appeared after the station limits."""
        link = self.links[sid]
        if not link.quirks.tx_default_per_evse or sid not in self.station_limits:
            return
        missing = sorted(link.evses - self.defaults_sent.get(sid, set()))
        if not missing:
            return
        call, elec = self._calls(sid), link.electrical()
        lim = to_limit(self.station_limits[sid][1], elec)
        for e in missing:
            if await self._set(
                sid, e, tx_default_profile(e, lim, elec.phases), lim, "default", call
            ):
                self.defaults_sent.setdefault(sid, set()).add(e)

    async def _set(
        self, sid: str, evse: int, profile: dict[str, Any], lim: Limit, purpose: str, call: Any
    ) -> bool:
        res = await self._call(sid, call.SetChargingProfile(evse_id=evse, charging_profile=profile))
        if res is None:
            return False
        if lim.rounded is not None:
            self._outcome(
                sid, evse, "rounded", purpose, lim.requested_kw, lim.applied_kw, lim.rounded
            )
        status = str(getattr(res, "status", ""))
        if status != "Accepted":
            info = getattr(res, "status_info", None) or {}
            self._outcome(
                sid,
                evse,
                "rejected",
                purpose,
                lim.requested_kw,
                lim.applied_kw,
                f"{status} {info.get('reason_code', '')}".strip(),
            )
            return False
        return True

    # ------------------------------------------------------------------ setpoints

    async def apply(self, targets_kw: Mapping[str, float], *, export_allowed: bool = False) -> int:
        """Send per-EVSE TxProfiles for ``targets_kw`` (gridflex EVSE id → kW); returns the
        number of profiles accepted. Tightenings first (all stations), then the rest."""
        now = self.clock()
        await asyncio.gather(
            *(self._late_defaults(s) for s in list(self.ready) if s not in self._busy)
        )
        plan: dict[str, list[tuple[int, float, str]]] = {}
        for key, kw in targets_kw.items():
            parsed = parse_evse_key(key)
            if parsed is None or parsed[0] not in self.ready or parsed[0] in self._busy:
                continue
            sid, evse = parsed
            link = self.links[sid]
            if evse not in link.sessions:
                self.policies[sid].forget(evse)
                continue
            kind = self.policies[sid].decide(evse, kw, now)
            if kind is not None:
                plan.setdefault(sid, []).append((evse, kw, kind))
        first = {s: [p for p in ps if p[2] == "tighten"] for s, ps in plan.items()}
        rest = {s: [p for p in ps if p[2] != "tighten"] for s, ps in plan.items()}
        busy = set(self._busy)
        ok, unsure = await self._phase(first, now, export_allowed)
        # a site where a tightening is not confirmed (rejected, late, or a station still busy
        # from an earlier cycle) loosens nothing this cycle
        held = {self.places[s].site_id for s in unsure | busy}
        rest = {s: ps for s, ps in rest.items() if self.places[s].site_id not in held}
        ok2, _ = await self._phase(rest, now, export_allowed)
        return ok + ok2

    async def _phase(
        self, phase: Mapping[str, list[tuple[int, float, str]]], now: datetime, export: bool
    ) -> tuple[int, set[str]]:
        """Send one phase to every station at once; a station slower than
        ``phase_timeout_s`` goes on in the background (busy, skipped by later cycles until it
        is done). Returns (profiles accepted, stations not confirmed)."""
        tasks: dict[asyncio.Task[tuple[int, bool]], str] = {}
        for sid, items in phase.items():
            if not items or sid in self._busy:
                continue
            t = asyncio.create_task(self._send_station(sid, items, now, export))
            tasks[t] = sid
            self._busy[sid] = t
            t.add_done_callback(functools.partial(self._done, sid))
        if not tasks:
            return 0, set()
        done, pending = await asyncio.wait(tasks, timeout=self.phase_timeout_s)
        ok, unsure = 0, {tasks[t] for t in pending}
        for t in done:
            n, all_ok = t.result()
            ok += n
            if not all_ok:
                unsure.add(tasks[t])
        return ok, unsure

    def _done(self, sid: str, fut: asyncio.Task[tuple[int, bool]]) -> None:
        if self._busy.get(sid) is fut:
            del self._busy[sid]
        if not fut.cancelled() and fut.exception() is not None:
            LOG.warning("profiles to %s failed: %r", sid, fut.exception())

    async def _send_station(
        self, sid: str, items: list[tuple[int, float, str]], now: datetime, export: bool
    ) -> tuple[int, bool]:
        """Send one station its profiles in order; (accepted, every one accepted)."""
        link, call, pol = self.links[sid], self._calls(sid), self.policies[sid]
        elec = link.electrical()
        ok = tried = 0
        for evse, kw, kind in items:
            s = link.sessions.get(evse)
            if s is None:
                continue
            tried += 1
            v2x = export and link.is_21 and "CentralSetpoint" in link.operation_modes
            # the 6 A rule, or the EV's own minimum when it told a higher one
            ev_min = max(elec.min_current_a, s.min_current_a or 0.0)
            lim = to_limit(kw, dataclasses.replace(elec, min_current_a=ev_min), export_allowed=v2x)
            dynamic = link.dynamic_profiles
            curve = self._freq_curve(link, lim)
            if dynamic and curve is None and kind != "new" and evse in pol.sent:
                res = await self._call(
                    sid,
                    call.UpdateDynamicSchedule(
                        charging_profile_id=profile_id("tx", evse),
                        schedule_update={"limit": lim.value}
                        if lim.value >= 0
                        else {"setpoint": lim.value},
                    ),
                )
                accepted = res is not None and str(getattr(res, "status", "")) == "Accepted"
                if res is not None and not accepted:
                    self._outcome(
                        sid, evse, "rejected", "dynamic", kw, lim.applied_kw, str(res.status)
                    )
            else:
                prof = tx_profile(
                    evse,
                    s.transaction_id,
                    lim,
                    elec.phases,
                    start=now,
                    duration_s=self.tx_profile_s,
                    dynamic=dynamic,
                    max_offline_s=self.tx_profile_s,
                    v2x=v2x,
                    freq_curve=curve,
                )
                accepted = await self._set(sid, evse, prof, lim, "tx", call)
            if not accepted:
                continue
            ok += 1
            pol.accepted(evse, kw, now + timedelta(seconds=self.tx_profile_s), kind, now)
            if kind == "new" and link.quirks.composite_check:
                await self._check_composite(sid, evse, lim, call)
        return ok, ok == tried

    def _freq_curve(self, link: StationLink, lim: Limit) -> list[dict[str, float]] | None:
        """OCPP 2.1 LocalFrequency: an FCR Watt–frequency curve inside the EVSE's allowance
        (full over-frequency activation = the allowance, so no cap can be exceeded)."""
        if self.fcr_reserve_kw <= 0 or "LocalFrequency" not in link.operation_modes:
            return None
        reserve_kw = min(self.fcr_reserve_kw, lim.applied_kw / 2)
        if reserve_kw <= 0:
            return None
        nominal, deadband, full = self.fcr_hz
        base_w = (lim.applied_kw - reserve_kw) * 1000.0
        return freq_watt_curve(
            base_w, reserve_kw * 1000.0, nominal_hz=nominal, deadband_hz=deadband, full_hz=full
        )

    async def _check_composite(self, sid: str, evse: int, lim: Limit, call: Any) -> None:
        """GetCompositeSchedule (duration > 0): the station's effective limit must not be
        above what was sent."""
        res = await self._call(
            sid, call.GetCompositeSchedule(duration=60, evse_id=evse, charging_rate_unit=lim.unit)
        )
        if res is None:
            return
        sched = getattr(res, "schedule", None) or {}
        periods = sched.get("charging_schedule_period") or []
        if str(getattr(res, "status", "")) != "Accepted" or not periods:
            self._outcome(
                sid,
                evse,
                "composite_mismatch",
                "tx",
                lim.requested_kw,
                lim.applied_kw,
                "no schedule",
            )
            return
        got = float(periods[0].get("limit", 0.0))
        kind = "composite_ok" if got <= lim.value + 1e-6 else "composite_mismatch"
        self._outcome(
            sid, evse, kind, "tx", lim.requested_kw, lim.applied_kw, f"composite {got} {lim.unit}"
        )
