"""The OCPP endpoint over loopback: reconnects, device model, unknown subprotocols."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ocpp.routing import on
from ocpp.v201 import call
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from adapters.csms.ocpp.endpoint import OcppEndpoint, Outcome, Security
from adapters.csms.ocpp.station import StationPlace
from aggregator.fleet import ApplyOutcome, FleetState
from aggregator.messages import SessionStarted
from aggregator.topology import Feeder, Site, Topology
from tests.adapters.csms.stations import SimStation, await_until, open_station


def _endpoint(outcomes: list[Outcome], out: list[Any]) -> OcppEndpoint:
    places = {"st1": StationPlace(station_id="st1", site_id="s1", feeder_id="f1", csms_id="c1")}
    return OcppEndpoint(
        places,
        lambda k, key, m: out.append(m),
        outcomes.append,
        lambda: datetime.now(UTC),
        security=Security(profile=0),
        needs_wait_s=0,
    )


def test_a_reconnect_without_reboot_keeps_the_transaction_and_gets_profiles() -> None:
    async def run() -> None:
        outcomes: list[Outcome] = []
        out: list[Any] = []
        ep = _endpoint(outcomes, out)
        port = await ep.start()
        url = f"ws://127.0.0.1:{port}/ocpp"
        st, task = await open_station(url, "st1", unit="W", phases=1)
        await st.boot(1)
        await await_until(lambda: "st1" in ep.ready, 20, "setup")
        assert ep.links["st1"].electrical().unit == "W"  # from the device model
        await st.tx("Started", 1, "t1", 0.0, 0.0)
        await st._connection.close()
        task.cancel()
        await await_until(lambda: "st1" not in ep.cps, 20, "disconnect noticed")
        assert await ep.apply({"st1/1": 5.0}) == 0  # nobody to send to
        st2, task2 = await open_station(url, "st1", unit="W", phases=1)  # no BootNotification
        await await_until(lambda: "st1" in ep.ready, 20, "resumed")
        assert await ep.apply({"st1/1": 5.0}) == 1
        (prof,) = [
            p for _t, _e, p in st2.rec.profiles if p["charging_profile_purpose"] == "TxProfile"
        ]
        sched = prof["charging_schedule"][0]
        assert prof["transaction_id"] == "t1" and sched["charging_rate_unit"] == "W"
        assert sched["charging_schedule_period"][0] == {
            "start_period": 0,
            "limit": 5000.0,
            "number_phases": 1,
        }
        assert [o.kind for o in outcomes] == ["composite_ok"]
        task2.cancel()
        await ep.stop()

    asyncio.run(run())


def test_a_connection_without_an_ocpp2_subprotocol_is_closed() -> None:
    async def run() -> None:
        ep = _endpoint([], [])
        port = await ep.start()
        with pytest.raises((InvalidHandshake, ConnectionClosed)):
            async with connect(f"ws://127.0.0.1:{port}/ocpp/st1", subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
                await ws.recv()
        assert "st1" not in ep.links
        await ep.stop()

    asyncio.run(run())


def test_per_evse_defaults_reach_evses_that_appear_later() -> None:
    async def run() -> None:
        ep = _endpoint([], [])
        ep.station_limits["st1"] = (20.0, 4.2)
        port = await ep.start()
        # ExampleVendor refuses a TxDefaultProfile on EVSE 0 (quirk table)
        st, task = await open_station(f"ws://127.0.0.1:{port}/ocpp", "st1", vendor="ExampleVendor")
        await st.boot(1)
        await await_until(lambda: "st1" in ep.ready, 20, "setup")
        await await_until(lambda: ep.defaults_sent.get("st1") == {1}, 20, "EVSE 1 default")
        # EVSE 2 shows up after the setup
        await st.call(
            call.StatusNotification(
                timestamp=datetime.now(UTC).isoformat(),
                connector_status="Available",
                evse_id=2,
                connector_id=1,
            )
        )
        await await_until(lambda: "st1" in ep.ready and 2 in ep.links["st1"].evses, 20, "EVSE 2")
        await ep.apply({})
        defaults = [
            e for _t, e, p in st.rec.profiles if p["charging_profile_purpose"] == "TxDefaultProfile"
        ]
        assert 0 not in defaults and {1, 2} <= set(defaults)
        task.cancel()
        await ep.stop()

    asyncio.run(run())


def test_a_setpoint_below_the_evs_minimum_current_becomes_0_and_is_reported() -> None:
    async def run() -> None:
        outcomes: list[Outcome] = []
        ep = _endpoint(outcomes, [])
        port = await ep.start()
        st, task = await open_station(f"ws://127.0.0.1:{port}/ocpp", "st1")
        await st.boot(1)
        await await_until(lambda: "st1" in ep.ready, 20, "setup")
        await st.tx("Started", 1, "t1", 0.0, 0.0)
        await st.call(
            call.NotifyEVChargingNeeds(
                evse_id=1,
                charging_needs={
                    "requested_energy_transfer": "AC_three_phase",
                    "ac_charging_parameters": {
                        "energy_amount": 10000,
                        "ev_min_current": 10,
                        "ev_max_current": 32,
                        "ev_max_voltage": 400,
                    },
                },
            )
        )
        assert await ep.apply({"st1/1": 5.0}) == 1  # 7.2 A < the EV's 10 A
        (prof,) = [
            p for _t, _e, p in st.rec.profiles if p["charging_profile_purpose"] == "TxProfile"
        ]
        assert prof["charging_schedule"][0]["charging_schedule_period"][0]["limit"] == 0.0
        (r,) = [o for o in outcomes if o.kind == "rounded"]
        assert (r.requested_kw, r.applied_kw, r.detail) == (5.0, 0.0, "min_current")
        task.cancel()
        await ep.stop()

    asyncio.run(run())


class _Hanging(SimStation):
    """Never answers SetChargingProfile once ``hang`` is set."""

    hang = False

    @on("SetChargingProfile")
    async def _set(self, evse_id: int, charging_profile: dict[str, Any], **_: Any) -> Any:
        if self.hang:
            await asyncio.Event().wait()
        return await super()._set(evse_id=evse_id, charging_profile=charging_profile)


def test_a_station_that_hangs_holds_back_its_site_but_not_the_cycle() -> None:
    async def run() -> None:
        places = {
            s: StationPlace(station_id=s, site_id=site, feeder_id="f1", csms_id="c1")
            for s, site in (("a1", "s1"), ("a2", "s1"), ("b1", "s2"))
        }
        ep = OcppEndpoint(
            places,
            lambda *_: None,
            lambda _o: None,
            lambda: datetime.now(UTC),
            security=Security(profile=0),
            needs_wait_s=0,
            phase_timeout_s=0.5,
            min_interval_s=0,
            call_timeout_s=60,
        )
        port = await ep.start()
        sts: dict[str, SimStation] = {}
        serving: list[asyncio.Future[Any]] = []
        for sid in places:
            ws = await connect(f"ws://127.0.0.1:{port}/ocpp/{sid}", subprotocols=["ocpp2.0.1"])  # type: ignore[list-item]
            st = _Hanging(sid, ws) if sid == "a1" else SimStation(sid, ws)
            serving.append(asyncio.ensure_future(st.start()))
            await st.boot(1)
            await st.tx("Started", 1, f"t-{sid}", 0.0, 0.0)
            sts[sid] = st
        await await_until(lambda: len(ep.ready) == 3, 20, "setup")
        assert await ep.apply({"a1/1": 10.0, "a2/1": 5.0, "b1/1": 5.0}) == 3
        sts["a1"].hang = True  # type: ignore[attr-defined]
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        # a1 must tighten (hangs); a2 and b1 want more
        n = await ep.apply({"a1/1": 5.0, "a2/1": 9.0, "b1/1": 9.0})
        assert loop.time() - t0 < 5.0  # the cycle did not wait for a1
        assert n == 1  # b1 loosened; a2 held: its site's tightening is not confirmed

        def tx(sid: str) -> list[float]:
            return [
                p["charging_schedule"][0]["charging_schedule_period"][0]["limit"]
                for _t, _e, p in sts[sid].rec.profiles
                if p["charging_profile_purpose"] == "TxProfile"
            ]

        assert len(tx("a2")) == 1 and len(tx("b1")) == 2
        assert "a1" in ep._busy
        assert await ep.apply({"a1/1": 5.0, "a2/1": 9.0, "b1/1": 9.0}) == 0  # still held
        await ep.stop()

    asyncio.run(run())


def test_needs_told_after_the_start_go_upstream_as_a_newer_start_of_the_session() -> None:
    """ISO 15118 may tell departure and energy only after the transaction started (and
    after the edge announced it with defaults): the edge announces the session again with
    a newer ``ts`` and the EV's needs, which the core takes as a revision."""

    async def run() -> None:
        out: list[Any] = []
        ep = _endpoint([], out)
        port = await ep.start()
        st, task = await open_station(f"ws://127.0.0.1:{port}/ocpp", "st1")
        await st.boot(1)
        await await_until(lambda: "st1" in ep.ready, 20, "setup")
        await st.tx("Started", 1, "t1", 0.0, 0.0)

        def starts() -> list[SessionStarted]:
            ep.links["st1"].release_due(datetime.now(UTC))  # needs_wait_s=0: with defaults
            return [m for m in out if isinstance(m, SessionStarted)]

        await await_until(lambda: len(starts()) == 1, 20, "the first announcement")
        departure = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=3)
        await st.call(
            call.NotifyEVChargingNeeds(
                evse_id=1,
                charging_needs={
                    "requested_energy_transfer": "AC_three_phase",
                    "departure_time": departure.isoformat(),
                    "ac_charging_parameters": {
                        "energy_amount": 25000,
                        "ev_min_current": 6,
                        "ev_max_current": 16,
                        "ev_max_voltage": 400,
                    },
                },
            )
        )
        await await_until(lambda: len(starts()) == 2, 20, "the revised announcement")
        first, revised = starts()
        assert revised.session_id == first.session_id == "t1"
        assert revised.ts > first.ts
        assert (revised.energy_requested_kwh, revised.departure) == (25.0, departure)
        fleet = FleetState(
            Topology((Feeder("f1", 100.0),), (Site("s1", "f1", 50.0, csms_id="c1"),))
        )
        assert fleet.apply(first).outcome is ApplyOutcome.APPLIED
        assert fleet.apply(revised).outcome is ApplyOutcome.APPLIED  # revised, not new
        slot = fleet.slot_of[first.evse_id]
        assert fleet.energy_requested_kwh[slot] == 25.0
        task.cancel()
        await ep.stop()

    asyncio.run(run())
