"""``gridflex market prequalify`` and ``settle`` on small scenarios sized for tests."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from adapters.cli.market_run import register
from markets.record import PoolRecord, record_from_csv, record_to_csv

T0 = datetime(2026, 1, 14, 18, tzinfo=UTC)
SHORT = ["--hold-s", "360", "--settle-s", "60", "--ramp-s", "120"]


def app() -> typer.Typer:
    group = typer.Typer(no_args_is_help=True)
    register(group)
    return group


def scenario_file(tmp: Path, evses: int, reserve_kw: float = 40.0) -> Path:
    """``evses`` cars of 11 kW, plugged in from 18:00 for 8 h, 60 kWh each, one depot on
    the SimBench rural feeder."""
    sessions = "\n".join(
        f"  - {{evse_id: e{i:02d}, site_id: depot, arrival: 2026-01-14T18:00:00Z, "
        f"departure: 2026-01-15T02:00:00Z, energy_kwh: 60, max_power_kw: 11}}"
        for i in range(evses)
    )
    text = f"""name: depot-{evses}
feeder: 1-LV-rural1--0-sw
start: 2026-01-14T18:00:00Z
end: 2026-01-15T02:00:00Z
step_s: 900
reserve_kw: {reserve_kw}
sites:
  - {{id: depot, bus: "LV1.101 Bus 4", connection_limit_kw: 150, csms: csms-a}}
