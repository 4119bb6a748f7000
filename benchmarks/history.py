"""History benchmark: fast-loop latency with and without the InfluxDB history sink, same run.

What is measured: the wall time (``time.perf_counter_ns``) of one fast-loop run inside a
replica, ``Service.handle(frequency record)`` = decode + dispatch for all N EVSEs + one
setpoint batch per CSMS handed to the sink + the service's events emitted. Two services
run in this one process on the same topology and the same N sessions:

* **without**: events go to the Prometheus :class:`~adapters.ops.metrics.Metrics` only;
* **with**: events go to the same kind of ``Metrics`` *and* an
  :class:`~adapters.ops.history.InfluxHistory` writing to a real InfluxDB (started with
  ``scripts/influxdb.sh`` unless ``--url`` is given), its setpoint sink teed for the
  per-site sums, and ``history.sample`` called once a second between records as
  ``gridflex serve`` does. The history thread converts and writes concurrently (it
  competes for the GIL and the 2 cores: that is the cost being measured).

The started ``influxd`` is reniced to ``--influxd-nice`` (19): on these 2 shared cores the
database stands in for a server on another machine and should not take the service's
CPU. ``--null-writer`` keeps the sink and its thread (every point converted) but writes
nowhere: the sink's own cost without any database.

The two are measured in alternating blocks (``--block`` samples each: A B A B ...) so
that load from other processes hits both alike. Between frequency samples each service
applies ``--meters`` meter values (SessionChanged events: the history sink's EVSE → site
map) and waits ``--interval-ms``. Reported: p50/p99/max per configuration, the p99 and p50
ratios (with / without; ``--control`` runs the same with no sink on either side, the
ratio's noise floor), points written and dropped by the sink, the cost of
``sample()`` on the loop (not part of the fast loop: it runs between records), load.

Usage (from the repo root)::

    python benchmarks/history.py --evses 10000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from _machine import machine_info

from adapters.ops.history import HistorySettings, InfluxHistory
from adapters.ops.metrics import Metrics
from adapters.stream.inprocess import SystemClock
from aggregator.interfaces import Record, SetpointSink, Topics
from aggregator.messages import FrequencySample, MeterValue, SessionStarted, encode
from aggregator.service.events import EventSink, FanOut
from aggregator.service.replica import Service, ServiceConfig
from aggregator.topology import Feeder, Site, Topology
from markets.activation import ReserveActivation

REPO = Path(__file__).resolve().parent.parent
REPO_CACHE = Path(
    os.environ.get("GRIDFLEX_INFLUXDB_HOME")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gridflex" / "influxdb"
)
TOPICS = Topics()


class NullWriter:
    """Takes the line protocol and discards it: the sink's own cost, no database."""

    def __init__(self) -> None:
        self.lines = 0

    def write(self, points: Sequence[str]) -> None:
        self.lines += len(points)

    def close(self) -> None:
        return None


class CountingSink:
    """Keeps only a count (a list of 10 000-EVSE batches would grow without bound)."""

    def __init__(self) -> None:
        self.n = 0

    def publish(self, batch: object) -> None:
        self.n += 1


