"""``gridflex market``: forecast the pool's flexibility and bid it (FCR, aFRR).

* ``history OUT.csv`` writes a synthetic session history for a scenario's sites (the
  demo feeder's by default; ``--copies K`` makes a pool of K copies of its feeder).
* ``forecast SCENARIO --day D`` draws session scenarios for delivery day ``D`` (German
  calendar date) from ``--history`` (else the scenario's own sessions) and prints, per 4 h
  block, P50 and P90 of the up, down and symmetric flexibility within the scenario's
  site, feeder and DSO limits; writes ``forecast-D.json``/``.csv`` into ``--out``.
* ``bid SCENARIO --day D --product fcr|afrr|both`` sizes the bids from the same forecast
  (firm rung at ``--reached-with`` — the quantile, or with ``--method cvar`` the CVaR LP
  of :mod:`markets.bids.cvar` — increment to P50; FCR first, aFRR from what is left
  with ``both``), prints the offers and every reason a block got none, writes
  ``bid-<product>-D.json``/``.csv`` (and aFRR's ``energy-…csv``) into ``--out``.

``SCENARIO`` is a scenario file or ``demo`` (the built-in demo feeder). Exit codes: 0 done
(a pool too small to bid is a result, printed with its reasons), 2 input rejected.
H9b's ``prequalify`` and ``settle`` join the group at the marked registration point.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from adapters.cli.market_run import _native_stdout_to_stderr
from adapters.files.history import generate_history, write_history_csv
from adapters.files.market import bid_json, forecast_rows, read_history, write_bid, write_forecast
from aggregator.errors import InvalidInput
from aggregator.limits import DsoLimit, LimitBook, TargetType
from aggregator.sim.scenario import Scenario
from aggregator.topology import Feeder, Topology
from markets.bids import AFRR_RULES, FCR_RULES, BidDocument, BidPrices, delivery_day, make_bids
from markets.bids.calendar import QUARTER_S, DeliveryDay
from markets.forecast import FlexForecast, SessionHistory, StepGrid, forecast_flexibility

__all__ = [
    "Pool",
    "ProductChoice",
    "bid_documents",
    "forecast_pool",
    "load_pool",
    "market_app",
    "pool_of",
]

market_app = typer.Typer(
    no_args_is_help=True, help="Markets: forecast, bid, prequalify and settle reserve."
)


@dataclass(frozen=True)
class Pool:
    """A pool's topology and DSO limits (``copies`` of a scenario's feeder), its sessions."""

    name: str
    topology: Topology
    limits: tuple[DsoLimit, ...]
    scenario: Scenario


def _copy_id(i: str, k: int, copies: int) -> str:
    return i if copies == 1 else f"{i}#{k + 1}"


def load_pool(spec: str, copies: int = 1) -> Pool:
    """A scenario file or ``demo``, its feeder repeated ``copies`` times (ids ``#k``)."""
    if spec == "demo":
        from adapters.cli.demo import demo_scenario

        scenario = demo_scenario()
    else:
        from adapters.files.scenario import load_scenario

        scenario = load_scenario(Path(spec))
    return pool_of(scenario, copies)


def pool_of(scenario: Scenario, copies: int = 1) -> Pool:
    """The pool of a loaded scenario, its feeder repeated ``copies`` times (ids ``#k``)."""
    topo = scenario.topology
    feeders = tuple(
        Feeder(_copy_id(f.feeder_id, k, copies), f.limit_kw, f.name)
        for k in range(copies)
        for f in topo.feeders
    )
    sites = tuple(
        dataclasses.replace(
            s,
            site_id=_copy_id(s.site_id, k, copies),
            feeder_id=_copy_id(s.feeder_id, k, copies),
        )
        for k in range(copies)
        for s in topo.sites
    )
    limits: list[DsoLimit] = []
    for k in range(copies):
        for al in scenario.limits:
            lim = al.limit
            target = lim.target_id
            if lim.target_type in (TargetType.SITE, TargetType.FEEDER):
                target = _copy_id(target, k, copies)
            elif k:  # a fleet-wide limit counts once
                continue
            limits.append(_replace_limit(lim, target, k, copies))
    name = scenario.name if copies == 1 else f"{scenario.name}x{copies}"
    return Pool(name, Topology(feeders, sites, topo.fleet_limit_kw), tuple(limits), scenario)


def _replace_limit(lim: DsoLimit, target: str, k: int, copies: int) -> DsoLimit:
    return dataclasses.replace(lim, target_id=target, event_id=_copy_id(lim.event_id, k, copies))


def _grid(pool: Pool, day: DeliveryDay) -> StepGrid:
    caps = LimitBook(pool.topology, pool.limits).caps_for_steps(day.start, QUARTER_S, day.steps)
    return StepGrid(day.start.timestamp(), QUARTER_S, day.steps, caps, pool.topology.site_feeder)


def _history(pool: Pool, path: Path | None) -> SessionHistory:
    site_ids = tuple(s.site_id for s in pool.topology.sites)
    if path is not None:
        return read_history(path, site_ids)
    h = SessionHistory.from_specs(pool.scenario.sessions, site_ids)
    issues = h.validate()
    if issues:
        raise InvalidInput(issues)
    return h


def _reject(exc: InvalidInput) -> typer.Exit:
    typer.echo("error: the input was rejected:", err=True)
    for issue in exc.issues:
        typer.echo(f"  - {issue}", err=True)
    return typer.Exit(code=2)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


class SizingChoice(StrEnum):
    QUANTILE = "quantile"
    CVAR = "cvar"


class ProductChoice(StrEnum):
    FCR = "fcr"
    AFRR = "afrr"
    BOTH = "both"


Scen = Annotated[str, typer.Argument(help="Scenario file, or 'demo' (the built-in feeder)")]
Day = Annotated[str, typer.Option(help="Delivery day, YYYY-MM-DD (German calendar)")]
HistoryOpt = Annotated[
    Path | None,
    typer.Option(
        exists=True,
        dir_okay=False,
        help="Sessions CSV of past days (default: the scenario's sessions)",
    ),
]
Copies = Annotated[int, typer.Option(min=1, max=200, help="Pool of this many copies of the feeder")]
NScen = Annotated[int, typer.Option("--scenarios", min=1, help="Number of scenarios drawn")]
Reservoir = Annotated[
    float,
    typer.Option("--reservoir-min", min=1.0, help="Energy reservoir held (minutes): 15 or 30"),
]


def forecast_pool(
    pool: Pool, d: DeliveryDay, history: Path | None, n: int, reservoir_min: float, seed: int
) -> FlexForecast:
    """The pool's flexibility forecast for ``d`` (the door of ``forecast`` and ``bid``):
    sessions from ``history`` (else the scenario's own), ``n`` scenarios."""
    return forecast_flexibility(
        _history(pool, history),
        _grid(pool, d),
        d.blocks,
        n_scenarios=n,
        reservoir_s=60.0 * reservoir_min,
        seed=seed,
    )


def _forecast(
    scenario: str, day: str, history: Path | None, copies: int, n: int, reservoir: float, seed: int
) -> tuple[Pool, DeliveryDay, FlexForecast]:
    d = delivery_day(date.fromisoformat(day))
    pool = load_pool(scenario, copies)
    fc = forecast_pool(pool, d, history, n, reservoir, seed)
    if fc.past_days < 3:
        typer.echo(
            f"warning: the scenarios come from {fc.past_days} past day(s) of this weekday: "
            "no spread to speak of, P90 ≈ P50; pass --history with weeks of sessions",
            err=True,
        )
    return pool, d, fc


@market_app.command("history")
def history_command(
    out: Annotated[Path, typer.Argument(dir_okay=False, help="Sessions CSV to write")],
    scenario: Annotated[str, typer.Option(help="Scenario file or 'demo'")] = "demo",
    copies: Copies = 1,
    evses: Annotated[int, typer.Option(min=1, help="EVSEs per copy of the feeder")] = 300,
    weeks: Annotated[int, typer.Option(min=1, max=104, help="Weeks of history")] = 12,
    until: Annotated[str, typer.Option(help="Last day (exclusive), YYYY-MM-DD")] = "2026-01-13",
    seed: Annotated[int, typer.Option(help="Random seed")] = 11,
) -> None:
    """Write a synthetic session history for the pool's sites (the demo's patterns)."""
    try:
        pool = load_pool(scenario, copies)
    except InvalidInput as exc:
        raise _reject(exc) from exc
    end = datetime.combine(date.fromisoformat(until), datetime.min.time(), tzinfo=UTC)
    first = end - timedelta(weeks=weeks)
    sites = [s.site_id for s in pool.topology.sites]
    specs = generate_history(
        sites, evses=evses * copies, first_day=first, days=7 * weeks, seed=seed
    )
    write_history_csv(out, specs)
    typer.echo(
        f"{len(specs)} sessions of {evses * copies} EVSEs on {len(sites)} sites, "
        f"{first.date()} – {end.date()}: {out}"
    )


@market_app.command("forecast")
def forecast_command(
    scenario: Scen,
    day: Day,
    history: HistoryOpt = None,
    copies: Copies = 1,
    scenarios: NScen = 200,
    reservoir_min: Reservoir = 15.0,
    seed: Annotated[int, typer.Option(help="Random seed of the draw")] = 0,
    out: Annotated[Path, typer.Option(help="Folder for forecast-DAY.json/.csv")] = Path(
        "gridflex-market"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the blocks as JSON")] = False,
) -> None:
    """Flexibility per 4 h block (P50/P90, MW) for a delivery day."""
    try:
        pool, d, fc = _forecast(scenario, day, history, copies, scenarios, reservoir_min, seed)
    except InvalidInput as exc:
        raise _reject(exc) from exc
    paths = write_forecast(out, fc, d)
    rows = forecast_rows(fc, d)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(
        f"pool {pool.name}: {len(pool.topology.sites)} sites, {fc.n_scenarios} scenarios "
        f"from {fc.past_days} past days, reservoir {reservoir_min:g} min; MW"
    )
    keys = [
        "baseline_mw",
        "up_p50_mw",
        "up_p90_mw",
        "down_p50_mw",
        "down_p90_mw",
        "symmetric_p50_mw",
        "symmetric_p90_mw",
    ]
    table = [[r["start"][11:16] + "Z", *[f"{r[k]:.3f}" for k in keys]] for r in rows]
    typer.echo(
        _table(
            table,
            ["block", "base", "up P50", "up P90", "down P50", "down P90", "sym P50", "sym P90"],
        )
    )
    typer.echo("written: " + ", ".join(str(p) for p in paths))


def _offers_text(doc: BidDocument) -> str:
    rows = [
        [
            o.start.isoformat()[11:16] + "Z",
            o.direction,
            str(o.volume_mw),
            o.rung,
            f"{o.price_eur_per_mw:g}",
        ]
        for o in doc.offers
    ]
    head = (
        f"{doc.product} {doc.day.day} ({doc.pricing}), gate {doc.gate.isoformat()}"
        f"{' — LATE, the auction is closed' if doc.late else ''}"
    )
    lines = [head]
    if rows:
        lines.append(_table(rows, ["block", "dir", "MW", "rung", "EUR/MW"]))
    lines += [f"  {r}" for r in doc.reasons]
    return "\n".join(lines)


def bid_documents(
    fc: FlexForecast,
    d: DeliveryDay,
    pool_id: str,
    product: ProductChoice,
    *,
    made: datetime,
    prices: BidPrices | None = None,
    reached_with: float = 0.93,
    method: str = "quantile",
) -> list[BidDocument]:
    """The bid documents of ``product`` from a forecast (the door of ``bid``; the demo's
    report uses it too): FCR first, aFRR from what the FCR offers leave with ``both``."""
    docs: list[BidDocument] = []
    if product in (ProductChoice.FCR, ProductChoice.BOTH):
        docs.append(
            make_bids(
                fc,
                d,
                FCR_RULES,
                created_at=made,
                pool_id=pool_id,
                prices=prices,
                reached_with=reached_with,
                method=method,
            )
        )
    if product in (ProductChoice.AFRR, ProductChoice.BOTH):
        rest = fc
        if docs:  # what FCR would take, if awarded, is not offered again
            sym = [1000.0 * docs[0].volume_mw("SYM", b) for b in range(d.blocks.n)]
            rest = fc.less(np.array(sym), np.array(sym))
        docs.append(
            make_bids(
                rest,
                d,
                AFRR_RULES,
                created_at=made,
                pool_id=pool_id,
                prices=prices,
                reached_with=reached_with,
                method=method,
            )
        )
    return docs


@market_app.command("bid")
def bid_command(
    scenario: Scen,
    day: Day,
    product: Annotated[
        ProductChoice, typer.Option(help="fcr, afrr or both (FCR first)")
    ] = ProductChoice.BOTH,
    history: HistoryOpt = None,
    copies: Copies = 1,
    scenarios: NScen = 200,
    reservoir_min: Reservoir = 15.0,
    reached_with: Annotated[
        float, typer.Option(min=0.5, max=0.999, help="Chance constraint of the firm rung")
    ] = 0.93,
    firm_price: Annotated[float, typer.Option(help="Firm rung, EUR/MW per block")] = 8.0,
    increment_price: Annotated[float, typer.Option(help="P50 increment, EUR/MW per block")] = 20.0,
    energy_price: Annotated[float, typer.Option(help="aFRR energy bids, EUR/MWh")] = 150.0,
    method: Annotated[
        SizingChoice,
        typer.Option(help="Firm volume: the quantile (chance constraint) or the CVaR LP"),
    ] = SizingChoice.QUANTILE,
    now: Annotated[str | None, typer.Option(help="Bid time, ISO 8601 (default: now)")] = None,
    seed: Annotated[int, typer.Option(help="Random seed of the draw")] = 0,
    out: Annotated[Path, typer.Option(help="Folder for the bid documents")] = Path(
        "gridflex-market"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the documents as JSON")] = False,
) -> None:
    """Size FCR/aFRR bids for a delivery day and write the bid documents."""
    try:
        pool, d, fc = _forecast(scenario, day, history, copies, scenarios, reservoir_min, seed)
    except InvalidInput as exc:
        raise _reject(exc) from exc
    made = datetime.fromisoformat(now) if now else datetime.now(UTC)
    if made.tzinfo is None:
        raise _reject(InvalidInput("--now must carry a time zone (e.g. Z)"))
    prices = BidPrices(firm_price, increment_price, energy_price)
    with _native_stdout_to_stderr():  # the CVaR LP's solver banner stays off stdout
        docs = bid_documents(
            fc,
            d,
            pool.name,
            product,
            made=made,
            prices=prices,
            reached_with=reached_with,
            method=method.value,
        )
    written: list[Path] = []
    for doc in docs:
        written += write_bid(out, doc)
    if as_json:
        payload: list[dict[str, Any]] = [bid_json(doc) for doc in docs]
        typer.echo(json.dumps(payload, indent=2))
        return
    for doc in docs:
        typer.echo(_offers_text(doc))
    typer.echo("written: " + ", ".join(str(p) for p in written))


# ---- registration point: other market commands join the group here -------------------
# H9b: ``prequalify`` and ``settle`` (adapters/cli/market_run.py) add themselves below.
from adapters.cli.market_run import register as _register_run  # noqa: E402

_register_run(market_app)