sessions:
{sessions}
"""
    path = tmp / f"depot-{evses}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("product", ["fcr", "afrr"])
def test_prequalify_passes_on_a_fleet_that_can_carry_it(tmp_path: Path, product: str) -> None:
    out = tmp_path / "pq"
    res = CliRunner().invoke(
        app(),
        [
            "prequalify",
            str(scenario_file(tmp_path, 12)),
            "--product",
            product,
            "--out",
            str(out),
            *SHORT,
        ],
    )
    assert res.exit_code == 0, res.output
    assert "prequalification, 40 kW: PASSED" in res.output
    assert "±5% of the reserve (±2.0 kW)" in res.output
    assert "why it failed" not in res.output
    rec = record_from_csv((out / "record.csv").read_text())
    assert rec.gaps() == [] and rec.seconds > 600
    page = (out / "report.html").read_text()
    assert "PASSED" in page and "<svg" in page and "acceptance band" in page
    assert '"passed": true' in (out / "prequalify.json").read_text()


def test_prequalify_fails_with_the_reason_on_a_fleet_that_cannot(tmp_path: Path) -> None:
    # started an hour into the scenario (--start): the test's segments run from 19:00
    out = tmp_path / "pq"
    res = CliRunner().invoke(
        app(),
        [
            "prequalify",
            str(scenario_file(tmp_path, 3)),
            "--product",
            "fcr",
            "--out",
            str(out),
            "--start",
            "2026-01-14T19:00:00Z",
            *SHORT,
        ],
    )
    assert res.exit_code == 1, res.output
    assert "+200 mHz: full activation, consume more from 19:08:00" in res.output
    assert "FAILED" in res.output and "why it failed:" in res.output
    assert "+200 mHz: full activation, consume more" in res.output
    assert "ordered +40.0 kW, delivered +0.0 kW at its end (0% of the order)" in res.output
    assert "FAILED" in (out / "report.html").read_text()


def test_prequalify_rejects_a_bad_start_and_a_missing_file(tmp_path: Path) -> None:
    scen = str(scenario_file(tmp_path, 3))
    res = CliRunner().invoke(app(), ["prequalify", scen, "--product", "fcr", "--start", "noon"])
    assert res.exit_code == 2 and "start" in res.output
    late = ["prequalify", scen, "--product", "fcr", "--start", "2026-01-16T00:00:00Z"]
    res = CliRunner().invoke(app(), late)
    assert res.exit_code == 2 and "must lie in the scenario" in res.output
    res = CliRunner().invoke(app(), ["prequalify", str(tmp_path / "nope.yaml"), "--product", "fcr"])
    assert res.exit_code == 2 and "nope.yaml" in res.output


def test_prequalify_rejects_a_scenario_without_reserve(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app(),
        ["prequalify", str(scenario_file(tmp_path, 3, reserve_kw=0)), "--product", "afrr"],
    )
    assert res.exit_code == 2
    assert "reserve_kw" in res.output


def _short_delivery_record(gap: tuple[int, int] | None = None) -> PoolRecord:
    # the hand-computed case of tests/markets/test_settlement.py: +100 kW ordered from
    # t = 10 s, +90 kW delivered; 103 penalised seconds, 0.133693 kWh short
    n = 400
    base = np.full(n, 50.0)
    r = np.zeros(n)
    r[10:] = 100.0
    d = np.zeros(n)
    d[10:] = 90.0
    measured = base + d
    if gap is not None:
        measured[gap[0] : gap[1]] = np.nan
    return PoolRecord("depot", T0, base, r, base + r, measured, np.full(n, 100.0))


def test_settle_prints_the_quarter_hour_table_and_writes_csv_and_html(tmp_path: Path) -> None:
    path = tmp_path / "record.csv"
    path.write_text(record_to_csv(_short_delivery_record()))
    out = tmp_path / "s"
    res = CliRunner().invoke(app(), ["settle", str(path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "aFRR settlement of depot: PENALISABLE SHORTFALL" in res.output
    assert "penalised 103" in res.output
    assert "0.134" in res.output  # 481.30 kW·s = 0.133693 kWh, printed to 3 decimals
    rows = (out / "settlement.csv").read_text().splitlines()
    assert rows[0].startswith("start,seconds,missing_s,baseline_kwh,ordered_kwh")
    assert rows[1].startswith("2026-01-14T18:00:00Z,400,0,")
    assert rows[1].split(",")[7] == f"{(100 * 3419 / 270 - 13 * 95 + 450) / 3600:.6f}"
    assert "<svg" in (out / "report.html").read_text()


def test_settle_band_numbers_are_options(tmp_path: Path) -> None:
    # ±10 % instead of ±5 %: the band's lower edge ends at 100 − 10 = 90 kW, so a pool
    # giving 90 kW of the 100 ordered is compliant
    path = tmp_path / "record.csv"
    path.write_text(record_to_csv(_short_delivery_record()))
    args = ["settle", str(path), "--out", str(tmp_path / "s"), "--tolerance-pct", "10"]
    res = CliRunner().invoke(app(), args)
    assert res.exit_code == 0, res.output
    assert "aFRR settlement of depot: compliant" in res.output
    assert "10% of the reserve held" in (tmp_path / "s" / "report.html").read_text()


def test_settle_reports_a_gap(tmp_path: Path) -> None:
    path = tmp_path / "record.csv"
    path.write_text(record_to_csv(_short_delivery_record(gap=(100, 120))))
    res = CliRunner().invoke(app(), ["settle", str(path), "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    assert "gaps in the record (never filled" in res.output
    assert "gap 2026-01-14T18:01:40+00:00 – 2026-01-14T18:02:00+00:00 (20 s)" in res.output
    assert "missing 20" in res.output


def test_settle_fcr_reports_availability(tmp_path: Path) -> None:
    rec = _short_delivery_record(gap=(0, 4))
    path = tmp_path / "record.csv"
    path.write_text(record_to_csv(rec))
    res = CliRunner().invoke(
        app(), ["settle", str(path), "--product", "fcr", "--out", str(tmp_path / "s")]
    )
    assert res.exit_code == 0, res.output
    assert "FCR availability 99.00% (396 of 400 s with data and ≥ 100 kW held)" in res.output


def test_settle_rejects_a_bad_record(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("ts,baseline_kw\n2026-01-14T18:00:00Z,1\n")
    res = CliRunner().invoke(app(), ["settle", str(path)])
    assert res.exit_code == 2
    assert "missing" in res.output