def topology(n_evses: int, csms: int) -> Topology:
    sites = max(1, n_evses // 20)
    feeders = tuple(Feeder(f"f{i:02d}", 1e6) for i in range(5))
    return Topology(
        feeders,
        tuple(
            Site(f"s{i:04d}", f"f{i % 5:02d}", 150.0, csms_id=f"c{i % csms}") for i in range(sites)
        ),
    )


def build(topo: Topology, events: EventSink, sink: SetpointSink, n: int, t0: datetime) -> Service:
    svc = Service(
        topo,
        ServiceConfig(reserve_kw=0.5 * n),
        clock=SystemClock(),
        sink=sink,
        events=events,
        activation=ReserveActivation(),
    )
    for i in range(n):
        site = topo.sites[i // 20 % len(topo.sites)]
        msg = SessionStarted(
            ts=t0,
            feeder_id=site.feeder_id,
            site_id=site.site_id,
            evse_id=f"e{i:05d}",
            csms_id=site.csms_id,
            session_id=f"x{i:05d}",
            departure=t0 + timedelta(hours=8),
            energy_requested_kwh=30.0,
            max_power_kw=11.0,
        )
        svc.handle(Record(TOPICS.telemetry, site.feeder_id, encode(msg)))
    return svc


def start_influx() -> tuple[str, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "influxdb.sh"), "start", port],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if out.returncode != 0:
        raise SystemExit(f"scripts/influxdb.sh start failed:\n{out.stderr[-3000:]}")
    return out.stdout.strip().splitlines()[-1], port


def pct(ns: list[int], q: float) -> float:
    return float(np.percentile(np.asarray(ns), q)) / 1e6


def run(args: argparse.Namespace, url: str) -> dict[str, object]:
    n, rng = args.evses, np.random.default_rng(0)
    topo = topology(n, args.csms)
    t0 = datetime.now(UTC)
    writer = NullWriter() if args.null_writer else None
    history = InfluxHistory(
        topo,
        HistorySettings(url=url, bucket="gridflex"),
        writer=writer,
        registry=Metrics().registry,
    ).start()
    base = build(topo, Metrics(), CountingSink(), n, t0)
    if args.control:  # A/A: the second service has no history either (the noise floor)
        with_h = build(topo, Metrics(), CountingSink(), n, t0)
    else:
        with_h = build(topo, FanOut([Metrics(), history]), history.tee(CountingSink()), n, t0)
    times: dict[str, list[int]] = {"without": [], "with": []}
    sample_ns: list[int] = []
    meter_kwh = dict.fromkeys(range(n), 0.0)
    interval_s = args.interval_ms / 1000
    for block in range(2 * args.samples // args.block):
        name, svc = ("without", base) if block % 2 == 0 else ("with", with_h)
        for _ in range(args.block):
            now = datetime.now(UTC)
            for i in rng.integers(0, n, args.meters):
                meter_kwh[int(i)] += 0.01
                site = topo.sites[int(i) // 20 % len(topo.sites)]
                mv = MeterValue(
                    ts=now, feeder_id=site.feeder_id, evse_id=f"e{int(i):05d}",
                    session_id=f"x{int(i):05d}", energy_kwh=meter_kwh[int(i)],
                    power_kw=float(rng.uniform(0, 11)),
                )  # fmt: skip
                svc.handle(Record(TOPICS.telemetry, site.feeder_id, encode(mv)))
            hz = 50.0 + float(rng.normal(0, 0.05))
            rec = Record(TOPICS.frequency, None, encode(FrequencySample(ts=now, hz=hz)))
            t = time.perf_counter_ns()
            svc.handle(rec)
            times[name].append(time.perf_counter_ns() - t)
            if svc is with_h and not args.control:
                t = time.perf_counter_ns()
                if history.sample(svc):
                    sample_ns.append(time.perf_counter_ns() - t)
            time.sleep(interval_s)
    history.close()
    base.close()
    with_h.close()
    out: dict[str, object] = {"evses": n, "csms": args.csms, "sites": len(topo.sites)}
    out["control"] = args.control
    out["writer"] = "null" if args.null_writer else "influxdb"
    out["influxd_nice"] = args.influxd_nice if args.url is None and not args.null_writer else None
    for name, ns in times.items():
        out[name] = {
            "samples": len(ns),
            "p50_ms": round(pct(ns, 50), 4),
            "p99_ms": round(pct(ns, 99), 4),
            "max_ms": round(max(ns) / 1e6, 4),
        }
    w, wo = out["with"], out["without"]
    assert isinstance(w, dict) and isinstance(wo, dict)
    out["p99_ratio_with_to_without"] = round(w["p99_ms"] / wo["p99_ms"], 3)
    out["p50_ratio_with_to_without"] = round(w["p50_ms"] / wo["p50_ms"], 3)
    out["history"] = {
        "points_written": history.written,
        "dropped": history.dropped,
        "write_errors": history.write_errors,
        "sample_calls": len(sample_ns),
        "sample_p50_ms": round(pct(sample_ns, 50), 3) if sample_ns else None,
        "sample_max_ms": round(max(sample_ns) / 1e6, 3) if sample_ns else None,
    }
    out["interval_ms"], out["meters_per_sample"], out["block"] = (
        args.interval_ms,
        args.meters,
        args.block,
    )
    out["machine"] = machine_info()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evses", type=int, default=10_000)
    ap.add_argument("--csms", type=int, default=4)
    ap.add_argument("--samples", type=int, default=1500, help="timed samples per configuration")
    ap.add_argument("--block", type=int, default=100)
    ap.add_argument("--meters", type=int, default=50, help="meter values between samples")
    ap.add_argument("--interval-ms", type=float, default=10.0)
    ap.add_argument("--url", help="an InfluxDB with database gridflex (else one is started)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--null-writer",
        action="store_true",
        help="the sink converts everything but writes nowhere (no database)",
    )
    ap.add_argument(
        "--influxd-nice",
        type=int,
        default=19,
        help="niceness of the started influxd: on 2 shared cores the database stands in "
        "for a server elsewhere and should not take the service's CPU",
    )
    ap.add_argument(
        "--control", action="store_true", help="A/A run: 'with' has no history sink either"
    )
    args = ap.parse_args(argv)
    port = None
    url = args.url
    if args.null_writer:
        url = url or "http://unused"
    elif url is None:
        url, port = start_influx()
        pid = (REPO_CACHE / "run" / port / "influxd.pid").read_text().strip()
        renice = ["renice", "-n", str(args.influxd_nice), "-p", pid]
        subprocess.run(renice, check=True, capture_output=True)
    try:
        res = run(args, url)
    finally:
        if port is not None:
            subprocess.run(
                ["bash", str(REPO / "scripts" / "influxdb.sh"), "stop", port, "--purge"],
                check=False,
                capture_output=True,
            )
    print(json.dumps(res) if args.json else json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GRIDFLEX_LOG_FORMAT", "console")
    raise SystemExit(main())
