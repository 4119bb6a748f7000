"""HTML reports for the market: settlement of a 1 s record, and a prequalification run.

Built on :mod:`adapters.report.html` (self-contained page, inline SVG, no scripts). Each
report states what it judged by (the acceptance band's numbers) and shows the evidence:

* *delivered vs ordered* — the ordered activation, the acceptance band's edges and the
  delivered deviation (measured − baseline); a gap in the record is a gap in the line;
* *pool power* — baseline, setpoint sum and measured power;
* *per quarter-hour* — ordered, delivered and penalisable shortfall energy (step lines);
* the per-quarter-hour table (baseline, ordered, actual, delivered, shortfall) and, for a
  prequalification, the verdict, its reasons and each test segment;
* :func:`market_section`: a part of another page (the demo's report) with a bid document
  (its offers, or why there is none), the activation around the largest order and the
  settlement's charts and headline figures.

Invariants: the page never fills a gap (NaN stays NaN, drawn as a break); energies are kWh,
powers kW, times UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from adapters.report.html import Chart, Section, Series, render_html
from markets.bids import BidDocument
from markets.prequalify import PrequalResult
from markets.record import PoolRecord
from markets.settlement import Settlement

__all__ = [
    "band_statement",
    "market_section",
    "prequalify_page",
    "quarter_hour_csv",
    "settlement_charts",
    "settlement_page",
    "settlement_summary",
    "write_page",
]


def _r(v: float, nd: int = 3) -> float:
    return round(float(v), nd)


def band_statement(s: Settlement) -> list[str]:
    b = s.band
    return [
        f"{b.product} acceptance band: first reaction within {b.reaction_s} s, full within "
        f"{b.full_s} s, ±{b.tolerance_frac:.0%} of the reserve held",
        f"penalisable: an outside second in a {b.window_s} s window with more than "
        f"{b.max_outside_frac:.0%} ({b.max_outside_s:.0f} s) of its seconds outside the band",
        "a gap (a second missing from the record) counts as outside and delivering nothing; "
        "it is never filled",
    ]


def settlement_summary(s: Settlement, record: PoolRecord) -> dict[str, object]:
    """The headline figures and the per-quarter-hour table as a nested mapping."""
    tot = s.totals()
    qh: dict[str, object] = {}
    for q in s.quarter_hours:
        qh[f"{q.start:%Y-%m-%d %H:%M}"] = {
            "baseline_kwh": _r(q.baseline_kwh),
            "ordered_kwh": _r(q.ordered_kwh),
            "actual_kwh": _r(q.actual_kwh),
            "delivered_kwh": _r(q.delivered_kwh),
            "shortfall_kwh": _r(q.shortfall_kwh),
            "outside_s": q.outside_s,
            "penalised_s": q.penalised_s,
            "missing_s": q.missing_s,
        }
    return {
        "pool": s.pool_id,
        "product": s.band.product,
        "from": record.start.isoformat(),
        "seconds": record.seconds,
        "compliant": s.compliant,
        "gaps": len(s.gaps),
        "missing_s": int(tot["missing_s"]),
        "outside_s": int(tot["outside_s"]),
        "penalised_s": int(tot["penalised_s"]),
        "ordered_kwh": _r(tot["ordered_kwh"]),
        "delivered_kwh": _r(tot["delivered_kwh"]),
        "shortfall_kwh": _r(tot["shortfall_kwh"]),
        "per quarter-hour (UTC start)": qh,
    }


def settlement_charts(s: Settlement, record: PoolRecord) -> list[Chart]:
    x = record.times()
    delivered = Chart(
        "Delivered vs ordered, with the acceptance band",
        x,
        [
            Series("ordered (kW)", s.requested_kw.tolist(), style="step"),
            Series("band lower (kW)", s.lower_kw.tolist(), style="dashed"),
            Series("band upper (kW)", s.upper_kw.tolist(), style="dashed"),
            Series("delivered = measured − baseline (kW)", s.delivered_kw.tolist()),
        ],
        "deviation (kW, + = more import)",
    )
    power = Chart(
        "Pool power",
        x,
        [
            Series("baseline (kW)", record.baseline_kw.tolist(), style="step"),
            Series("setpoint sum (kW)", record.setpoint_kw.tolist(), style="dashed"),
            Series("measured (kW)", record.measured_kw.tolist()),
        ],
        "power (kW)",
    )
    charts = [delivered, power]
    rows = s.quarter_hours
    if len(rows) >= 2:
        charts.append(
            Chart(
                "Per quarter-hour energy",
                [q.start for q in rows],
                [
                    Series("ordered (kWh)", [q.ordered_kwh for q in rows], style="step"),
                    Series("delivered (kWh)", [q.delivered_kwh for q in rows], style="step"),
                    Series("shortfall (kWh)", [q.shortfall_kwh for q in rows], style="step"),
                ],
                "energy (kWh)",
                x_label="quarter-hour start (UTC)",
            )
        )
    outside = np.where(s.outside, 1.0, 0.0)
    charts.append(
        Chart(
            "Seconds outside the band (1) and penalised (2)",
            x,
            [Series("outside / penalised", (outside + np.where(s.penalised, 1.0, 0.0)).tolist())],
            "flag",
        )
    )
    return charts


def settlement_page(s: Settlement, record: PoolRecord, *, title: str | None = None) -> str:
    notes = band_statement(s)
    notes += [str(g) for g in s.gaps]
    notes += [str(f) for f in s.findings()]
    return render_html(
        title or f"Settlement — {s.pool_id} ({s.band.product})",
        settlement_summary(s, record),
        settlement_charts(s, record),
        notes=notes,
    )


def prequalify_page(r: PrequalResult) -> str:
    s = r.settlement
    summary: dict[str, object] = {
        "verdict": "PASSED" if r.passed else "FAILED",
        "product": r.product.upper() if r.product == "fcr" else "aFRR",
        "reserve_kw": r.reserve_kw,
        "test from": r.profile.start.isoformat(),
        "test seconds": r.profile.duration_s,
        "segments": {
            f"{k + 1}. {g.label}": {
                "from": f"{g.start:%H:%M:%S}",
                "ordered_kw": _r(g.ordered_kw, 2),
                "delivered_kw (last 30 s)": _r(g.delivered_kw, 2),
                "outside_s": g.outside_s,
                "penalised_s": g.penalised_s,
                "missing_s": g.missing_s,
                "ok": g.ok,
            }
            for k, g in enumerate(r.segments)
        },
        "simulation": {
            k: r.simulation[k]
            for k in ("sessions", "plans", "plan_fallbacks", "fast_loop_ms_p99")
            if k in r.simulation
        },
    }
    notes = [f"reason: {x}" for x in r.reasons]
    notes += [f"tolerance: {t}" for t in r.tolerances]
    notes += band_statement(s)
    title = f"Prequalification — {summary['product']} {r.reserve_kw:g} kW — {summary['verdict']}"
    return render_html(title, summary, settlement_charts(s, r.record), notes=notes)


def write_page(path: Path, page: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def quarter_hour_csv(s: Settlement) -> str:
    """The per-quarter-hour table as CSV text (kWh, seconds)."""
    head = (
        "start,seconds,missing_s,baseline_kwh,ordered_kwh,actual_kwh,delivered_kwh,"
        "shortfall_kwh,outside_s,penalised_s"
    )
    lines: Sequence[str] = [
        head,
        *(
            f"{q.start:%Y-%m-%dT%H:%M:%SZ},{q.seconds},{q.missing_s},{q.baseline_kwh:.6f},"
            f"{q.ordered_kwh:.6f},{q.actual_kwh:.6f},{q.delivered_kwh:.6f},"
            f"{q.shortfall_kwh:.6f},{q.outside_s},{q.penalised_s}"
            for q in s.quarter_hours
        ),
    ]
    return "\n".join(lines) + "\n"


def _bid_table(doc: BidDocument) -> dict[str, object]:
    bid: dict[str, object] = {
        "product": doc.product,
        "delivery day": doc.day.day.isoformat(),
        "gate": doc.gate.isoformat(),
        "pricing": doc.pricing,
        "firm rung reached with": doc.reached_with,
        "energy reservoir (min)": doc.reservoir_s / 60.0,
    }
    for name, firm in doc.firm_kw.items():
        bid[f"{name} firm volume per block (MW)"] = {
            f"{t:%H:%M}Z": _r(v / 1000.0) for t, v in zip(doc.day.block_starts, firm, strict=True)
        }
    if doc.offers:
        bid["offers"] = {
            f"{o.start:%H:%M}Z {o.direction} {o.rung}": f"{o.volume_mw} MW at "
            f"{o.price_eur_per_mw:g} EUR/MW"
            for o in doc.offers
        }
    else:
        bid["no bid, because"] = doc.reasons[-1] if doc.reasons else "no offer"
    return bid


def _zoom(s: Settlement, record: PoolRecord, window_s: int) -> Chart | None:
    """Ordered, band and delivered around the largest order (``window_s`` seconds)."""
    r = np.nan_to_num(s.requested_kw)
    if not r.size or not np.any(r):
        return None
    i = int(np.argmax(np.abs(r)))
    a = max(0, min(i - window_s // 4, record.seconds - window_s))
    b = min(record.seconds, a + window_s)
    x = record.times()[a:b]
    return Chart(
        f"Activation around the largest order ({x[i - a]:%H:%M:%S} UTC, "
        f"{r[i]:+.1f} kW): 1 s record",
        x,
        [
            Series("ordered (kW)", s.requested_kw[a:b].tolist(), style="step"),
            Series("band lower (kW)", s.lower_kw[a:b].tolist(), style="dashed"),
            Series("band upper (kW)", s.upper_kw[a:b].tolist(), style="dashed"),
            Series("delivered = measured − baseline (kW)", s.delivered_kw[a:b].tolist()),
        ],
        "deviation (kW, + = more import)",
    )


def market_section(
    doc: BidDocument,
    s: Settlement,
    record: PoolRecord,
    *,
    notes: Sequence[str] = (),
    title: str = "Market: the bid, the activation and the settlement",
    zoom_s: int = 1200,
    findings_shown: int = 10,
) -> Section:
    """The bid, the activation and the settlement of one record as a page section."""
    settled = {k: v for k, v in settlement_summary(s, record).items() if not k.startswith("per ")}
    found = s.findings()
    lines = [*doc.reasons, *notes, *band_statement(s), *(str(g) for g in s.gaps)]
    lines += [f"penalised {f}" for f in found[:findings_shown]]
    if len(found) > findings_shown:
        lines.append(f"… and {len(found) - findings_shown} more penalised runs (settlement.html)")
    zoom = _zoom(s, record, zoom_s)
    charts = ([zoom] if zoom is not None else []) + settlement_charts(s, record)
    return Section(title, {"bid": _bid_table(doc), "settlement": settled}, lines, charts)
