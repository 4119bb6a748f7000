"""``gridflex market prequalify`` and ``gridflex market settle``: prove and settle a reserve.

* ``prequalify SCENARIO --product fcr|afrr`` (``SCENARIO``: a scenario file or ``demo``,
  the built-in demo feeder; ``--start`` picks the moment) drives the simulated fleet through
  the TSO test profile (:mod:`markets.prequalify`), prints the verdict, the tolerances it
  was judged by, each test segment and the reasons of a failure, and writes the test's 1 s
  record (``record.csv``), ``prequalify.json`` and ``report.html`` into ``--out``. Exit code
  0 = passed, 1 = failed, 2 = the input was rejected.
* ``settle RECORD --product afrr|fcr`` settles a 1 s record (:mod:`markets.record` CSV)
  against the product's acceptance band (:mod:`markets.settlement`), prints the
  per-quarter-hour table, gaps and penalised runs, and writes ``settlement.csv`` and
  ``report.html`` into ``--out``. Exit code 0 (a settlement reports, it does not judge the
  command), 2 = the record was rejected.

:func:`register` adds both commands to the ``market`` group (:mod:`adapters.cli.market`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from adapters.report.market import prequalify_page, quarter_hour_csv, settlement_page, write_page
from adapters.stream.inprocess import InProcessBus
from aggregator.errors import InvalidInput, Issue
from aggregator.sim.scenario import Scenario
from markets.prequalify import PrequalResult, prequalify
from markets.record import PoolRecord, record_from_csv, record_to_csv
from markets.settlement import (
    AFRR_BAND,
    FCR_BAND,
    AcceptanceBand,
    FcrAvailability,
    Settlement,
    fcr_availability,
    settle,
)

__all__ = [
    "availability_text",
    "prequalify_command",
    "register",
    "settle_command",
    "settle_record",
    "write_settlement",
]


class ProductOption(StrEnum):
    fcr = "fcr"
    afrr = "afrr"


@contextlib.contextmanager
def _native_stdout_to_stderr() -> Iterator[None]:
    """Keep what native code (the HiGHS banner) writes to fd 1 off stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _load(spec: str) -> Scenario:
    """A scenario file, or ``demo`` (the built-in demo feeder's day)."""
    if spec == "demo":
        from adapters.cli.demo import demo_scenario

        return demo_scenario()
    path = Path(spec)
    if not path.is_file():
        raise InvalidInput([Issue(field="scenario", code="not_found", message=spec)])
    from adapters.files.scenario import load_scenario

    return load_scenario(path)


def _reject(exc: InvalidInput) -> typer.Exit:
    typer.echo("error: the input was rejected:", err=True)
    for issue in exc.issues:
        typer.echo(f"  - {issue}", err=True)
    return typer.Exit(code=2)


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def _prequal_text(r: PrequalResult) -> str:
    product = "FCR" if r.product == "fcr" else "aFRR"
    verdict = "PASSED" if r.passed else "FAILED"
    lines = [f"{product} prequalification, {r.reserve_kw:g} kW: {verdict}", "", "judged by:"]
    lines += [f"  - {t}" for t in r.tolerances]
    rows = [("segment", "from", "ordered kW", "delivered kW", "outside s", "penalised s", "ok")]
    for g in r.segments:
        rows.append(
            (
                g.label,
                f"{g.start:%H:%M:%S}",
                f"{g.ordered_kw:+.1f}",
                f"{g.delivered_kw:+.1f}",
                str(g.outside_s),
                str(g.penalised_s),
                "yes" if g.ok else "NO",
            )
        )
    lines += ["", _table(rows)]
    if r.reasons:
        lines += ["", "why it failed:"] + [f"  - {x}" for x in r.reasons]
    return "\n".join(lines)


