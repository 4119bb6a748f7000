"""The edge through a 48 h upstream outage on a simulated clock, against real OCPP stations
(the ``ocpp`` package's ChargePoint) on loopback.

boot → transactions → a setpoint batch → profiles accepted → meter values upstream; then
upstream is cut for 48 h while sessions come and go: the failsafe of the last batch, then
local balancing, keep every site at or under its cap at every instant (checked
independently from every profile the stations received); on reconnect every record
buffered during the outage arrives upstream exactly once. A second test restarts the edge
during the outage: the buffer and the last batch's failsafes survive it.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.csms.edge.buffer import Buffered
from adapters.csms.edge.runner import EdgeRunner
from adapters.csms.edge.settings import EdgeSettings, load_edge_settings
from adapters.csms.edge.upstream import EdgeReport, EmbeddedUpstream
from adapters.stream.inprocess import InProcessBus
from aggregator.errors import TransientIO
from aggregator.interfaces import DEFAULT_TOPICS, ManualClock
from aggregator.messages import SetpointBatch, encode
from tests.adapters.csms.stations import SimStation, await_until, open_station
from tests.integration.edge_check import StationLog, violations

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
CAPS = {"s1": 20.0, "s2": 12.0}
SITES = {"s1": ["a1", "a2"], "s2": ["b1"]}
EVSES = 2


class CuttableUpstream:
    """The embedded upstream with a switch: ``cut`` makes every call fail like a WAN loss."""

    def __init__(self, inner: EmbeddedUpstream) -> None:
        self.inner = inner
        self.cut = False

    def poll_batches(self) -> list[bytes]:
        if self.cut:
            raise TransientIO("cut")
        return self.inner.poll_batches()

    def send(self, records: list[Buffered]) -> None:
        if self.cut:
            raise TransientIO("cut")
        self.inner.send(records)


def settings(tmp: Path) -> EdgeSettings:
    return load_edge_settings(
        None,
        csms_id="c1",
        edge_id="e1",
        state_dir=tmp,
        ocpp={
            "port": 0,
            "security_profile": 1,
            "needs_wait_s": 0,
            "phase_timeout_s": 120,  # a loaded CI machine: every answer counted in its cycle
            "tx_profile_s": 900,
            "min_interval_s": 10,
        },
        sites=[
            {"id": s, "feeder": f"f-{s}", "cap_kw": CAPS[s], "stations": st}
            for s, st in SITES.items()
        ],
        stations=[
            {"id": sid, "password": f"pw-{sid}", "max_power_kw": 11.0}
            for st in SITES.values()
            for sid in st
        ],
    )


def batch(
    seq: int, now: datetime, evses: list[str], kw: float, failsafe_kw: float
) -> SetpointBatch:
    return SetpointBatch(
        csms_id="c1",
        seq=seq,
        issued_at=now,
        valid_until=now + timedelta(seconds=120),
        evse_ids=evses,
        power_kw=[kw] * len(evses),
        failsafe_kw=[failsafe_kw] * len(evses),
    )


async def _connect(runner: EdgeRunner, clock: ManualClock) -> dict[str, SimStation]:
    ep = runner.targets[0].endpoint  # type: ignore[attr-defined]
    port = runner.targets[0].port  # type: ignore[attr-defined]
    stations: dict[str, SimStation] = {}
    for sid in [s for st in SITES.values() for s in st]:
        st, _task = await open_station(
            f"ws://127.0.0.1:{port}/ocpp", sid, password=f"pw-{sid}", now=clock.now
        )
        await st.boot(EVSES)
        stations[sid] = st
    await await_until(lambda: len(ep.ready) == len(stations), 30, "every station set up")
    return stations


def _records(bus: InProcessBus, topic: str) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in bus.records(topic)]


async def _outage(tmp: Path) -> None:
    clock = ManualClock(T0)
    bus = InProcessBus()
    up = CuttableUpstream(EmbeddedUpstream(bus, "c1"))
    runner = EdgeRunner(settings(tmp), clock, up)
    await runner.start()
    stations = await _connect(runner, clock)
    logs = {sid: StationLog(site) for site, sids in SITES.items() for sid in sids}
    txn = 0
    open_tx: dict[tuple[str, int], tuple[str, datetime, float]] = {}

    async def start_tx(sid: str, e: int) -> None:
        nonlocal txn
        txn += 1
        tx_id = f"tx-{txn}"
        await stations[sid].tx("Started", e, tx_id, 0.0, 0.0, clock.now())
        open_tx[(sid, e)] = (tx_id, clock.now(), 0.0)

    async def end_tx(sid: str, e: int) -> None:
        tx_id, a, wh = open_tx.pop((sid, e))
        await stations[sid].tx("Ended", e, tx_id, wh + 500.0, 0.0, clock.now())
        logs[sid].transactions.append((e, tx_id, a, clock.now()))

    for sid in stations:
        for e in range(1, EVSES + 1):
            await start_tx(sid, e)
    all_evses = [f"{sid}/{e}" for sid in stations for e in range(1, EVSES + 1)]
    bus.publish(DEFAULT_TOPICS.setpoints, "c1", encode(batch(1, clock.now(), all_evses, 7.0, 4.2)))
    accepted = await runner.step()
    assert accepted == len(all_evses)  # profile accepted for every EVSE
    assert runner.csac.mode(clock.now()) == "upstream"
    for sid, e in list(open_tx):
        tx_id, a, wh = open_tx[(sid, e)]
        await stations[sid].tx("Updated", e, tx_id, wh + 1000.0, 5000.0, clock.now())
        open_tx[(sid, e)] = (tx_id, a, wh + 1000.0)
    runner.drain()
    tel = _records(bus, DEFAULT_TOPICS.telemetry)
    assert sum(r["type"] == "session_started" for r in tel) == len(all_evses)
    assert sum(r["type"] == "meter_value" for r in tel) >= len(all_evses)  # meter values upstream

    # ---- upstream cut for 48 h; sessions come and go
    up.cut = True
    before = len(bus.records(DEFAULT_TOPICS.telemetry))
    step_s = 60
    modes = set()
    for i in range(1, 48 * 60 + 1):
        clock.advance(step_s)
        if i % 30 == 0:  # meter values every 30 min
            for (sid, e), (tx_id, a, wh) in list(open_tx.items()):
                await stations[sid].tx("Updated", e, tx_id, wh + 100.0, 3000.0, clock.now())
                open_tx[(sid, e)] = (tx_id, a, wh + 100.0)
        if i % 97 == 0:  # a session ends; the EVSE stays free for a while
            sid = list(stations)[(i // 97) % len(stations)]
            e = 1 + (i // 97) % EVSES
            if (sid, e) in open_tx:
                await end_tx(sid, e)
        if i % 97 == 13:
            for sid in stations:
                for e in range(1, EVSES + 1):
                    if (sid, e) not in open_tx:
                        await start_tx(sid, e)
                        break
        await runner.step()
        modes.add(runner.mode)
    assert {"failsafe", "autonomous"} <= modes
    assert len(bus.records(DEFAULT_TOPICS.telemetry)) == before  # nothing got through the cut
    pending = runner.buffer.pending(1_000_000)
    assert pending, "the outage produced buffered telemetry"

    # ---- reconnect: every buffered record arrives exactly once
    up.cut = False
    bus.publish(DEFAULT_TOPICS.setpoints, "c1", encode(batch(2, clock.now(), all_evses, 3.0, 4.2)))
    await runner.step()
    assert runner.csac.mode(clock.now()) == "upstream"
    assert len(runner.buffer) == 0
    got = [
        (r.topic, r.key, r.value)
        for t in (DEFAULT_TOPICS.telemetry, DEFAULT_TOPICS.grid_signals)
        for r in bus.records(t)
    ] + [(r.topic, r.key, r.value) for r in bus.records("gridflex.edge-reports")]
    values = [v for _t, _k, v in got]
    assert len(values) == len(set(values)), "a record arrived twice"
    for rec in pending:
        assert values.count(rec.value) == 1, (
            f"buffered record {rec.seq} did not arrive exactly once"
        )
    reports = [
        EdgeReport.model_validate_json(r.value) for r in bus.records("gridflex.edge-reports")
    ]
    assert {"failsafe", "autonomous", "upstream"} <= {r.detail for r in reports if r.kind == "mode"}

    # ---- independent check of every profile sent, for the whole run
    for sid, st in stations.items():
        logs[sid].profiles = list(st.rec.profiles)
        for (s2, e), (tx_id, a, _wh) in open_tx.items():
            if s2 == sid:
                logs[sid].transactions.append((e, tx_id, a, None))
    n_profiles = sum(len(lg.profiles) for lg in logs.values())
    assert n_profiles > 200  # refreshed all through the outage
    bad = violations(logs, CAPS)
    assert not bad, "\n".join(bad[:20])
    await runner.stop()


@pytest.mark.slow
def test_48h_outage_keeps_sites_under_cap_and_replays_exactly_once(tmp_path: Path) -> None:
    asyncio.run(asyncio.wait_for(_outage(tmp_path), 240))


async def _restart(tmp: Path) -> None:
    clock = ManualClock(T0)
    bus = InProcessBus()
    up = CuttableUpstream(EmbeddedUpstream(bus, "c1"))
    runner = EdgeRunner(settings(tmp), clock, up)
    await runner.start()
    stations = await _connect(runner, clock)
    await stations["a1"].tx("Started", 1, "tx-1", 0.0, 0.0, clock.now())
    bus.publish(DEFAULT_TOPICS.setpoints, "c1", encode(batch(1, clock.now(), ["a1/1"], 7.0, 5.0)))
    await runner.step()
    up.cut = True
    clock.advance(600)
    await stations["a1"].tx("Updated", 1, "tx-1", 700.0, 5000.0, clock.now())
    await runner.step()
    buffered = runner.buffer.pending()
    assert buffered
    await runner.stop()  # the edge goes down with records buffered

    runner2 = EdgeRunner(settings(tmp), clock, up)  # same state dir
    assert [b.value for b in runner2.buffer.pending()] == [b.value for b in buffered]
    assert runner2.csac.mode(clock.now()) == "failsafe"  # the last batch's failsafe survived
    assert runner2.csac.failsafe_kw["a1/1"] == 5.0
    up.cut = False
    runner2.drain()
    runner2.drain()
    values = [r.value for r in bus.records(DEFAULT_TOPICS.telemetry)]
    for b in buffered:
        if b.topic == "telemetry":
            assert values.count(b.value) == 1
    runner2.buffer.close()


@pytest.mark.slow
def test_buffer_and_failsafe_survive_an_edge_restart(tmp_path: Path) -> None:
    asyncio.run(asyncio.wait_for(_restart(tmp_path), 120))
