"""Edge benchmark: one setpoint batch for N EVSEs → every TxProfile acknowledged, and
telemetry throughput through the edge.

What is measured (the shipped edge: :class:`adapters.csms.edge.runner.EdgeRunner` with the
``ocpp`` target, its durable buffer and the embedded upstream bus):

* **batch → profiles acknowledged**: from a new setpoint batch for all N EVSEs on the bus
  to the moment the endpoint holds every EVSE's new limit as accepted — decode, CSAC
  (lease, site balancing), one ``SetChargingProfile`` (TxProfile) per EVSE and the
  station's ``Accepted`` answer to every one of them. ``EdgeRunner.step()`` runs back to
  back until then (a station slower than ``phase_timeout_s`` finishes in the background
  and a site with an unconfirmed tightening loosens on a later cycle, so one batch may
  take more than one cycle; the cycles used are reported). Setpoints alternate between
  two values a whole number of amperes apart (6.9 / 5.52 kW at 3 × 230 V = 10 A / 8 A),
  so every EVSE is past the deadband every batch and no rounding report is written; half
  the batches tighten, half loosen.
* **telemetry throughput**: the stations send ``k`` TransactionEvent(Updated) with meter
  values per EVSE as fast as their ChargePoints allow; counted from the command to the
  moment every resulting ``meter_value`` record is on the upstream bus (endpoint →
  buffer on disk → drain), in records per second.

The simulated stations (the ``ocpp`` package's ChargePoint, station side:
``tests/adapters/csms/stations.py``) run in a child process of this script, so the edge
process is measured alone; security profile 1 (HTTP Basic auth), loopback. Warm-up
batches (the first profile of every EVSE also does a GetCompositeSchedule check) are not
timed.

With ``--s2 M`` the same batch path is measured for the S2 CEM (``adapters.csms.s2``):
M s2-python resource managers in a child process; time from ``send_batch`` to every RM's
``InstructionStatusUpdate`` ACCEPTED having arrived at the CEM.

Usage (from the repo root)::

    python benchmarks/edge.py --stations 500 --evses-per-station 2 --batches 200 --json
    python benchmarks/edge.py --s2 1000 --batches 200 --json     # the S2 path alone
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.adapters.csms.stations, and a checkout without install

from _machine import machine_info  # noqa: E402

from adapters.csms.edge.runner import EdgeRunner  # noqa: E402
from adapters.csms.edge.settings import load_edge_settings  # noqa: E402
from adapters.csms.edge.upstream import EmbeddedUpstream  # noqa: E402
from adapters.stream.inprocess import InProcessBus, SystemClock  # noqa: E402
from aggregator.interfaces import DEFAULT_TOPICS  # noqa: E402
from aggregator.messages import SetpointBatch, encode  # noqa: E402

CSMS = "bench"
KW = (6.9, 5.52)  # 10 A and 8 A at 3 x 230 V: no rounding, always past the deadband


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def _summary(ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(ms), 2),
        "p90_ms": round(_pct(ms, 0.90), 2),
        "p99_ms": round(_pct(ms, 0.99), 2),
        "max_ms": round(max(ms), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


def _batch(seq: int, evses: list[str], kw: float) -> SetpointBatch:
    now = datetime.now(UTC)
    return SetpointBatch(
        csms_id=CSMS,
        seq=seq,
        issued_at=now,
        valid_until=now + timedelta(seconds=600),
        evse_ids=evses,
        power_kw=[kw] * len(evses),
        failsafe_kw=[4.2] * len(evses),
    )


async def _lines(stream: asyncio.StreamReader, want: str, timeout_s: float) -> str:
    line = (await asyncio.wait_for(stream.readline(), timeout_s)).decode().strip()
    if not line.startswith(want):
        raise RuntimeError(f"child said {line!r}, expected {want}")
    return line


# --------------------------------------------------------------------------- OCPP child


async def _ocpp_child(url: str, stations: int, evses: int) -> None:
    from tests.adapters.csms.stations import open_station

    sims = []
    for i in range(stations):
        sid = f"cs-{i:04d}"
        st, _task = await open_station(url, sid, password=f"pw-{sid}")
        await st.boot(evses)
        sims.append(st)
    wh: dict[tuple[int, int], float] = {}
    for i, st in enumerate(sims):
        for e in range(1, evses + 1):
            await st.tx("Started", e, f"tx-{i}-{e}", 0.0, 0.0)
            wh[(i, e)] = 0.0
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        cmd = (await loop.run_in_executor(None, sys.stdin.readline)).split()
        if not cmd or cmd[0] == "QUIT":
            return

        async def meter(i: int, st: Any, k: int) -> None:
            for _ in range(k):
                for e in range(1, evses + 1):
                    wh[(i, e)] += 10.0
                    await st.tx("Updated", e, f"tx-{i}-{e}", wh[(i, e)], 6900.0)

        t0 = time.perf_counter()
        await asyncio.gather(*(meter(i, st, int(cmd[1])) for i, st in enumerate(sims)))
        print(f"SENT {time.perf_counter() - t0:.3f}", flush=True)


async def _ocpp(args: argparse.Namespace) -> dict[str, Any]:
    n_st, per = args.stations, args.evses_per_station
    sids = [f"cs-{i:04d}" for i in range(n_st)]
    sites = [
        {"id": f"site-{j}", "feeder": f"f-{j % 5}", "cap_kw": 10_000.0, "stations": sids[j::50]}
        for j in range(min(50, n_st))
    ]
    tmp = tempfile.mkdtemp(prefix="gridflex-edge-bench-")
    settings = load_edge_settings(
        None,
        csms_id=CSMS,
        edge_id="bench-edge",
        state_dir=tmp,
        targets=["ocpp"],
        ocpp={
            "port": 0,
            "security_profile": 1,
            "needs_wait_s": 0,
            "min_interval_s": 0,
            "call_timeout_s": 120,
        },
        sites=sites,
        stations=[{"id": s, "password": f"pw-{s}", "max_power_kw": 22.0} for s in sids],
    )
    bus = InProcessBus()
    runner = EdgeRunner(settings, SystemClock(), EmbeddedUpstream(bus, CSMS))
    await runner.start()
    target: Any = runner.targets[0]
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--ocpp-child",
        f"ws://127.0.0.1:{target.port}/ocpp",
        "--stations",
        str(n_st),
        "--evses-per-station",
        str(per),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None and child.stdin is not None
    try:
        await _lines(child.stdout, "READY", 600)
        n = n_st * per
        evses = [f"{s}/{e}" for s in sids for e in range(1, per + 1)]
        deadline = time.monotonic() + 120
        while len(target.sessions(datetime.now(UTC))) < n:
            if time.monotonic() > deadline:
                raise RuntimeError("not every session open at the edge")
            await asyncio.sleep(0.05)
        seq = 0
        for _ in range(args.warmup):
            seq += 1
            bus.publish(DEFAULT_TOPICS.setpoints, CSMS, encode(_batch(seq, evses, KW[seq % 2])))
            await runner.step()
        ms: list[float] = []
        cycles: list[int] = []
        ep = target.endpoint
        keys = [(s, e) for s in sids for e in range(1, per + 1)]

        def acked(kw: float) -> bool:  # the endpoint records a limit only once Accepted
            return all(
                (got := ep.policies[s].sent.get(e)) is not None and abs(got[0] - kw) < 1e-9
                for s, e in keys
            )

        for _ in range(args.batches):
            seq += 1
            kw = KW[seq % 2]
            bus.publish(DEFAULT_TOPICS.setpoints, CSMS, encode(_batch(seq, evses, kw)))
            t0 = time.perf_counter()
            k = 0
            while True:  # cycles back to back until every profile is acknowledged
                await runner.step()
                k += 1
                if acked(kw):
                    break
                await asyncio.sleep(0.005)
                if time.perf_counter() - t0 > 300:
                    raise RuntimeError(f"batch {seq}: not every profile acknowledged in 300 s")
            ms.append((time.perf_counter() - t0) * 1000)
            cycles.append(k)
        # telemetry throughput through the edge
        runner.drain()
        before = len(bus.records(DEFAULT_TOPICS.telemetry))
        expect = n * args.meter_per_evse
        child.stdin.write(f"METER {args.meter_per_evse}\n".encode())
        await child.stdin.drain()
        t0 = time.perf_counter()
        while len(bus.records(DEFAULT_TOPICS.telemetry)) - before < expect:
            await asyncio.sleep(0.02)
            runner.drain()
            if time.perf_counter() - t0 > 600:
                raise RuntimeError("telemetry did not all arrive upstream")
        tel_s = time.perf_counter() - t0
        sent = await _lines(child.stdout, "SENT", 60)
        child.stdin.write(b"QUIT\n")
        await child.stdin.drain()
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()
        await runner.stop()
    return {
        "path": "ocpp",
        "stations": n_st,
        "evses": n,
        "batches": args.batches,
        "batch_to_all_acked": _summary(ms),
        "edge_cycles_per_batch": {"median": statistics.median(cycles), "max": max(cycles)},
        "telemetry": {
            "records": expect,
            "seconds": round(tel_s, 3),
            "records_per_s": round(expect / tel_s, 1),
            "stations_send_s": float(sent.split()[1]),
        },
    }


# --------------------------------------------------------------------------- S2 child


async def _s2_child(url: str, count: int, first: int) -> None:
    from adapters.csms.s2.simrm import SimPebcControl, SimRm
    from aggregator.pebc import PowerRange

    rms = []
    for i in range(count):
        ctl = SimPebcControl(
            PowerRange(0.0, 11.0),
            PowerRange(0.0, 0.0),
            20.0,
            30.0,
            datetime.now(UTC) + timedelta(hours=8),
        )
        rm = SimRm(url, uuid.UUID(int=first + i), ctl)
        await rm.start()
        rms.append(rm)
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)
    for rm in rms:
        await rm.stop()


async def _s2(args: argparse.Namespace) -> dict[str, Any]:
    from adapters.csms.s2 import S2Cem, S2Resource, S2Settings

    m = args.s2
    resources = tuple(
        S2Resource(str(uuid.UUID(int=1 + i)), f"rm-{i}/1", f"site-{i % 50}", f"f-{i % 5}")
        for i in range(m)
    )
    cem = S2Cem(S2Settings(CSMS, resources), lambda _t: None, SystemClock())
    port = await cem.start()
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--s2-child",
        f"ws://127.0.0.1:{port}",
        "--s2",
        str(m),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None and child.stdin is not None
    evses = [r.evse_id for r in resources]
    try:
        await _lines(child.stdout, "READY", 600)
        deadline = time.monotonic() + 120
        while sum(1 for e in evses if (s := cem.session(e)) and s.session_id) < m:
            if time.monotonic() > deadline:
                raise RuntimeError("not every RM has a session")
            await asyncio.sleep(0.05)

        async def one(seq: int) -> tuple[float, int]:
            t0 = time.perf_counter()
            ids = await cem.send_batch(_batch(seq, evses, KW[seq % 2]))
            want = set(ids)
            records = [  # each RM's newest instruction record: filled as its statuses arrive
                next(reversed(s.instructions.values())) for e in evses if (s := cem.session(e))
            ]
            assert {r.instruction_id for r in records} == want
            while sum(1 for r in records if r.statuses) < len(want):
                await asyncio.sleep(0.002)
            return (time.perf_counter() - t0) * 1000, len(ids)

        seq = 0
        for _ in range(args.warmup):
            seq += 1
            await one(seq)
        ms: list[float] = []
        short = 0
        for _ in range(args.batches):
            seq += 1
            dt, k = await one(seq)
            ms.append(dt)
            short += k != m
        child.stdin.write(b"QUIT\n")
        await child.stdin.drain()
    finally:
        await asyncio.wait_for(child.wait(), 60)
        await cem.close()
    return {
        "path": "s2",
        "resource_managers": m,
        "batches": args.batches,
        "batches_not_fully_sent": short,
        "batch_to_all_accepted": _summary(ms),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stations", type=int, default=500)
    ap.add_argument("--evses-per-station", type=int, default=2)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--meter-per-evse", type=int, default=20)
    ap.add_argument("--s2", type=int, default=0, help="benchmark the S2 path with M RMs")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--ocpp-child", help=argparse.SUPPRESS)
    ap.add_argument("--s2-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ocpp_child:
        asyncio.run(_ocpp_child(args.ocpp_child, args.stations, args.evses_per_station))
        return
    if args.s2_child:
        asyncio.run(_s2_child(args.s2_child, args.s2, 1))
        return
    started = datetime.now(UTC)
    result = asyncio.run(_s2(args) if args.s2 else _ocpp(args))
    out = {
        "benchmark": "edge",
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]]),
        "started_utc": started.isoformat(timespec="seconds"),
        "machine": machine_info(),
        **result,
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(out)


if __name__ == "__main__":
    main()
