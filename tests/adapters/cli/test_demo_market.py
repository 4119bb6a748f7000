"""The demo's market part on a small scenario: bid (or why none), 1 s record, settlement."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from adapters.cli.demo_market import TickRecorder, demo_market
from adapters.files.scenario import load_scenario
from adapters.report.html import render_html
from adapters.stream.inprocess import InProcessBus
from aggregator.sim.scenario import Scenario
from aggregator.sim.simulation import run_simulation
from markets.activation import ReserveActivation
from markets.record import record_from_csv


def _depot(tmp: Path, *, tick_s: float) -> Scenario:
    """Six 11 kW cars at a depot on the SimBench rural feeder, 18:00–19:00, FCR 20 kW;
    the frequency steps to 49.9 Hz at 18:20 for 10 min."""
    sessions = "\n".join(
        f"  - {{evse_id: e{i}, site_id: depot, arrival: 2026-01-14T18:00:00Z, "
        f"departure: 2026-01-15T02:00:00Z, energy_kwh: 60, max_power_kw: 11}}"
        for i in range(6)
    )
    (tmp / "freq.csv").write_text(
        "time,hz\n"
        + "".join(
            f"2026-01-14T18:{m:02d}:00Z,{49.9 if 20 <= m < 30 else 50.0}\n" for m in range(60)
        ),
        encoding="utf-8",
    )
    path = tmp / "depot.yaml"
    path.write_text(
        f"""name: depot
feeder: 1-LV-rural1--0-sw
start: 2026-01-14T18:00:00Z
end: 2026-01-14T19:00:00Z
step_s: 900
tick_s: {tick_s}
reserve_kw: 20
frequency: freq.csv
sites:
  - {{id: depot, bus: "LV1.101 Bus 4", connection_limit_kw: 150, csms: csms-a}}
sessions:
{sessions}
""",
        encoding="utf-8",
    )
    return load_scenario(path)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Scenario, TickRecorder]:
    scenario = _depot(tmp_path_factory.mktemp("depot"), tick_s=10.0)
    recorder = TickRecorder(scenario.name, scenario)
    run_simulation(scenario, InProcessBus(), activation=ReserveActivation(), record=recorder)
    return scenario, recorder


def test_each_tick_fills_the_seconds_of_its_tick_and_nothing_else(
    run: tuple[Scenario, TickRecorder],
) -> None:
    _, recorder = run
    rec = recorder.record()
    assert rec.seconds == 3600 and rec.gaps() == []
    held = rec.measured_kw.reshape(-1, 10)  # 10 s ticks: ten equal seconds each
    assert np.all(held == held[:, :1])
    assert not np.all(held[:, 0] == held[0, 0])  # the fleet's power does change between ticks


def test_the_pool_bids_nothing_says_why_and_settles_its_record(
    run: tuple[Scenario, TickRecorder], tmp_path: Path
) -> None:
    scenario, recorder = run
    m = demo_market(scenario, recorder, tmp_path, scenarios=20)
    s = m.summary
    assert s["fcr_bid_offers"] == 0 and s["fcr_bid_offered_mw"] == 0
    assert "no bid" in str(s["fcr_bid_no_bid_reason"])
    assert 0.0 <= float(s["fcr_bid_largest_firm_mw"]) < 1.0  # type: ignore[arg-type]
    assert s["record_seconds"] == 3600 and s["record_gaps"] == 0 and s["record_sample_s"] == 10
    assert 0.0 <= float(s["fcr_availability"]) <= 1.0  # type: ignore[arg-type]
    assert 0.0 <= float(s["settlement_inside_share"]) <= 1.0  # type: ignore[arg-type]
    # 49.9 Hz for 10 min, 10 mHz deadband: 20 kW × 90/190 less consumption for 600 s
    assert s["settlement_ordered_kwh"] == pytest.approx(-20.0 * 90 / 190 * 600 / 3600, abs=1e-3)
    assert float(s["settlement_delivered_kwh"]) < -1.0  # type: ignore[arg-type]
    names = {p.name for p in m.paths}
    assert {"bid-fcr-2026-01-14.json", "record.csv", "settlement.csv", "settlement.html"} <= names
    doc = json.loads((tmp_path / "bid-fcr-2026-01-14.json").read_text())
    assert doc["offers"] == [] and doc["reasons"][-1] == s["fcr_bid_no_bid_reason"]
    back = record_from_csv((tmp_path / "record.csv").read_text())
    assert back.seconds == 3600 and np.array_equal(back.measured_kw, recorder.record().measured_kw)
    page = render_html("t", {}, [], sections=[m.section])
    assert "no bid, because" in page and "Activation around the largest order" in page
    assert page.count("<svg") >= 3
