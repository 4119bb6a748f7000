"""gridflex edge against an independent station implementation: npm ``ocpp-rpc`` in strict
schema mode (every message both ways validated against the OCPP JSON schemas).

OCPP 2.0.1: boot → transaction → setpoint batch → TxProfile accepted → meter values
upstream; a station that rejects every profile (reported upstream). OCPP 2.1 with dynamic
profiles in its device model: a Dynamic TxProfile whose ``maxOfflineDuration`` is the
lease, then ``UpdateDynamicSchedule`` for the next setpoint.

``scripts/ocpp-rpc.sh install`` puts ocpp-rpc in ~/.cache/gridflex/ocpp-rpc (the npm
registry is needed only the first time); a failed install fails these tests, never skips.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.csms.edge.runner import EdgeRunner
from adapters.csms.edge.settings import load_edge_settings
from adapters.csms.edge.upstream import EDGE_REPORTS_TOPIC, EdgeReport, EmbeddedUpstream
from adapters.stream.inprocess import InProcessBus
from aggregator.interfaces import DEFAULT_TOPICS, ManualClock
from aggregator.messages import SetpointBatch, encode

ROOT = Path(__file__).resolve().parents[2]
STATION_JS = Path(__file__).with_name("ocpp_rpc_station.js")


@pytest.fixture(scope="session")
def node_path() -> str:
    script = ROOT / "scripts" / "ocpp-rpc.sh"
    r = subprocess.run([str(script), "install"], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        pytest.fail(f"scripts/ocpp-rpc.sh install failed:\n{r.stderr[-2000:]}")
    return subprocess.run(
        [str(script), "path"], capture_output=True, text=True, check=True
    ).stdout.strip()


def _is_v2g(e: dict[str, Any]) -> bool:
    if e.get("action") != "SetChargingProfile":
        return False
    period = e["params"]["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"][0]
    return bool(period.get("operationMode") == "CentralSetpoint")


class Station:
    """The node station process and the JSON lines it prints."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []

    async def until(
        self,
        event: str,
        timeout_s: float = 30.0,
        action: str | None = None,
        where: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """The first line printed for ``event`` (and ``action``, and ``where``), reading on
        as needed."""

        def match(e: dict[str, Any]) -> bool:
            return (
                e["event"] == event
                and (action is None or e.get("action") == action)
                and (where is None or where(e))
            )

        async def read() -> dict[str, Any]:
            for e in self.events:
                if match(e):
                    return e
            assert self.proc.stdout is not None
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    err = b""
                    if self.proc.stderr is not None:
                        err = await self.proc.stderr.read()
                    raise AssertionError(f"station exited before {event!r}: {self.events} {err!r}")
                e = json.loads(line)
                self.events.append(e)
                assert e["event"] != "error", e
                if match(e):
                    return e

        return await asyncio.wait_for(read(), timeout_s)

    def calls(self, action: str) -> list[dict[str, Any]]:
        return [e["params"] for e in self.events if e.get("action") == action]

    async def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        await asyncio.wait_for(self.proc.wait(), 30)


async def _scenario(
    tmp: Path, node_path: str, *, protocol: str, reject: bool, dynamic: bool, freq: bool
) -> None:
    settings = load_edge_settings(
        None,
        csms_id="c1",
        state_dir=tmp,
        ocpp={
            "port": 0,
            "security_profile": 1,
            "needs_wait_s": 0,
            "phase_timeout_s": 120,  # a loaded CI machine: every answer counted in its cycle
            "fcr_reserve_kw": 1.0 if freq else 0.0,
        },
        sites=[{"id": "s1", "feeder": "f1", "cap_kw": 50.0, "stations": ["rpc1"]}],
        stations=[{"id": "rpc1", "password": "rpc-secret-pw", "max_power_kw": 22.0}],
    )
    clock = ManualClock(datetime.now(UTC))
    bus = InProcessBus()
    runner = EdgeRunner(settings, clock, EmbeddedUpstream(bus, "c1"))
    await runner.start()
    port = runner.targets[0].port  # type: ignore[attr-defined]
    cfg = {
        "url": f"ws://127.0.0.1:{port}/ocpp",
        "identity": "rpc1",
        "password": "rpc-secret-pw",
        "protocol": protocol,
        "reject": reject,
        "dynamic": dynamic,
        "freq": freq,
    }
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(STATION_JS),
        json.dumps(cfg),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_PATH": node_path},
    )
    st = Station(proc)
    try:
        assert (await st.until("booted"))["status"] == "Accepted"
        await st.until("started")
        ep = runner.targets[0].endpoint  # type: ignore[attr-defined]
        deadline = asyncio.get_running_loop().time() + 30
        while "rpc1" not in ep.ready:
            assert asyncio.get_running_loop().time() < deadline, "station never set up"
            await asyncio.sleep(0.02)

        def batch(seq: int, kw: float) -> bytes:
            now = clock.now()
            return encode(
                SetpointBatch(
                    csms_id="c1",
                    seq=seq,
                    issued_at=now,
                    valid_until=now + timedelta(seconds=120),
                    evse_ids=["rpc1/1"],
                    power_kw=[kw],
                    failsafe_kw=[4.2],
                )
            )

        bus.publish(DEFAULT_TOPICS.setpoints, "c1", batch(1, 6.9))
        accepted = await runner.step()
        reports = lambda: [  # noqa: E731
            EdgeReport.model_validate_json(r.value) for r in bus.records(EDGE_REPORTS_TOPIC)
        ]
        if reject:
            assert accepted == 0
            runner.drain()
            kinds = {(r.kind, r.purpose) for r in reports()}
            assert {("rejected", "tx"), ("rejected", "max"), ("rejected", "default")} <= kinds
            assert all("NotSupported" in r.detail for r in reports() if r.kind == "rejected")
            return
        assert accepted == 1
        await st.until("metered")  # after the TxProfile: every call before it has been read
        tx = [
            p
            for p in st.calls("SetChargingProfile")
            if p["chargingProfile"]["chargingProfilePurpose"] == "TxProfile"
        ]
        assert len(tx) == 1
        prof = tx[0]["chargingProfile"]
        sched = prof["chargingSchedule"][0]
        assert (
            sched["chargingRateUnit"] == "A"
            and sched["chargingSchedulePeriod"][0]["numberPhases"] == 3
        )
        assert sched["chargingSchedulePeriod"][0]["limit"] == pytest.approx(10.0)  # 6.9 kW / 690 V
        period = sched["chargingSchedulePeriod"][0]
        if freq:  # FCR inside the allowance: 5.9 kW ± 1 kW between 49.8 and 50.2 Hz
            assert period["operationMode"] == "LocalFrequency"
            curve = period["v2xFreqWattCurve"]
            assert [p["frequency"] for p in curve] == [49.8, 49.99, 50.01, 50.2]
            assert max(p["power"] for p in curve) == pytest.approx(6900.0, abs=1.0)
        else:
            assert "operationMode" not in period
        if dynamic:
            assert prof["chargingProfileKind"] == "Dynamic"
            assert prof["maxOfflineDuration"] == settings.ocpp.tx_profile_s
        else:
            assert prof["chargingProfileKind"] == "Absolute" and "startSchedule" in sched
        runner.drain()
        tel = [json.loads(r.value) for r in bus.records(DEFAULT_TOPICS.telemetry)]
        assert [t["type"] for t in tel if t["type"] != "evse_heartbeat"][:1] == ["session_started"]
        meters = [t for t in tel if t["type"] == "meter_value"]
        assert meters[-1]["power_kw"] == pytest.approx(6.9) and meters[-1][
            "energy_kwh"
        ] == pytest.approx(1.5)
        kinds = {r.kind for r in reports()}
        assert "composite_ok" in kinds and not kinds & {
            "rejected",
            "call_failed",
            "composite_mismatch",
        }
        if dynamic:
            clock.advance(30)
            bus.publish(DEFAULT_TOPICS.setpoints, "c1", batch(2, 9.0))
            assert await runner.step() == 1
            upd = (await st.until("call", action="UpdateDynamicSchedule"))["params"]
            assert upd["chargingProfileId"] == prof["id"]
            assert upd["scheduleUpdate"]["limit"] == pytest.approx(13.0)  # 9 kW / 690 V, floor 0.1
        if freq:  # the station declared CentralSetpoint too: V2G as a discharge setpoint
            clock.advance(30)
            bus.publish(DEFAULT_TOPICS.setpoints, "c1", batch(2, -5.0))
            assert await runner.step() == 1
            v2g = (await st.until("call", where=_is_v2g))["params"]["chargingProfile"]
            period = v2g["chargingSchedule"][0]["chargingSchedulePeriod"][0]
            # -5 kW / 690 V = -7.25 A, toward zero to the quirk table's 1 A step for ocpp-rpc
            assert period["setpoint"] == pytest.approx(-7.0) and period["dischargeLimit"] < 0
    finally:
        await st.close()
        await runner.stop()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("protocol", "reject", "dynamic", "freq"),
    [
        ("ocpp2.0.1", False, False, False),
        ("ocpp2.0.1", True, False, False),
        ("ocpp2.1", False, True, False),
        ("ocpp2.1", False, False, True),
    ],
    ids=["2.0.1-accepts", "2.0.1-rejects", "2.1-dynamic", "2.1-local-frequency"],
)
def test_ocpp_rpc_strict_station(
    tmp_path: Path, node_path: str, protocol: str, reject: bool, dynamic: bool, freq: bool
) -> None:
    asyncio.run(
        _scenario(tmp_path, node_path, protocol=protocol, reject=reject, dynamic=dynamic, freq=freq)
    )
