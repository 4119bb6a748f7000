"""Simulation outputs on disk: ``setpoints.csv``, ``sites.csv``, ``summary.json``, report.

``setpoints.csv`` has one row per plan step and EVSE that was plugged in during the step:
``time`` (step start, UTC), ``evse_id``, ``power_kw`` (the mean setpoint over the step).
``sites.csv`` has one row per step and site: mean and max measured power, the tightest
cap in force and the largest excess (0 when the cap held). The HTML report shows fleet
power against the limits, energy delivered against requested, and the FCR response, then
any sections the caller adds (the demo: its bid, activation and settlement).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adapters.report.html import Chart, Section, Series, write_html_report
from adapters.report.labels import label
from aggregator.sim.simulation import SimulationResult

__all__ = ["format_summary", "write_outputs"]


def _iso(t: Any) -> str:
    return str(t.isoformat().replace("+00:00", "Z"))


def write_outputs(
    result: SimulationResult,
    out_dir: Path,
    *,
    report: bool = True,
    sections: Sequence[Section] = (),
) -> list[Path]:
    """Write the CSVs, the summary and (optionally) ``report.html`` with ``sections`` after
    its charts (the demo's market part); returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    sp = out_dir / "setpoints.csv"
    with sp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["time", "evse_id", "power_kw"])
        for i, t in enumerate(result.step_times):
            row = result.setpoint_mean_kw[i]
            ts = _iso(t)
            for k in np.flatnonzero(row != 0.0).tolist():
                w.writerow([ts, result.evse_ids[k], f"{row[k]:.3f}"])
    paths.append(sp)
    sites = out_dir / "sites.csv"
    with sites.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["time", "site_id", "power_kw_mean", "power_kw_max", "limit_kw", "excess_kw"])
        for i, t in enumerate(result.step_times):
            ts = _iso(t)
            for j, site in enumerate(result.site_ids):
                w.writerow(
                    [
                        ts,
                        site,
                        f"{result.site_power_mean_kw[i, j]:.3f}",
                        f"{max(result.site_power_max_kw[i, j], 0.0):.3f}",
                        f"{result.site_cap_kw[i, j]:.3f}",
                        f"{result.site_excess_kw[i, j]:.6f}",
                    ]
                )
    paths.append(sites)
    summary = out_dir / "summary.json"
    summary.write_text(json.dumps(result.summary, indent=2) + "\n", encoding="utf-8")
    paths.append(summary)
    if report:
        paths.append(write_report(result, out_dir / "report.html", sections=sections))
    return paths


def _finite_or_nan(a: Any) -> list[float]:
    return [float(x) if math.isfinite(x) and abs(x) < 1e6 else math.nan for x in np.asarray(a)]


def write_report(result: SimulationResult, path: Path, *, sections: Sequence[Section] = ()) -> Path:
    s = result.summary
    charts = [
        Chart(
            "Fleet power and the feeder limit (DSO limits and headroom included)",
            result.tick_times,
            [
                Series("EV fleet power (measured)", result.fleet_power_kw.tolist(), "line"),
                Series("feeder limit for EVs", _finite_or_nan(result.fleet_cap_kw), "step"),
            ],
            "power (kW)",
        ),
        Chart(
            "Energy: delivered vs requested (cumulative)",
            result.step_times,
            [
                Series("requested by arrived cars", result.energy_requested_kwh.tolist(), "line"),
                Series("delivered", result.energy_delivered_kwh.tolist(), "area"),
            ],
            "energy (kWh)",
        ),
        Chart(
            f"FCR response (reserve {s.get('fcr_reserve_kw', 0)} kW)",
            result.tick_times,
            [
                Series("requested deviation", result.fcr_requested_kw.tolist(), "line"),
                Series("delivered deviation", result.fcr_delivered_kw.tolist(), "dashed"),
            ],
            "power deviation (kW, + = more import)",
        ),
        Chart(
            "Sites: largest excess over a limit per step (0 = held)",
            result.step_times,
            [
                Series(
                    "max site excess",
                    result.site_excess_kw.max(axis=1).tolist()
                    if result.site_excess_kw.size
                    else [],
                    "step",
                )
            ],
            "excess (kW)",
        ),
    ]
    g = result.grid_series
    if g.get("loading_pct"):
        n = len(g["loading_pct"])
        charts += [
            Chart(
                "Feeder loading: highest line or transformer loading per step (AC)",
                result.step_times[:n],
                [
                    Series("gridflex", g["loading_pct"], "line"),
                    Series("uncontrolled charging", g["uncontrolled_loading_pct"], "dashed"),
                    Series("limit", [100.0] * n, "step"),
                ],
                "loading (%)",
            ),
            Chart(
                "Feeder voltage: lowest bus voltage per step (AC)",
                result.step_times[:n],
                [
                    Series("gridflex", g["min_voltage_pu"], "line"),
                    Series("uncontrolled charging", g["uncontrolled_min_voltage_pu"], "dashed"),
                    Series("EN 50160 lower band", [0.90] * n, "step"),
                ],
                "voltage (pu)",
            ),
        ]
    notes = [
        "Positive power = import from the grid (charging); negative = V2G export.",
        "Limits are those the DSO had announced at each moment; the feeder limit "
        "includes the households' own load from the SimBench profiles.",
        f"Delivered {s.get('energy_delivered_kwh', 0):,.1f} kWh of an upper bound of "
        f"{s.get('energy_bound_kwh', 0):,.1f} kWh "
        f"({100 * s.get('delivered_share_of_bound', 1):.1f} %): the bound is the optimum "
        "of a relaxation (plug-in windows, EVSE power, site, feeder and DSO caps, no grid "
        "limits) that no schedule can beat.",
    ]
    if "grid_margin_loading_pct" in s:
        notes.append(
            f"Grid margin against forecast error: plans keep {s['grid_margin_loading_pct']} pp "
            f"of line/transformer loading and {s['grid_margin_voltage_pu']} pu of voltage; "
            f"the grid repair (scaling down sites behind an element the AC check flagged, "
            f"then re-planning) cost {s.get('grid_repair_kwh', 0):,.1f} kWh in "
            f"{s.get('grid_repaired_plans', 0)} plan steps, per feeder: "
            + ", ".join(
                f"{k} {v:,.1f} kWh" for k, v in s.get("grid_repair_kwh_by_feeder", {}).items()
            )
            + "."
        )
    title = f"gridflex — {s.get('scenario', 'simulation')}"
    return write_html_report(path, title, s, charts, notes=notes, sections=sections)


def _readable(v: Any) -> str:
    if isinstance(v, Mapping):  # e.g. a figure per feeder
        return ", ".join(f"{k} {_readable(x)}" for k, x in v.items())
    if not isinstance(v, float):
        return str(v)
    return f"{v:,.2f}" if abs(v) >= 100 else f"{v:.4g}"


def format_summary(summary: Mapping[str, Any]) -> str:
    """A readable two-column table of the summary: words and unit, then the value."""
    width = max(len(label(k)) for k in summary) if summary else 0
    lines = []
    for k, v in summary.items():
        lines.append(f"  {label(k).ljust(width)}  {_readable(v)}")
    return "\n".join(lines)
