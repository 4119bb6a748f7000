"""gridflex edge against a fleet of 500 simulated OCPP 2.0.1 stations in one process.

boot → transaction → setpoint batch → every TxProfile accepted → meter values upstream;
one station of the fleet rejects every profile: the edge reports it upstream and keeps
retrying it, the others are unaffected.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.csms.edge.runner import EdgeRunner
from adapters.csms.edge.settings import load_edge_settings
from adapters.csms.edge.upstream import EDGE_REPORTS_TOPIC, EdgeReport, EmbeddedUpstream
from adapters.stream.inprocess import InProcessBus
from aggregator.interfaces import DEFAULT_TOPICS, ManualClock
from aggregator.messages import SetpointBatch, encode
from tests.adapters.csms.stations import SimStation, await_until, open_station

N = 500
PER_SITE = 10
T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


async def _fleet(tmp: Path) -> None:
    ids = [f"cs{i:04d}" for i in range(N)]
    sites = [
        {
            "id": f"s{k}",
            "feeder": f"f{(k // PER_SITE) % 5}",
            "cap_kw": 200.0,
            "stations": ids[k : k + PER_SITE],
        }
        for k in range(0, N, PER_SITE)
    ]
    settings = load_edge_settings(
        None,
        csms_id="c1",
        state_dir=tmp,
        ocpp={"port": 0, "security_profile": 1, "needs_wait_s": 0, "phase_timeout_s": 120},
        sites=sites,
        stations=[{"id": s, "password": "pw"} for s in ids],
    )
    clock = ManualClock(T0)
    bus = InProcessBus()
    runner = EdgeRunner(settings, clock, EmbeddedUpstream(bus, "c1"))
    await runner.start()
    target = runner.targets[0]
    port, ep = target.port, target.endpoint  # type: ignore[attr-defined]
    url = f"ws://127.0.0.1:{port}/ocpp"
    bad = ids[7]
    gate = asyncio.Semaphore(50)

    async def one(sid: str) -> SimStation:
        async with gate:
            reject = sid == bad
            st, _ = await open_station(
                url,
                sid,
                password="pw",
                now=clock.now,
                reject=reject,
                model="reject-1" if reject else "sim-1",
            )
            await st.boot(1)
            await st.tx("Started", 1, f"tx-{sid}", 1000.0, 0.0, clock.now())
            return st

    stations = await asyncio.gather(*(one(s) for s in ids))
    await await_until(lambda: len(ep.ready) == N, 120, "every station set up")
    evses = [f"{s}/1" for s in ids]
    batch = SetpointBatch(
        csms_id="c1",
        seq=1,
        issued_at=clock.now(),
        valid_until=clock.now() + timedelta(seconds=120),
        evse_ids=evses,
        power_kw=[11.0] * N,
        failsafe_kw=[4.2] * N,
    )
    bus.publish(DEFAULT_TOPICS.setpoints, "c1", encode(batch))
    accepted = await runner.step()
    assert accepted == N - 1  # every profile accepted, but the rejecting station's
    for st in stations:
        tx = [p for _t, e, p in st.rec.profiles if p["charging_profile_purpose"] == "TxProfile"]
        assert len(tx) == 1 and tx[0]["transaction_id"] == f"tx-{st.id}"
        sched = tx[0]["charging_schedule"][0]
        assert sched["charging_rate_unit"] == "A" and "start_schedule" in sched
        assert sched["charging_schedule_period"][0]["number_phases"] == 3
        assert sched["charging_schedule_period"][0]["limit"] == pytest.approx(11000 / 690, abs=0.1)

    async def meter(st: SimStation) -> None:
        async with gate:
            await st.tx("Updated", 1, f"tx-{st.id}", 3000.0, 11000.0, clock.now())

    await asyncio.gather(*(meter(st) for st in stations))
    runner.drain()
    tel = [json.loads(r.value) for r in bus.records(DEFAULT_TOPICS.telemetry)]
    meters = [r for r in tel if r["type"] == "meter_value" and r["power_kw"] == 11.0]
    assert len({r["evse_id"] for r in meters}) == N  # meter values of every station upstream
    assert all(r["energy_kwh"] == pytest.approx(2.0) for r in meters)
    by_feeder = {r.key for r in bus.records(DEFAULT_TOPICS.telemetry)}
    assert by_feeder == {f"f{k}" for k in range(5)}  # keyed by feeder

    reports = [EdgeReport.model_validate_json(r.value) for r in bus.records(EDGE_REPORTS_TOPIC)]
    rejected = [r for r in reports if r.kind == "rejected"]
    assert {r.station_id for r in rejected} == {bad}
    assert {r.purpose for r in rejected} >= {"tx", "max", "default"}
    # the rejecting station is retried next cycle; the others are not resent (deadband)
    clock.advance(30)
    n_before = len(stations[7].rec.profiles)
    again = await runner.step()
    assert again == 0 and len(stations[7].rec.profiles) > n_before
    purposes = {
        tuple(p["charging_profile_purpose"] for _t, _e, p in st.rec.profiles)
        for st in stations
        if st.id != bad
    }
    assert purposes == {("ChargingStationMaxProfile", "TxDefaultProfile", "TxProfile")}
    await runner.stop()


@pytest.mark.slow
def test_500_stations_boot_transact_accept_profiles_and_report_rejections(tmp_path: Path) -> None:
    asyncio.run(asyncio.wait_for(_fleet(tmp_path), 300))