def _parse_start(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        t = None
    if t is None or t.tzinfo is None:
        raise InvalidInput(
            [Issue(field="start", code="bad_time", message=f"not an ISO 8601 UTC time: {text}")]
        )
    return t.astimezone(UTC)


def prequalify_command(
    scenario: Annotated[str, typer.Argument(help="YAML or JSON scenario file, or 'demo'")],
    product: Annotated[ProductOption, typer.Option(help="Reserve product to test")],
    reserve_kw: Annotated[
        float | None, typer.Option(help="Reserve to test (kW); default: the scenario's")
    ] = None,
    hold_s: Annotated[
        int, typer.Option(min=1, help="Hold of each full step (s); FCR: the reservoir time")
    ] = 900,
    settle_s: Annotated[int, typer.Option(min=1, help="Time at zero between steps (s)")] = 300,
    ramp_s: Annotated[int, typer.Option(min=1, help="aFRR ramp 0 → full (s)")] = 300,
    warmup_s: Annotated[int, typer.Option(min=0, help="Simulated time before the test")] = 0,
    start: Annotated[
        str | None,
        typer.Option(help="Start the simulation here (ISO 8601 UTC); default: the scenario's"),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Folder for record.csv, prequalify.json, report.html")
    ] = Path("gridflex-prequalify"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON")] = False,
) -> None:
    """Drive the scenario's fleet through the TSO test profile: pass or fail, and why."""
    try:
        loaded = _load(scenario)
        at = _parse_start(start)
        with _native_stdout_to_stderr():
            r = prequalify(
                loaded,
                product.value,
                bus_factory=InProcessBus,
                reserve_kw=reserve_kw,
                hold_s=hold_s,
                settle_s=settle_s,
                ramp_s=ramp_s,
                warmup_s=warmup_s,
                start=at,
            )
    except InvalidInput as exc:
        raise _reject(exc) from None
    out.mkdir(parents=True, exist_ok=True)
    (out / "record.csv").write_text(record_to_csv(r.record), encoding="utf-8")
    doc = {
        "product": r.product,
        "reserve_kw": r.reserve_kw,
        "passed": r.passed,
        "reasons": list(r.reasons),
        "tolerances": list(r.tolerances),
        "segments": [
            {
                "label": g.label,
                "start": g.start.isoformat(),
                "end": g.end.isoformat(),
                "ordered_kw": g.ordered_kw,
                "delivered_kw": g.delivered_kw,
                "outside_s": g.outside_s,
                "penalised_s": g.penalised_s,
                "missing_s": g.missing_s,
            }
            for g in r.segments
        ],
    }
    (out / "prequalify.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")
    write_page(out / "report.html", prequalify_page(r))
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
    else:
        typer.echo(_prequal_text(r))
        typer.echo(f"\nreport: {out / 'report.html'}   record: {out / 'record.csv'}")
    raise typer.Exit(code=0 if r.passed else 1)


def _settle_text(s: Settlement, availability: str | None) -> str:
    tot = s.totals()
    lines = [
        f"{s.band.product} settlement of {s.pool_id}: "
        + ("compliant" if s.compliant else "PENALISABLE SHORTFALL"),
        f"  seconds {int(tot['seconds'])}, missing {int(tot['missing_s'])}, "
        f"outside the band {int(tot['outside_s'])}, penalised {int(tot['penalised_s'])}",
    ]
    if availability:
        lines.append("  " + availability)
    rows = [
        (
            "quarter-hour (UTC)",
            "baseline kWh",
            "ordered kWh",
            "actual kWh",
            "delivered kWh",
            "shortfall kWh",
            "missing s",
        )
    ]
    for q in s.quarter_hours:
        rows.append(
            (
                f"{q.start:%Y-%m-%d %H:%M}",
                f"{q.baseline_kwh:.3f}",
                f"{q.ordered_kwh:.3f}",
                f"{q.actual_kwh:.3f}",
                f"{q.delivered_kwh:.3f}",
                f"{q.shortfall_kwh:.3f}",
                str(q.missing_s),
            )
        )
    rows.append(
        (
            "total",
            f"{tot['baseline_kwh']:.3f}",
            f"{tot['ordered_kwh']:.3f}",
            f"{tot['actual_kwh']:.3f}",
            f"{tot['delivered_kwh']:.3f}",
            f"{tot['shortfall_kwh']:.3f}",
            str(int(tot["missing_s"])),
        )
    )
    lines += ["", _table(rows)]
    if s.gaps:
        lines += ["", "gaps in the record (never filled; counted as outside the band):"]
        lines += [f"  - {g}" for g in s.gaps]
    findings = s.findings()
    if findings:
        lines += ["", "penalised:"] + [f"  - {f}" for f in findings]
    return "\n".join(lines)


def settle_record(
    rec: PoolRecord, band: AcceptanceBand
) -> tuple[Settlement, FcrAvailability | None]:
    """The settlement of a record against ``band`` and, for FCR, its availability (the
    door of ``settle``; the demo's report uses it too)."""
    s = settle(rec, band)
    return s, (fcr_availability(rec) if band.product == FCR_BAND.product else None)


def availability_text(a: FcrAvailability) -> str:
    return (
        f"FCR availability {a.availability:.2%} ({a.held_s} of {a.seconds} s with data and "
        f"≥ {a.contracted_kw:g} kW held)"
    )


def write_settlement(
    out: Path, s: Settlement, rec: PoolRecord, *, page: str = "report.html"
) -> list[Path]:
    """``settlement.csv`` (per quarter-hour) and the HTML report ``page`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    table = out / "settlement.csv"
    table.write_text(quarter_hour_csv(s), encoding="utf-8")
    return [table, write_page(out / page, settlement_page(s, rec))]


def settle_command(
    record: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="1 s record CSV (markets.record)")
    ],
    product: Annotated[ProductOption, typer.Option(help="Product the record delivered")] = (
        ProductOption.afrr
    ),
    out: Annotated[Path, typer.Option(help="Folder for settlement.csv and report.html")] = Path(
        "gridflex-settlement"
    ),
    tolerance_pct: Annotated[
        float | None, typer.Option(min=0.0, help="Band tolerance, % of the reserve (5)")
    ] = None,
    window_s: Annotated[
        int | None, typer.Option(min=1, help="Rolling window of the shortfall rule, s (300)")
    ] = None,
    max_outside_pct: Annotated[
        float | None, typer.Option(min=0.0, help="Share of a window allowed outside, % (5)")
    ] = None,
) -> None:
    """Settle a 1 s record: per quarter-hour baseline, ordered, actual, delivered, shortfall."""
    try:
        rec = record_from_csv(record.read_text(encoding="utf-8"))
    except InvalidInput as exc:
        raise _reject(exc) from None
    band = FCR_BAND if product is ProductOption.fcr else AFRR_BAND
    if tolerance_pct is not None:
        band = dataclasses.replace(band, tolerance_frac=tolerance_pct / 100.0)
    if window_s is not None:
        band = dataclasses.replace(band, window_s=window_s)
    if max_outside_pct is not None:
        band = dataclasses.replace(band, max_outside_frac=max_outside_pct / 100.0)
    s, avail = settle_record(rec, band)
    availability = availability_text(avail) if avail is not None else None
    write_settlement(out, s, rec)
    typer.echo(_settle_text(s, availability))
    typer.echo(f"\nreport: {out / 'report.html'}   table: {out / 'settlement.csv'}")


def register(group: typer.Typer) -> None:
    """Add ``prequalify`` and ``settle`` to the ``market`` command group."""
    group.command("prequalify")(prequalify_command)
    group.command("settle")(settle_command)
