"""The demo's market part: an FCR bid for the demo pool, its activation, its settlement.

``gridflex demo`` holds a symmetric FCR reserve (the scenario's ``reserve_kw``). Around
that day this module does what an aggregator does, each step through the same door as the
``gridflex market`` command that does it alone:

* **bid** — the pool's flexibility for the demo's delivery day (the German calendar date
  of the scenario's start) is forecast from the scenario's own sessions
  (:func:`adapters.cli.market.forecast_pool`: one past day, so P90 ≈ P50, and the bid says
  so) and an FCR bid is sized (:func:`adapters.cli.market.bid_documents`), made at 00:00
  D-1 local, before the 08:00 gate. A pool below 1 MW offers nothing: the document's
  reasons say why, and the report shows them instead of a bid;
* **activation** — the run's 1 s record (:mod:`markets.record`): requested vs delivered;
* **settlement** — the record against the FCR acceptance band and the FCR availability
  (:func:`adapters.cli.market_run.settle_record`).

What is settled is the reserve the demo *held* (its ``reserve_kw``), not an award: the
demo pool is too small to be awarded anything, so the settlement shows how the reserve it
holds would settle.

The record of a simulation. The simulation steps every ``tick_s`` (the demo: 10 s) and its
fleet holds its power through a tick (it integrates energy as power × tick), so
:class:`TickRecorder` writes each tick's sample into every whole second of that tick: the
values the simulation itself holds there (no interpolation, and a tick with no sample
stays a gap). The summary states the sample period (``record_sample_s``). The service
proper samples every second (:mod:`aggregator.service.poolrecord`).

Summary keys: ``fcr_bid_*`` (offers, MW offered, the largest firm volume, and
``fcr_bid_no_bid_reason`` when there is no offer), ``record_*`` (seconds, sample period,
gaps), ``fcr_availability``, ``settlement_*`` (compliant, seconds outside the band and
their share inside, penalised seconds and those with the pool idle, kWh ordered,
delivered and short).

Files in the demo's folder: ``bid-fcr-D.json``/``.csv``, ``record.csv`` (the 1 s record),
``settlement.csv`` (per quarter-hour) and ``settlement.html`` (the settle report).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np

from adapters.cli.market import ProductChoice, bid_documents, forecast_pool, pool_of
from adapters.cli.market_run import availability_text, settle_record, write_settlement
from adapters.files.market import write_bid
from adapters.report.html import Section
from adapters.report.market import market_section
from aggregator.service.events import PoolSampled, ServiceEvent
from aggregator.sim.scenario import Scenario
from markets.bids import MARKET_TZ, BidDocument, delivery_day
from markets.record import PoolRecord, SecondRecorder, record_to_csv
from markets.settlement import FCR_BAND, FcrAvailability, Settlement

__all__ = ["DemoMarket", "TickRecorder", "demo_market"]

_IDLE_KW = 1e-6  # a pool at 0 kW planned and measured: no car drawing, nothing to move


class TickRecorder:
    """An event sink that builds the 1 s record of a simulation stepping every ``tick_s``:
    each tick's :class:`PoolSampled` fills the whole seconds of its tick (see the module
    doc); a tick of 1 s or less records one sample per second, as the service does."""

    def __init__(self, pool_id: str, scenario: Scenario) -> None:
        self.tick_s = scenario.dispatch_tick_s
        self._hold = max(1, math.floor(self.tick_s))
        self._rec = SecondRecorder(pool_id, scenario.start, scenario.end)

    def emit(self, event: ServiceEvent) -> None:
        if not isinstance(event, PoolSampled):
            return
        self._rec.emit(event)
        for j in range(1, self._hold):  # the same sample: the tick's held values
            self._rec.emit(dataclasses.replace(event, at=event.at + timedelta(seconds=j)))

    def record(self) -> PoolRecord:
        return self._rec.record()


@dataclass(frozen=True)
class DemoMarket:
    """The market part of a demo run: summary keys, the report's section, files written."""

    bid: BidDocument
    settlement: Settlement
    availability: FcrAvailability
    summary: dict[str, object]
    section: Section
    paths: tuple[Path, ...]


