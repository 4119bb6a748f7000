"""The ``gridflex`` command line, end to end on the README's example scenario.

The example (20 sessions, 20 h at 60 s ticks) is simulated once per module; the
``--progress`` test runs a two-hour cut of it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from adapters.cli.main import app

EXAMPLE_DIR = Path(__file__).parents[2] / "data" / "scenarios" / "rural"
EXAMPLE = EXAMPLE_DIR / "scenario.yaml"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, Path]:
    out = tmp_path_factory.mktemp("rural-out")
    result = CliRunner().invoke(app, ["simulate", str(EXAMPLE), "--out", str(out), "--json"])
    return result, out


@pytest.fixture(scope="module")
def summary(simulated: tuple[Result, Path]) -> dict[str, Any]:
    result, _ = simulated
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert isinstance(doc, dict)
    return doc


def test_simulate_summary(summary: dict[str, Any]) -> None:
    assert summary["scenario"] == "rural-evening"
    assert summary["feeder"] == "1-LV-rural1--0-sw"
    assert summary["sessions"] == 20 and summary["sites"] == 2
    assert summary["max_limit_excess_kw"] == 0
    assert summary["energy_delivered_kwh"] <= summary["energy_requested_kwh"] + 1e-6
    assert summary["energy_delivered_kwh"] <= summary["energy_bound_kwh"] + 1e-6
    assert summary["energy_delivered_kwh"] >= 0.95 * summary["energy_bound_kwh"]
    assert summary["fcr_reserve_kw"] == 10 and summary["fcr_activations"] > 0
    assert summary["tick_s"] == 60 and summary["step_s"] == 900
    assert summary["rejected_messages"] == 0
    for key in ("evses", "plan_solve_s_median", "fast_loop_ms_p50", "fast_loop_ms_p99"):
        assert key in summary


def test_simulate_writes_outputs(simulated: tuple[Result, Path], summary: dict[str, Any]) -> None:
    _, out = simulated
    assert {p.name for p in out.iterdir()} >= {
        "setpoints.csv",
        "sites.csv",
        "summary.json",
        "report.html",
    }
    assert json.loads((out / "summary.json").read_text(encoding="utf-8")) == summary
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<svg" in html and "rural-evening" in html


def test_setpoints_csv(simulated: tuple[Result, Path]) -> None:
    _, out = simulated
    lines = (out / "setpoints.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "time,evse_id,power_kw"
    rows = _rows(out / "setpoints.csv")
    assert rows
    evses = {r["evse_id"] for r in _rows(EXAMPLE_DIR / "sessions.csv")}
    for r in rows:
        assert r["evse_id"] in evses
        assert r["time"].endswith("Z")
        assert -11.0 - 1e-6 <= float(r["power_kw"]) <= 11.0 + 1e-6
    assert any(float(r["power_kw"]) > 0 for r in rows)


def test_sites_csv_within_limits(simulated: tuple[Result, Path]) -> None:
    _, out = simulated
    rows = _rows(out / "sites.csv")
    assert list(rows[0]) == [
        "time",
        "site_id",
        "power_kw_mean",
        "power_kw_max",
        "limit_kw",
        "excess_kw",
    ]
    assert len(rows) == 80 * 2  # 20 h of 15-min steps × 2 sites
    assert {r["site_id"] for r in rows} == {"farm", "school"}
    for r in rows:
        assert float(r["power_kw_max"]) <= float(r["limit_kw"]) + 1e-6, r
        assert float(r["excess_kw"]) == 0.0
    # the school's DSO limit (06:00–07:30, 20 kW) shows up as its cap
    capped = [r for r in rows if r["site_id"] == "school" and float(r["limit_kw"]) == 20.0]
    assert [r["time"] for r in capped[:1]] == ["2026-01-15T06:00:00Z"] and len(capped) == 6


def test_simulate_table_output(tmp_path: Path) -> None:
    """Without ``--json`` the summary is a table; without ``--out`` nothing is written."""
    short = _short_scenario(tmp_path)
    result = CliRunner().invoke(app, ["simulate", str(short)])
    assert result.exit_code == 0, result.output
    assert "largest excess over a limit (kW)" in result.stdout and "{" not in result.stdout
    assert "energy delivered (kWh)" in result.stdout  # words and units, not raw keys
    assert sorted(p.name for p in tmp_path.iterdir()) == ["short.yaml"]


def _short_scenario(folder: Path) -> Path:
    """The example cut to its first two hours, its CSVs referenced by absolute path."""
    doc = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    doc["end"] = "2026-01-14T14:00:00Z"
    for key in ("sessions", "frequency", "prices"):
        doc[key] = str(EXAMPLE_DIR / doc[key])
    path = folder / "short.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_simulate_progress(tmp_path: Path) -> None:
    short = _short_scenario(tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["simulate", str(short), "--progress", "--json", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "120/120" in result.stderr and "tick" in result.stderr  # 2 h of 60 s ticks
    assert json.loads(result.stdout)["max_limit_excess_kw"] == 0  # stdout stays clean
    assert (out / "summary.json").exists()


def test_simulate_broken_scenario_exits_2(tmp_path: Path) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    doc["sites"][0]["bus"] = "LV1.101 Bus 99"
    doc["weights"] = {"bogus_eur": 1}
    doc["sessions"] = "sessions.csv"
    doc["frequency"] = str(EXAMPLE_DIR / "frequency.csv")
    doc["prices"] = str(EXAMPLE_DIR / "prices.csv")
    (tmp_path / "sessions.csv").write_text(
        "evse_id,site_id,arrival,departure,energy_kwh,max_power_kw,min_power_kw\n"
        "a,school,2026-01-14T12:00:00,2026-01-14T15:00:00Z,10,11,\n"
        "b,school,2026-01-14T12:00:00Z,2026-01-14T15:00:00Z,-3,11,\n",
        encoding="utf-8",
    )
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    result = CliRunner().invoke(app, ["simulate", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    err = result.stderr
    assert "error: the input was rejected" in err
    assert "placements.bus[farm]: unknown bus 'LV1.101 Bus 99'" in err
    assert "weights: unknown key 'bogus_eur'" in err
    assert "sessions.csv:2.arrival: needs a UTC offset" in err
    assert "sessions.energy_kwh[b]" in err
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert not (tmp_path / "o").exists()


def test_simulate_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["simulate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


def test_schema_export(tmp_path: Path) -> None:
    target = tmp_path / "schemas"
    result = CliRunner().invoke(app, ["schema", "export", str(target)])
    assert result.exit_code == 0, result.output
    files = sorted(target.iterdir())
    assert len(files) == 4
    assert {p.name for p in files} == {
        "telemetry.schema.json",
        "grid-signals.schema.json",
        "frequency.schema.json",
        "setpoints.schema.json",
    }
    for p in files:
        assert str(p) in result.stdout
        assert isinstance(json.loads(p.read_text(encoding="utf-8")), dict)
