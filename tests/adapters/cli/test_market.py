"""``gridflex market history|forecast|bid`` on the rural example scenario (tests/data)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from typer.testing import CliRunner

from adapters.cli.main import app

RURAL = Path(__file__).parents[2] / "data" / "scenarios" / "rural" / "scenario.yaml"


def test_history_forecast_and_bid_of_a_pool_too_small_to_bid(tmp_path: Path) -> None:
    hist = tmp_path / "history.csv"
    r = CliRunner().invoke(
        app,
        [
            "market",
            "history",
            str(hist),
            "--scenario",
            str(RURAL),
            "--copies",
            "2",
            "--evses",
            "10",
            "--weeks",
            "4",
            "--until",
            "2026-01-13",
        ],
    )
    assert r.exit_code == 0, r.output
    with hist.open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows and {row["site_id"] for row in rows} <= {"farm#1", "school#1", "farm#2", "school#2"}

    out = tmp_path / "out"
    r = CliRunner().invoke(
        app,
        [
            "market",
            "forecast",
            str(RURAL),
            "--day",
            "2026-01-14",
            "--history",
            str(hist),
            "--copies",
            "2",
            "--scenarios",
            "40",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    blocks = json.loads(r.output)
    assert len(blocks) == 6 and blocks[0]["start"] == "2026-01-13T23:00:00+00:00"
    for b in blocks:
        assert 0 <= b["up_p90_mw"] <= b["up_p50_mw"]
        # the rural feeder (140 kW, 40 kW in the DSO window) × 2 bounds the up flexibility
        assert b["up_p50_mw"] <= 0.28
    assert (out / "forecast-2026-01-14.csv").exists()

    r = CliRunner().invoke(
        app,
        [
            "market",
            "bid",
            str(RURAL),
            "--day",
            "2026-01-14",
            "--history",
            str(hist),
            "--copies",
            "2",
            "--scenarios",
            "40",
            "--product",
            "both",
            "--now",
            "2026-01-13T09:30:00Z",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "no block reaches 1 MW" in r.output and "LATE" in r.output  # aFRR gate 08:00 UTC
    doc = json.loads((out / "bid-afrr-2026-01-14.json").read_text())
    assert doc["offers"] == [] and doc["late"] is True and doc["energy_bids"] == []
    assert doc["baseline"]["key"].startswith("rural-eveningx2:v1:")
    assert len(doc["baseline"]["power_kw"]) == 96
    fcr = json.loads((out / "bid-fcr-2026-01-14.json").read_text())
    assert fcr["gate"] == "2026-01-13T07:00:00+00:00" and fcr["pricing"] == "pay-as-cleared"
    assert (out / "bid-fcr-2026-01-14.csv").read_text().startswith("block,start,end,direction")


def test_a_bad_history_is_rejected_with_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "evse_id,site_id,arrival,departure,energy_kwh,max_power_kw\n"
        "e1,nowhere,2026-01-01T10:00:00Z,2026-01-01T12:00:00Z,5,11\n"
        "e2,farm,2026-01-01T10:00:00Z,2026-01-01T09:00:00Z,5,11\n"
    )
    r = CliRunner().invoke(
        app, ["market", "forecast", str(RURAL), "--day", "2026-01-14", "--history", str(bad)]
    )
    assert r.exit_code == 2
    assert "site not in the pool" in r.output and "departure[e2]: must be after arrival" in r.output
