"""The S2 CEM against s2-python's own resource-manager client, over loopback WebSocket.

Covered: handshake → ResourceManagerDetails → PEBC selected → constraints → session
started upstream → setpoint batch → PEBC.Instruction accepted (the RM's own record, not
the CEM's) → power measurement → meter value upstream → disconnect → session ended; an RM
that rejects; a bearer token refused; bad JSON answered; stale batches dropped; a batch
published from another thread.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from s2python.connection.async_.medium.s2_medium import MediumCouldNotConnectError
from websockets.asyncio.client import connect

from adapters.csms.s2 import S2Cem, S2Resource, S2Settings
from aggregator.messages import MeterValue, SessionEnded, SessionStarted, SetpointBatch, Telemetry
from tests.integration.s2_peer import ev, rm, until

pytestmark = pytest.mark.slow


class WallClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def _cem(rids: list[uuid.UUID], got: list[Telemetry], token: str | None = None) -> S2Cem:
    resources = tuple(S2Resource(str(r), f"evse-{i}", "site-1", "f1") for i, r in enumerate(rids))
    return S2Cem(S2Settings("csms-a", resources, bearer_token=token), got.append, WallClock())


def _batch(
    seq: int, evse_ids: list[str], kw: list[float], lease_s: float = 60.0, csms: str = "csms-a"
) -> SetpointBatch:
    now = datetime.now(UTC)
    return SetpointBatch(
        csms_id=csms,
        seq=seq,
        issued_at=now,
        valid_until=now + timedelta(seconds=lease_s),
        evse_ids=evse_ids,
        power_kw=kw,
        failsafe_kw=[4.2] * len(kw),
    )


def test_session_batch_instruction_measurement_end() -> None:
    async def scenario() -> None:
        rid = uuid.uuid4()
        got: list[Telemetry] = []
        cem = _cem([rid], got)
        port = await cem.start()
        control = ev(upper_kw=(0.0, 11.0), energy_kwh=20.0)
        peer = rm(port, control, rid=rid)
        await peer.start()
        try:
            started = await until(
                lambda: [t for t in got if isinstance(t, SessionStarted)], 10, "session_started"
            )
            assert started[0].evse_id == "evse-0" and started[0].max_power_kw == 11.0
            assert started[0].energy_requested_kwh == pytest.approx(20.0, rel=1e-3)
            ids = await cem.send_batch(_batch(1, ["evse-0", "evse-9"], [7.0, 3.0]))
            assert len(ids) == 1  # evse-9 is not connected here
            await until(lambda: control.instructions, 10, "instruction at the RM")
            (ins,) = control.instructions
            (env,) = ins.power_envelopes
            first, failsafe = env.power_envelope_elements
            assert (first.upper_limit, first.lower_limit) == (7000.0, 0.0)  # W at the wire
            assert 55_000 <= first.duration.root <= 60_000  # ms until valid_until
            assert (failsafe.upper_limit, failsafe.duration.root) == (4200.0, 7_200_000)
            (rec,) = await until(
                lambda: [r for r in cem.instructions("evse-0") if r.statuses],
                10,
                "InstructionStatusUpdate",
            )
            assert rec.reception == "OK" and rec.statuses == ["ACCEPTED"] and not rec.rejected
            await peer.measure(6.5, datetime.now(UTC))
            (meter,) = await until(
                lambda: [t for t in got if isinstance(t, MeterValue)], 10, "meter_value"
            )
            assert meter.power_kw == 6.5 and meter.session_id == started[0].session_id
        finally:
            await peer.stop()
        (end,) = await until(
            lambda: [t for t in got if isinstance(t, SessionEnded)], 10, "session_ended"
        )
        assert end.session_id == started[0].session_id and end.energy_kwh >= 0.0
        assert cem.connected() == []
        await cem.close()

    asyncio.run(scenario())


def test_a_rejecting_rm_is_recorded_and_reported() -> None:
    async def scenario() -> None:
        rid = uuid.uuid4()
        got: list[Telemetry] = []
        cem = _cem([rid], got)
        port = await cem.start()
        peer = rm(port, ev(reject=True), rid=rid)
        await peer.start()
        try:
            await until(
                lambda: cem.session("evse-0") and cem.session("evse-0").session_id,  # type: ignore[union-attr]
                10,
                "session",
            )
            await cem.send_batch(_batch(1, ["evse-0"], [5.0]))
            (rec,) = await until(
                lambda: [r for r in cem.instructions("evse-0") if r.statuses], 10, "status update"
            )
            assert rec.rejected and rec.statuses == ["REJECTED"]
            assert [i.ids for i in cem.issues if i.code == "instruction_rejected"] == [
                ("evse-0", rec.instruction_id)
            ]
        finally:
            await peer.stop()
            await cem.close()

    asyncio.run(scenario())


def test_wrong_bearer_token_is_refused_and_the_right_one_accepted() -> None:
    async def scenario() -> None:
        rid = uuid.uuid4()
        cem = _cem([rid], [], token="s3cret")
        port = await cem.start()
        with pytest.raises(MediumCouldNotConnectError):
            await rm(port, ev(), rid=rid, token="wrong").start()
        with pytest.raises(MediumCouldNotConnectError):
            await rm(port, ev(), rid=rid).start()
        good = rm(port, ev(), rid=rid, token="s3cret")
        await good.start()
        await until(lambda: cem.connected() == ["evse-0"], 10, "the RM with the token")
        await good.stop()
        await cem.close()

    asyncio.run(scenario())


def test_unknown_resource_and_bad_messages_are_answered() -> None:
    async def scenario() -> None:
        cem = _cem([uuid.uuid4()], [])
        port = await cem.start()
        async with connect(f"ws://127.0.0.1:{port}") as ws:
            hello = json.loads(await ws.recv())
            assert hello["message_type"] == "Handshake" and hello["role"] == "CEM"
            await ws.send("{not json")
            bad = json.loads(await ws.recv())
            assert (bad["message_type"], bad["status"]) == ("ReceptionStatus", "INVALID_DATA")
            await ws.send("[1, 2]")  # JSON, but not an object
            bad = json.loads(await ws.recv())
            assert bad["status"] == "INVALID_DATA"
            mid = str(uuid.uuid4())
            await ws.send(json.dumps({"message_type": "PowerMeasurement", "message_id": mid}))
            bad = json.loads(await ws.recv())
            assert (bad["subject_message_id"], bad["status"]) == (mid, "INVALID_MESSAGE")
        stranger = rm(port, ev())  # a resource id the CEM does not know
        await stranger.start()
        await until(
            lambda: any(i.code == "unknown_resource" for i in cem.issues),
            10,
            "unknown_resource refused",
        )
        assert cem.connected() == []
        await stranger.stop()
        await cem.close()

    asyncio.run(scenario())


def test_stale_and_foreign_batches_are_dropped_and_publish_works_from_a_thread() -> None:
    async def scenario() -> None:
        rid = uuid.uuid4()
        cem = _cem([rid], [])
        port = await cem.start()
        control = ev()
        peer = rm(port, control, rid=rid)
        await peer.start()
        try:
            await until(
                lambda: cem.session("evse-0") and cem.session("evse-0").session_id,  # type: ignore[union-attr]
                10,
                "session",
            )
            assert await cem.send_batch(_batch(5, ["evse-0"], [6.0]))
            assert await cem.send_batch(_batch(5, ["evse-0"], [1.0])) == []  # not newer
            assert await cem.send_batch(_batch(6, ["evse-0"], [1.0], csms="csms-b")) == []
            assert cem.publish(_batch(7, ["evse-0"], [1.0], csms="csms-b")) is False
            result: list[bool] = []
            t = threading.Thread(
                target=lambda: result.append(cem.publish(_batch(8, ["evse-0"], [2.5])))
            )
            t.start()
            await until(lambda: len(control.instructions) == 2, 10, "the threaded batch")
            t.join()
            assert result == [True]
            uppers = [
                i.power_envelopes[0].power_envelope_elements[0].upper_limit
                for i in control.instructions
            ]
            assert uppers == [6000.0, 2500.0]
        finally:
            await peer.stop()
            await cem.close()

    asyncio.run(scenario())


def test_a_reconnect_replaces_the_older_link_and_ends_its_session() -> None:
    async def scenario() -> None:
        rid = uuid.uuid4()
        got: list[Telemetry] = []
        cem = _cem([rid], got)
        port = await cem.start()
        first = rm(port, ev(), rid=rid)
        await first.start()
        s1 = await until(lambda: (s := cem.session("evse-0")) and s.session_id, 10, "first")
        second = rm(port, ev(), rid=rid)
        await second.start()
        s2 = await until(
            lambda: (s := cem.session("evse-0")) and s.session_id != s1 and s.session_id,
            10,
            "the second connection's session",
        )
        ended = await until(
            lambda: [t for t in got if isinstance(t, SessionEnded)], 10, "the older session ended"
        )
        assert [e.session_id for e in ended] == [s1]
        assert cem.connected() == ["evse-0"]
        ids = await cem.send_batch(_batch(1, ["evse-0"], [4.0]))
        await until(lambda: second.control.instructions, 10, "instruction on the new link")
        assert len(ids) == 1 and not first.control.instructions and s2
        await first.stop()
        await second.stop()
        await cem.close()

    asyncio.run(scenario())


def test_a_plan_envelope_goes_out_one_element_per_step() -> None:
    from aggregator.pebc import PowerEnvelope

    async def scenario() -> None:
        rid = uuid.uuid4()
        cem = _cem([rid], [])
        port = await cem.start()
        control = ev(upper_kw=(0.0, 11.0))
        peer = rm(port, control, rid=rid)
        await peer.start()
        try:
            await until(lambda: (s := cem.session("evse-0")) and s.session_id, 10, "session")
            start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=15)
            env = PowerEnvelope.of(start, 900.0, [0.0, 0.0, 0.0], [11.0, 3.7, 7.4])
            assert await cem.send_plan("evse-0", env) is not None
            assert await cem.send_plan("evse-9", env) is None  # not connected
            (ins,) = await until(lambda: control.instructions, 10, "plan instruction")
            assert ins.execution_time == start
            els = ins.power_envelopes[0].power_envelope_elements
            assert [(e.duration.root, e.upper_limit) for e in els] == [
                (900_000, 11000.0),
                (900_000, 3700.0),
                (900_000, 7400.0),
            ]
        finally:
            await peer.stop()
            await cem.close()

    asyncio.run(scenario())