def _bid_summary(doc: BidDocument) -> dict[str, object]:
    firm = doc.firm_kw.get("SYM")
    largest = float(firm.max(initial=0.0)) / 1000.0 if firm is not None else 0.0
    out: dict[str, object] = {
        "fcr_bid_day": doc.day.day.isoformat(),
        "fcr_bid_offers": len(doc.offers),
        "fcr_bid_offered_mw": sum(o.volume_mw for o in doc.offers),
        "fcr_bid_largest_firm_mw": round(largest, 3),
    }
    if not doc.offers:  # the pool-level reason (the last one) says why there is no bid
        out["fcr_bid_no_bid_reason"] = doc.reasons[-1] if doc.reasons else "no offer"
    return out


def _settlement_summary(
    rec: PoolRecord, s: Settlement, a: FcrAvailability, sample_s: float
) -> dict[str, object]:
    tot = s.totals()
    idle = s.penalised & (np.abs(np.nan_to_num(rec.baseline_kw)) < _IDLE_KW)
    idle &= np.abs(np.nan_to_num(rec.measured_kw)) < _IDLE_KW
    return {
        "record_seconds": rec.seconds,
        "record_sample_s": sample_s,
        "record_gaps": len(s.gaps),
        "record_missing_s": int(tot["missing_s"]),
        "fcr_availability": round(a.availability, 4),
        "settlement_compliant": s.compliant,
        "settlement_outside_s": int(tot["outside_s"]),
        "settlement_inside_share": round(1.0 - tot["outside_s"] / max(tot["seconds"], 1.0), 4),
        "settlement_penalised_s": int(tot["penalised_s"]),
        "settlement_penalised_idle_s": int(idle.sum()),
        "settlement_ordered_kwh": round(tot["ordered_kwh"], 3),
        "settlement_delivered_kwh": round(tot["delivered_kwh"], 3),
        "settlement_shortfall_kwh": round(tot["shortfall_kwh"], 3),
    }


def demo_market(
    scenario: Scenario,
    recorder: TickRecorder,
    out: Path,
    *,
    scenarios: int = 200,
    reservoir_min: float = 15.0,
    seed: int = 0,
) -> DemoMarket:
    """Bid, record and settle the demo run (see the module doc); writes into ``out``."""
    pool = pool_of(scenario)
    day = delivery_day(scenario.start.astimezone(MARKET_TZ).date())
    fc = forecast_pool(pool, day, None, scenarios, reservoir_min, seed)
    made = day.start - timedelta(days=1)  # 00:00 D-1 local: before the 08:00 gate
    (doc,) = bid_documents(fc, day, pool.name, ProductChoice.FCR, made=made)
    rec = recorder.record()
    s, avail = settle_record(rec, FCR_BAND)
    assert avail is not None  # FCR: availability is part of the settlement
    out.mkdir(parents=True, exist_ok=True)
    paths = write_bid(out, doc)
    record_csv = out / "record.csv"
    record_csv.write_text(record_to_csv(rec), encoding="utf-8")
    paths += [record_csv, *write_settlement(out, s, rec, page="settlement.html")]
    summary = _bid_summary(doc) | _settlement_summary(rec, s, avail, recorder.tick_s)
    notes = [
        f"forecast from the scenario's own sessions: {fc.past_days} past day(s) of this "
        f"weekday, {fc.n_scenarios} scenarios (P90 ≈ P50 with one day; "
        "`gridflex market bid --history` takes weeks of sessions)",
        f"the simulation steps every {recorder.tick_s:g} s: each second of the 1 s record "
        "carries its tick's sample (the fleet holds its power through a tick)",
        "settled: the FCR reserve the demo held "
        f"({scenario.reserve_kw:g} kW), not an award — "
        + availability_text(avail)
        + " (availability counts the reserve the service reports holding; the band test "
        "says whether it was delivered)",
        f"{int(s.penalised.sum())} s penalised, {summary['settlement_penalised_idle_s']} of "
        "them with the pool idle (0 kW planned and measured: no car drawing power to move)",
    ]
    return DemoMarket(
        bid=doc,
        settlement=s,
        availability=avail,
        summary=summary,
        section=market_section(doc, s, rec, notes=notes),
        paths=tuple(paths),
    )
