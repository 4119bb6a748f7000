"""``gridflex audit``: check an audit log's chain (``verify``) and print its head (``head``).

``head`` prints the hash of the last entry of an *intact* log (exit 1 and every problem
otherwise): keep it somewhere the log's writer cannot reach, and pass it later to
``verify --head`` — the only way to detect entries removed at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from adapters.dso.chain import GENESIS, AuditReport, check_log

__all__ = ["audit_app"]

audit_app = typer.Typer(no_args_is_help=True, help="The hash-chained audit log.")


@audit_app.callback()
def _audit() -> None:
    """The hash-chained audit log (limits received and cancelled, fallbacks taken)."""


def _fail(report: AuditReport) -> None:
    for issue in report.issues:
        typer.echo(f"problem: {issue}")
    typer.echo(f"tampered or damaged: {len(report.issues)} problems, {report.entries} entries")
    raise typer.Exit(code=1)


@audit_app.command("verify")
def verify_command(
    file: Annotated[Path, typer.Argument(help="The audit log (JSON lines)")],
    head: Annotated[
        str | None, typer.Option(help="Expected hash of the last entry, kept elsewhere")
    ] = None,
) -> None:
    """Check the hash chain: exit 0 when intact, 1 listing every problem otherwise."""
    report = check_log(file, head=head)
    if not report.ok:
        _fail(report)
    typer.echo(f"ok: {report.entries} entries")


@audit_app.command("head")
def head_command(
    file: Annotated[Path, typer.Argument(help="The audit log (JSON lines)")],
) -> None:
    """Print the hash of the last entry (64 hex digits; zeros for an empty log) and exit 0,
    after checking the whole chain (exit 1 listing every problem when it is broken)."""
    report = check_log(file)
    if not report.ok:
        _fail(report)
    typer.echo(report.head or GENESIS)
