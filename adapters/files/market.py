"""Market files: session history in, forecast and bid documents out (JSON and CSV).

* :func:`read_history` reads a sessions CSV (the scenario sessions' columns, see
  :mod:`adapters.files.history`) into a :class:`~markets.forecast.SessionHistory`; every
  problem is collected and raised once as :class:`~aggregator.errors.InvalidInput`.
* :func:`forecast_rows` / :func:`write_forecast` — per block: start/end (UTC), P50 and
  P90 of the up, down and symmetric flexibility (MW), and the planned power (baseline).
* :func:`bid_json` / :func:`write_bid` — a bid document per product and day:
  ``bid-<product>-<day>.json`` (everything: gate, rules, offers, energy bids, reasons, the
  volumes they rest on, the baseline with its key and series) and
  ``bid-<product>-<day>.csv`` (one row per capacity offer), plus
  ``energy-<product>-<day>.csv`` for aFRR (one row per quarter-hour and direction).

Units at this boundary are the market's: MW for volumes, EUR/MW per block for capacity,
EUR/MWh for energy, ISO 8601 UTC for times; the core stays in kW.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from adapters.files.scenario import read_sessions_csv
from aggregator.errors import InvalidInput, Issue
from markets.bids import BidDocument, DeliveryDay
from markets.forecast import Direction, FlexForecast, SessionHistory

__all__ = [
    "bid_json",
    "forecast_rows",
    "read_history",
    "write_bid",
    "write_forecast",
]


def read_history(path: Path, site_ids: tuple[str, ...]) -> SessionHistory:
    """The sessions CSV at ``path`` as a history over ``site_ids``; raises InvalidInput."""
    issues: list[Issue] = []
    specs = read_sessions_csv(path, issues)
    history = SessionHistory.from_specs(specs, site_ids)
    issues.extend(history.validate())
    if issues:
        raise InvalidInput(issues)
    return history


def _mw(kw: float) -> float:
    return round(float(kw) / 1000.0, 3)


def forecast_rows(fc: FlexForecast, day: DeliveryDay) -> list[dict[str, Any]]:
    """One row per block: P50/P90 per direction (MW) and the mean planned power (MW)."""
    base = fc.baseline_kw()
    rows: list[dict[str, Any]] = []
    p50 = {d: fc.p50_kw(d) for d in Direction}
    p90 = {d: fc.p90_kw(d) for d in Direction}
    for b in range(day.blocks.n):
        a, z = int(day.blocks.first[b]), int(day.blocks.last[b])
        row: dict[str, Any] = {
            "block": b,
            "start": day.block_starts[b].isoformat(),
            "end": day.block_ends[b].isoformat(),
            "baseline_mw": _mw(base[a:z].mean()),
        }
        for d in Direction:
            row[f"{d.value}_p50_mw"] = _mw(p50[d][b])
            row[f"{d.value}_p90_mw"] = _mw(p90[d][b])
        rows.append(row)
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]], header: list[str] | None = None) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        cols = header or (list(rows[0]) if rows else [])
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)


def write_forecast(out: Path, fc: FlexForecast, day: DeliveryDay) -> list[Path]:
    """``forecast-<day>.json`` (meta, blocks, per-step P50/P90) and ``forecast-<day>.csv``."""
    out.mkdir(parents=True, exist_ok=True)
    rows = forecast_rows(fc, day)
    per_step = {
        d.value: {
            "p50_mw": [_mw(v) for v in np.median(fc.per_step(d), axis=0)],
            "p90_mw": [_mw(v) for v in np.quantile(fc.per_step(d), 0.1, axis=0, method="lower")],
        }
        for d in Direction
    }
    doc = {
        "day": day.day.isoformat(),
        "start": day.start.isoformat(),
        "step_s": fc.step_s,
        "scenarios": fc.n_scenarios,
        "past_days": fc.past_days,
        "reservoir_s": fc.reservoir_s,
        "blocks": rows,
        "baseline_mw": [_mw(v) for v in fc.baseline_kw()],
        "per_step": per_step,
    }
    j = out / f"forecast-{day.day.isoformat()}.json"
    c = out / f"forecast-{day.day.isoformat()}.csv"
    j.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    _write_csv(c, rows)
    return [j, c]


def bid_json(doc: BidDocument) -> dict[str, Any]:
    """The bid document as JSON-ready data (see module doc)."""
    b = doc.baseline
    return {
        "product": doc.product,
        "day": doc.day.day.isoformat(),
        "gate": doc.gate.isoformat(),
        "created_at": doc.created_at.isoformat(),
        "late": doc.late,
        "pricing": doc.pricing,
        "reached_with": doc.reached_with,
        "sizing": doc.method,
        "reservoir_s": doc.reservoir_s,
        "scenarios": doc.n_scenarios,
        "firm_mw": {k: [_mw(x) for x in v] for k, v in doc.firm_kw.items()},
        "p50_mw": {k: [_mw(x) for x in v] for k, v in doc.p50_kw.items()},
        "offers": [
            {
                "block": o.block,
                "start": o.start.isoformat(),
                "end": o.end.isoformat(),
                "direction": o.direction,
                "volume_mw": o.volume_mw,
                "price_eur_per_mw": o.price_eur_per_mw,
                "rung": o.rung,
            }
            for o in doc.offers
        ],
        "energy_bids": [
            {
                "start": e.start.isoformat(),
                "direction": e.direction,
                "volume_mw": e.volume_mw,
                "price_eur_per_mwh": e.price_eur_per_mwh,
            }
            for e in doc.energy_bids
        ],
        "reasons": list(doc.reasons),
        "baseline": {
            "key": b.key,
            "pool_id": b.pool_id,
            "version": b.version,
            "created_at": b.created_at.isoformat(),
            "start": b.start.isoformat(),
            "step_s": b.step_s,
            "source": b.source,
            "supersedes": b.supersedes,
            "power_kw": [round(float(v), 3) for v in b.power_kw],
        },
    }


def write_bid(out: Path, doc: BidDocument) -> list[Path]:
    """``bid-<product>-<day>.json``/``.csv`` (+ ``energy-…csv`` for aFRR); the paths."""
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{doc.product.lower()}-{doc.day.day.isoformat()}"
    data = bid_json(doc)
    j = out / f"bid-{stem}.json"
    j.write_text(json.dumps(data, indent=2), encoding="utf-8")
    c = out / f"bid-{stem}.csv"
    offer_cols = ["block", "start", "end", "direction", "volume_mw", "price_eur_per_mw", "rung"]
    _write_csv(c, data["offers"], offer_cols)
    paths = [j, c]
    if data["energy_bids"]:
        e = out / f"energy-{stem}.csv"
        _write_csv(e, data["energy_bids"])
        paths.append(e)
    return paths
