"""``gridflex grid check FEEDER [--sessions CSV]``: a feeder at a glance, with hosting capacity.

Prints the feeder (buses, lines, transformers, limits) and, per site, the extra kW it
could draw without a line, transformer or voltage violation over a day (AC-verified
hosting capacity, ``grid.hosting``). Without ``--sessions`` every load bus is a candidate
site (the first ``--max-sites``); with a sessions CSV, its sites are placed on load buses
(deterministically) and uncontrolled charging of those sessions is AC-checked too.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from aggregator.errors import InvalidInput, Issue
from aggregator.sim.scenario import Scenario, uncontrolled_site_kw
from aggregator.topology import Feeder, Topology

__all__ = ["grid_app"]

grid_app = typer.Typer(no_args_is_help=True, help="Feeder models: tables and hosting capacity.")


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def feeder_report(
    spec: str,
    sessions: Path | None = None,
    *,
    day: datetime,
    max_sites: int = 20,
    stage: Callable[[str], None] = lambda name: None,
) -> dict[str, Any]:
    """The data ``grid check`` prints (also its ``--json`` output); ``stage`` is told the
    name of each stage as it starts (a progress bar)."""
    stage("loading the feeder")
    import grid  # pandapower loads here, not when the CLI starts
    from adapters.files.scenario import read_sessions_csv

    model = grid.load_feeder(spec)
    net = model.net
    times = [day + timedelta(minutes=15 * i) for i in range(96)]
    report: dict[str, Any] = {
        "feeder": model.feeder_id,
        "source": model.source,
        "rating_kva": model.rating_kva,
        "limit_kw": model.limit_kw,
        "voltage_level_kv": model.voltage_level_kv,
        "buses": model.buses,
        "lines": model.lines,
        "day": day.date().isoformat(),
        "transformers": [
            {
                "name": str(r["name"]),
                "kva": float(r["sn_mva"]) * 1000.0,
                "hv_kv": float(r["vn_hv_kv"]),
                "lv_kv": float(r["vn_lv_kv"]),
            }
            for _, r in net.trafo.iterrows()
        ],
        "limits": {
            "line_loading_pct": 100.0,
            "trafo_loading_pct": 100.0,
            "v_min_pu": 0.90,
            "v_max_pu": 1.10,
        },
    }
    stage("power flow, own load")
    background = grid.run_timeseries(model, times)
    loading = np.nan_to_num(background.line_loading_pct, nan=0.0).max(axis=0)
    report["lines_table"] = [
        {
            "name": str(r["name"]),
            "rated_a": round(float(r["max_i_ka"]) * 1000.0, 1),
            "length_m": round(float(r["length_km"]) * 1000.0, 1),
            "own_load_max_pct": round(float(loading[k]), 2),
        }
        for k, (_, r) in enumerate(net.line.iterrows())
    ]
    report["background"] = {
        "max_line_loading_pct": round(background.max_line_loading_pct(), 2),
        "max_trafo_loading_pct": round(background.max_trafo_loading_pct(), 2),
        "min_voltage_pu": round(background.min_voltage_pu(), 4),
        "violations": len(background.violations()),
    }
    if sessions is None:
        buses = list(grid.load_buses(model))[:max_sites]
        names = buses
    else:
        issues: list[Issue] = []
        specs = read_sessions_csv(sessions, issues)
        if issues:
            raise InvalidInput(issues)
        site_ids = sorted({s.site_id for s in specs})
        placed = grid.place_sites(model, len(site_ids), seed=0, connection_limit_kw=(1e4, 1e4))
        rename = {p.site_id: sid for p, sid in zip(placed, site_ids, strict=True)}
        buses = [p.bus for p in placed]
        names = [rename[p.site_id] for p in placed]
        topo = grid.to_topology(model, placed)
        topo = Topology(
            (Feeder(model.feeder_id, 1e9),),
            tuple(
                type(s)(rename[s.site_id], s.feeder_id, s.connection_limit_kw, s.bus, s.csms_id)
                for s in topo.sites
            ),
        )
        first = min(s.arrival for s in specs)
        start = first.replace(hour=0, minute=0, second=0, microsecond=0)
        scenario = Scenario(
            name="check",
            feeder=model.feeder_id,
            topology=topo,
            start=start,
            end=start + timedelta(days=2),
            step_s=900.0,
            sessions=tuple(specs),
        )
        stage("power flow, uncontrolled")
        fg = grid.FeederGrid(model, topo)
        free = fg.check(start, 900.0, uncontrolled_site_kw(scenario))
        report["uncontrolled"] = {
            **free.figures(),
            "violations": len(free.violations),
            "sessions": len(specs),
        }
        times = [start + timedelta(minutes=15 * i) for i in range(96)]
    stage("hosting capacity")
    cap = grid.hosting_capacity_kw(model, buses, times)
    report["hosting_capacity_kw"] = [
        {
            "site": n,
            "bus": b,
            "min": round(float(np.min(cap[:, k])), 1),
            "at_18h": round(float(cap[72, k]), 1),
            "median": round(float(np.median(cap[:, k])), 1),
        }
        for k, (n, b) in enumerate(zip(names, buses, strict=True))
    ]
    return report


@grid_app.command("check")
def check(
    feeder: Annotated[str, typer.Argument(help="SimBench code, pandapower:NAME or a .json file")],
    sessions: Annotated[Path | None, typer.Option(help="Sessions CSV (as for scenarios)")] = None,
    day: Annotated[str, typer.Option(help="Day (UTC) for profiles")] = "2026-01-14",
    max_sites: Annotated[int, typer.Option(min=1, help="Load buses to report")] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Progress bar (default: on a terminal)")
    ] = sys.stderr.isatty(),
) -> None:
    """Print the feeder (buses, lines, transformer, limits) and its hosting capacity."""
    from adapters.cli.progress import stage_bar

    bar = stage_bar(progress, stages=4 if sessions is not None else 3)  # see feeder_report
    try:
        when = datetime.fromisoformat(day).replace(tzinfo=UTC)
        rep = feeder_report(feeder, sessions, day=when, max_sites=max_sites, stage=bar.start)
    except (InvalidInput, ValueError) as exc:
        bar.close()
        issues = exc.issues if isinstance(exc, InvalidInput) else [Issue("day", str(exc))]
        for i in issues:
            typer.echo(f"error: {i}", err=True)
        raise typer.Exit(code=2) from exc
    bar.close()
    if as_json:
        typer.echo(json.dumps(rep, indent=2))
        return
    typer.echo(f"feeder {rep['feeder']}  ({rep['source']})")
    typer.echo(
        f"  buses {rep['buses']}, lines {rep['lines']}, LV {rep['voltage_level_kv']} kV, "
        f"rating {rep['rating_kva']:.0f} kVA, EV-visible limit {rep['limit_kw']:.1f} kW"
    )
    typer.echo("  limits: loading ≤ 100 %, voltage 0.90–1.10 pu (EN 50160)\n")
    typer.echo(
        _table(
            [
                [t["name"], f"{t['kva']:.0f}", f"{t['hv_kv']}/{t['lv_kv']}"]
                for t in rep["transformers"]
            ],
            ["transformer", "kVA", "kV"],
        )
    )
    rows = rep["lines_table"]
    typer.echo("")
    typer.echo(
        _table(
            [
                [r["name"], r["rated_a"], r["length_m"], r["own_load_max_pct"]]
                for r in rows[:max_sites]
            ],
            ["line", "rated A", "length m", "own load max %"],
        )
    )
    if len(rows) > max_sites:
        typer.echo(f"… and {len(rows) - max_sites} more lines (--max-sites, or --json for all)")
    bg = rep["background"]
    typer.echo(
        f"\nown load on {rep['day']}: max line {bg['max_line_loading_pct']} %, max trafo "
        f"{bg['max_trafo_loading_pct']} %, min voltage {bg['min_voltage_pu']} pu, "
        f"{bg['violations']} violations"
    )
    if "uncontrolled" in rep:
        u = rep["uncontrolled"]
        typer.echo(
            f"uncontrolled charging of {u['sessions']} sessions: max line "
            f"{u['max_line_loading_pct']} %, max trafo {u['max_trafo_loading_pct']} %, "
            f"min voltage {u['min_voltage_pu']} pu, {u['violations']} violations"
        )
    typer.echo("\nhosting capacity (extra kW a site alone can draw without a violation, AC):")
    typer.echo(
        _table(
            [
                [h["site"], h["bus"], h["min"], h["at_18h"], h["median"]]
                for h in rep["hosting_capacity_kw"]
            ],
            ["site", "bus", "min kW", "18:00 kW", "median kW"],
        )
    )
