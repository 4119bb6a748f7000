"""The ``gridflex`` command line: the composition root of the embedded default.

Commands: ``demo`` (built-in scenario, summary table + HTML report), ``simulate
SCENARIO`` (a scenario file), ``schema export DIR`` (JSON Schemas of every message).
Everything runs on the in-process bus; no server is needed.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from adapters.cli.edge import edge as edge_command
from adapters.cli.grid import grid_app
from adapters.cli.market import market_app
from adapters.dso.audit import audit_app
from adapters.files.outputs import format_summary, write_outputs
from adapters.stream.inprocess import InProcessBus
from aggregator.errors import InvalidInput
from aggregator.messages import export_schemas
from aggregator.service.events import EventSink
from aggregator.sim.scenario import Scenario
from aggregator.sim.simulation import SimulationResult, run_simulation
from markets.activation import ReserveActivation

if TYPE_CHECKING:  # pandapower & co. load only in the commands that use a feeder
    from grid.feeders import FeederModel

__all__ = ["app", "main"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="gridflex: grid-aware flexibility aggregation for EV charging.",
)
schema_app = typer.Typer(no_args_is_help=True, help="Message schemas.")
app.add_typer(schema_app, name="schema")
app.add_typer(audit_app, name="audit", help="Hash-chained audit log of limits and fallbacks.")
app.add_typer(grid_app, name="grid")
app.add_typer(market_app, name="market")
app.command(name="edge")(edge_command)


def _progress(enabled: bool) -> tuple[Callable[[int, int], None] | None, Callable[[], None]]:
    if not enabled:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=None, desc="simulating", unit="tick", file=sys.stderr, mininterval=0.5)

    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.n = done
        if done % 200 == 0 or done == total:
            bar.refresh()

    return update, bar.close


@contextlib.contextmanager
def _native_stdout_to_stderr() -> Iterator[None]:
    """Send what native code (HiGHS prints a banner from C) writes to fd 1 to stderr, so
    stdout carries only what the command means to print (e.g. ``--json``)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _run(
    scenario: Scenario,
    feeder: FeederModel | None,
    out: Path | None,
    progress: bool,
    record: EventSink | None = None,
) -> SimulationResult:
    """Simulate; with a feeder model the plans respect its AC limits (grid-aware);
    ``record`` gets the pool samples (the market's 1 s record)."""
    update, close = _progress(progress)
    grid = None
    if feeder is not None:
        from grid.model import FeederGrid

        grid = FeederGrid(feeder, scenario.topology)
    try:
        with _native_stdout_to_stderr():
            result = run_simulation(
                scenario,
                InProcessBus(),
                progress=update,
                grid=grid,
                activation=ReserveActivation(),  # the market rule (FCR droop, ramp-limited aFRR)
                record=record,
            )
    finally:
        close()
    if out is not None:
        write_outputs(result, out)
    return result


def _fail(exc: InvalidInput) -> None:
    typer.echo("error: the input was rejected:", err=True)
    for issue in exc.issues:
        typer.echo(f"  - {issue}", err=True)
    raise typer.Exit(code=2)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for CSVs, summary.json and report.html")] = Path(
        "gridflex-demo"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON")] = False,
    evses: Annotated[int, typer.Option(min=1, max=5000, help="Number of EVSEs")] = 300,
    seed: Annotated[int, typer.Option(help="Random seed of the sessions")] = 7,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = sys.stderr.isatty(),
    grid: Annotated[
        bool, typer.Option("--grid/--no-grid", help="Plan with the feeder's AC limits")
    ] = True,
) -> None:
    """A day of a few hundred EVs on a real SimBench LV feeder, with no server."""
    from adapters.cli.demo import demo_scenario_and_feeder
    from adapters.cli.demo_market import TickRecorder, demo_market

    if progress:  # the feeder and its profiles take a while before the first tick
        typer.echo("loading the SimBench feeder and the demo sessions …", err=True)
    try:
        scenario, feeder = demo_scenario_and_feeder(evses=evses, seed=seed)
        recorder = TickRecorder(scenario.name, scenario)
        result = _run(scenario, feeder if grid else None, None, progress, recorder)
        market = demo_market(scenario, recorder, out)  # bid, 1 s record, settlement
        result.summary.update(market.summary)
        write_outputs(result, out, sections=[market.section])
    except InvalidInput as exc:
        _fail(exc)
        return
    if as_json:
        typer.echo(json.dumps(result.summary, indent=2))
        return
    typer.echo("gridflex demo — feeder " + str(result.summary["feeder"]))
    typer.echo(format_summary(result.summary))
    typer.echo(
        f"\nreport: {out / 'report.html'}   data: {out}/setpoints.csv, sites.csv, summary.json"
        ", record.csv, settlement.csv, bid-fcr-*.json"
    )


@app.command()
def simulate(
    scenario: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="YAML or JSON scenario")
    ],
    out: Annotated[
        Path | None, typer.Option(help="Folder for setpoints.csv, sites.csv, summary.json")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON")] = False,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Progress bar (default: on a terminal)")
    ] = sys.stderr.isatty(),
    grid: Annotated[
        bool, typer.Option("--grid/--no-grid", help="Plan with the feeder's AC limits")
    ] = True,
) -> None:
    """Run a scenario file closed-loop through the service."""
    try:
        from adapters.files.scenario import load_scenario_and_feeder

        if progress:
            typer.echo(f"loading {scenario} …", err=True)
        loaded, feeder = load_scenario_and_feeder(scenario)
        result = _run(loaded, feeder if grid else None, out, progress)
    except InvalidInput as exc:
        _fail(exc)
        return
    if as_json:
        typer.echo(json.dumps(result.summary, indent=2))
    else:
        typer.echo(format_summary(result.summary))


@app.command()
def serve(
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML settings (environment overrides)")
    ] = None,
) -> None:
    """Run the service: on Kafka when GRIDFLEX_KAFKA__BOOTSTRAP is set, else in-process."""
    from adapters.serve.run import serve as run
    from adapters.serve.settings import load_settings

    try:
        settings = load_settings(config)
    except InvalidInput as exc:
        _fail(exc)
        return
    raise typer.Exit(code=run(settings))


@schema_app.command("export")
def schema_export(directory: Annotated[Path, typer.Argument(help="Target folder")]) -> None:
    """Write the JSON Schema of every message family into DIRECTORY."""
    for p in export_schemas(directory):
        typer.echo(str(p))


def main() -> None:
    app()
