"""``gridflex grid check``: the feeder table and AC-verified hosting capacity."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

import grid
from adapters.cli.main import app

RURAL = "1-LV-rural1--0-sw"
SESSIONS = Path(__file__).parents[2] / "data" / "scenarios" / "rural" / "sessions.csv"


def test_table_lists_the_feeder_and_hosting_capacity() -> None:
    res = CliRunner().invoke(app, ["grid", "check", RURAL, "--max-sites", "3"])
    assert res.exit_code == 0, res.output
    assert "MV1.101-LV1.101-Trafo 1" in res.output and "160" in res.output
    assert "hosting capacity" in res.output and "LV1.101 Line 1" in res.output
    assert "more lines" in res.output  # 13 lines, 3 shown


def test_json_hosting_capacity_holds_in_ac() -> None:
    res = CliRunner().invoke(app, ["grid", "check", RURAL, "--json", "--max-sites", "2"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert rep["rating_kva"] == 160.0 and rep["buses"] == 15 and len(rep["lines_table"]) == 13
    first = rep["hosting_capacity_kw"][0]
    assert 0 < first["min"] <= first["median"]
    # adding exactly the 18:00 capacity at that bus keeps the feeder within limits
    model = grid.load_feeder(RURAL)
    t = datetime(2026, 1, 14, 18, tzinfo=UTC)
    ok = grid.run_timeseries(model, [t], {first["bus"]: np.array([first["at_18h"]])})
    assert ok.violations() == []
    over = grid.run_timeseries(model, [t], {first["bus"]: np.array([first["at_18h"] * 1.1 + 1])})
    assert over.violations() != []


def test_sessions_are_checked_uncontrolled() -> None:
    res = CliRunner().invoke(app, ["grid", "check", RURAL, "--json", "--sessions", str(SESSIONS)])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert rep["uncontrolled"]["sessions"] == 20
    assert {h["site"] for h in rep["hosting_capacity_kw"]} == {"farm", "school"}


def test_unknown_feeder_is_an_error() -> None:
    res = CliRunner().invoke(app, ["grid", "check", "no-such-grid"])
    assert res.exit_code == 2
