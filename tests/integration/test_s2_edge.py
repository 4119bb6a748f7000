"""S2 through the edge runner: an s2-python RM behind ``gridflex edge`` (target ``"s2"``).

The edge polls a setpoint batch from the embedded bus, the CSAC balances it under the
site cap, the S2 target sends PEBC.Instructions, and the RM's telemetry goes through the
edge's durable buffer onto the bus. Then upstream goes silent past ``valid_until``: the
instructions fall to the failsafe, and every instruction the RMs recorded keeps the site
at or under its cap (checked on the RMs' own records, not the edge's bookkeeping).
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.csms.edge.runner import EdgeRunner
from adapters.csms.edge.settings import load_edge_settings
from adapters.csms.edge.upstream import EDGE_REPORTS_TOPIC, EmbeddedUpstream
from adapters.csms.s2.edge import S2Target
from adapters.stream.inprocess import InProcessBus
from aggregator.interfaces import DEFAULT_TOPICS, ManualClock
from aggregator.messages import SetpointBatch, decode_telemetry, encode
from tests.integration.s2_peer import ev, rm, until

pytestmark = pytest.mark.slow

CAP_KW = 12.0


def _batch(seq: int, now: datetime, kw: list[float], lease_s: float = 30.0) -> SetpointBatch:
    return SetpointBatch(
        csms_id="csms-a",
        seq=seq,
        issued_at=now,
        valid_until=now + timedelta(seconds=lease_s),
        evse_ids=["ev-a/1", "ev-b/1"],
        power_kw=kw,
        failsafe_kw=[3.0, 3.0],
    )


def test_batch_to_instructions_and_telemetry_up_then_failsafe_under_the_cap(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
        settings = load_edge_settings(
            csms_id="csms-a",
            state_dir=tmp_path,
            targets=["s2"],
            sites=[{"id": "s1", "feeder": "f1", "cap_kw": CAP_KW, "stations": ["ev-a", "ev-b"]}],
        )
        bus = InProcessBus()
        runner = EdgeRunner(settings, clock, EmbeddedUpstream(bus, "csms-a"))
        (target,) = runner.targets
        assert isinstance(target, S2Target)
        target.cem.settings = dataclasses.replace(target.cem.settings, port=0)  # a free port
        await runner.start()
        a, b = ev(upper_kw=(0.0, 11.0)), ev(upper_kw=(0.0, 11.0))
        peers = [rm(target.port, a, name="ev-a"), rm(target.port, b, name="ev-b")]
        try:
            for p in peers:
                await p.start()
            await until(lambda: len(target.sessions(clock.now())) == 2, 10, "two sessions")
            bus.publish(
                DEFAULT_TOPICS.setpoints, "csms-a", encode(_batch(1, clock.now(), [9.0, 9.0]))
            )
            assert await runner.step() == 2
            assert runner.mode == "upstream"
            await until(lambda: a.instructions and b.instructions, 10, "instructions at the RMs")
            # the CSAC balanced 9 + 9 under the 12 kW cap: 6 each
            for c in (a, b):
                first, failsafe = c.instructions[-1].power_envelopes[0].power_envelope_elements
                assert first.upper_limit == pytest.approx(6000.0)
                assert failsafe.upper_limit == pytest.approx(3000.0)
            await peers[0].measure(5.5, clock.now())

            def meter_up() -> bool:
                runner.drain()  # the buffer → the bus, as each cycle does
                return any(
                    decode_telemetry(r.value).type == "meter_value"
                    for r in bus.records(DEFAULT_TOPICS.telemetry)
                )

            await until(meter_up, 10, "meter value through the edge buffer")
            kinds = [decode_telemetry(r.value).type for r in bus.records(DEFAULT_TOPICS.telemetry)]
            assert kinds.count("session_started") == 2 and "meter_value" in kinds
            # upstream silent past valid_until: failsafe, still under the cap
            clock.advance(31.0)
            await runner.step()
            assert runner.mode == "failsafe"
            await until(
                lambda: len(a.instructions) >= 2 and len(b.instructions) >= 2,
                10,
                "failsafe instructions",
            )
            for c in (a, b):
                first = c.instructions[-1].power_envelopes[0].power_envelope_elements[0]
                assert first.upper_limit == pytest.approx(3000.0)
            for i in range(min(len(a.instructions), len(b.instructions))):
                ua = a.instructions[i].power_envelopes[0].power_envelope_elements[0].upper_limit
                ub = b.instructions[i].power_envelopes[0].power_envelope_elements[0].upper_limit
                assert ua + ub <= CAP_KW * 1000 + 1e-6
            assert bus.records(EDGE_REPORTS_TOPIC)  # mode changes reported upstream
        finally:
            for p in peers:
                await p.stop()
            await runner.stop()

    asyncio.run(scenario())


def test_an_ocpp_station_and_an_s2_rm_share_one_site_cap(tmp_path: Path) -> None:
    """Both targets at one edge: the CSAC balances their sessions together; the station's
    TxProfile (its own record, A → kW) plus the RM's envelope (its own record) stay under
    the cap."""
    from tests.adapters.csms.stations import open_station
    from tests.integration.edge_check import kw

    async def scenario() -> None:
        clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
        settings = load_edge_settings(
            csms_id="csms-a",
            state_dir=tmp_path,
            targets=["ocpp", "s2"],
            ocpp={"port": 0, "security_profile": 1, "needs_wait_s": 0, "min_interval_s": 0},
            sites=[{"id": "s1", "feeder": "f1", "cap_kw": 15.0, "stations": ["cs-1", "ev-a"]}],
            stations=[{"id": "cs-1", "password": "pw-cs-1", "max_power_kw": 22.0}],
        )
        bus = InProcessBus()
        runner = EdgeRunner(settings, clock, EmbeddedUpstream(bus, "csms-a"))
        ocpp_t, s2_t = runner.targets
        assert isinstance(s2_t, S2Target)
        s2_t.cem.settings = dataclasses.replace(s2_t.cem.settings, port=0)
        await runner.start()
        control = ev(upper_kw=(0.0, 11.0))
        peer = rm(s2_t.port, control, name="ev-a")
        station, task = await open_station(
            f"ws://127.0.0.1:{ocpp_t.port}/ocpp", "cs-1", password="pw-cs-1", now=clock.now
        )
        try:
            await station.boot(1)
            await station.tx("Started", 1, "tx-1", 0.0, 0.0, clock.now())
            await peer.start()
            await until(lambda: len(s2_t.sessions(clock.now())) == 1, 10, "the RM's session")
            await until(lambda: len(ocpp_t.sessions(clock.now())) == 1, 10, "the station's")
            batch = SetpointBatch(
                csms_id="csms-a",
                seq=1,
                issued_at=clock.now(),
                valid_until=clock.now() + timedelta(seconds=60),
                evse_ids=["cs-1/1", "ev-a/1"],
                power_kw=[11.0, 11.0],
                failsafe_kw=[4.0, 4.0],
            )
            bus.publish(DEFAULT_TOPICS.setpoints, "csms-a", encode(batch))
            assert await runner.step() == 2
            await until(lambda: control.instructions, 10, "the RM's instruction")
            tx = [
                p
                for _t, _e, p in station.rec.profiles
                if p["charging_profile_purpose"] == "TxProfile"
            ]
            station_kw = kw(tx[-1]["charging_schedule"][0])
            rm_kw = control.instructions[-1].power_envelopes[0].power_envelope_elements[0]
            assert station_kw > 0.0 and rm_kw.upper_limit > 0.0
            assert station_kw + rm_kw.upper_limit / 1000.0 <= 15.0 + 1e-6
        finally:
            await peer.stop()
            task.cancel()
            await runner.stop()

    asyncio.run(scenario())
