"""Fleet benchmark: apply 100 000 meter values, this tree's FleetState against a baseline.

The baseline is the parallel-arrays ``aggregator/fleet.py`` of a git revision (default
``9869b6f``, before the fleet became one structured dtype), loaded from ``git show`` into
a temporary module, so both run in the same process on the same messages. Messages are
built (validated) before the clock starts: only ``FleetState.apply`` is timed. Rounds
alternate baseline/current; the medians and their ratio are reported.

Usage (from the repo root)::

    python benchmarks/fleet_apply.py --json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

from aggregator.fleet import FleetState
from aggregator.messages import MeterValue, SessionStarted
from aggregator.topology import Feeder, Site, Topology

T0 = datetime(2025, 3, 1, tzinfo=UTC)


def _baseline(rev: str) -> ModuleType:
    text = subprocess.run(
        ["git", "show", f"{rev}:aggregator/fleet.py"], check=True, capture_output=True, text=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "fleet_baseline.py"
    path.write_text(text, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("fleet_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _messages(evses: int, meters: int) -> tuple[Topology, list[Any], list[Any]]:
    topo = Topology(
        (Feeder("F1", 1e6),), tuple(Site(f"S{s}", "F1", 1e4, None, "C") for s in range(50))
    )
    starts = [
        SessionStarted(
            ts=T0,
            feeder_id="F1",
            site_id=f"S{e % 50}",
            evse_id=f"E{e}",
            csms_id="C",
            session_id=f"X{e}",
            departure=T0 + timedelta(hours=8),
            energy_requested_kwh=40.0,
            max_power_kw=11.0,
        )
        for e in range(evses)
    ]
    values = [
        MeterValue(
            ts=T0 + timedelta(seconds=1 + k // evses),
            feeder_id="F1",
            evse_id=f"E{k % evses}",
            session_id=f"X{k % evses}",
            energy_kwh=0.001 * (k // evses),
            power_kw=7.4,
        )
        for k in range(meters)
    ]
    return topo, starts, values


def _run(cls: Any, topo: Topology, starts: list[Any], values: list[Any]) -> float:
    fleet = cls(topo)
    for msg in starts:
        fleet.apply(msg)
    apply = fleet.apply
    t0 = time.perf_counter()
    for msg in values:
        apply(msg)
    elapsed = time.perf_counter() - t0
    assert fleet.counters["applied"] == len(starts) + len(values), fleet.counters
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evses", type=int, default=10_000)
    ap.add_argument("--meters", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--baseline-rev", default="9869b6f")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    old = _baseline(args.baseline_rev).FleetState
    topo, starts, values = _messages(args.evses, args.meters)
    base: list[float] = []
    cur: list[float] = []
    for _ in range(args.rounds):
        base.append(_run(old, topo, starts, values))
        cur.append(_run(FleetState, topo, starts, values))
    b, c = statistics.median(base), statistics.median(cur)
    out = {
        "evses": args.evses,
        "meter_values": args.meters,
        "rounds": args.rounds,
        "baseline_rev": args.baseline_rev,
        "baseline_s": round(b, 4),
        "current_s": round(c, 4),
        "baseline_msgs_per_s": round(args.meters / b),
        "current_msgs_per_s": round(args.meters / c),
        "current_over_baseline_time": round(c / b, 3),
        "loadavg_1m": os.getloadavg()[0],
        "python": sys.version.split()[0],
    }
    print(json.dumps(out, indent=2) if args.json else out)


if __name__ == "__main__":
    main()
