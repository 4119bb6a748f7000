"""Progress bars: on stderr when asked (default: a terminal), never on stdout or in --json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapters.cli.main import app
from adapters.cli.progress import stage_bar

RURAL = "1-LV-rural1--0-sw"


def test_a_disabled_bar_draws_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    bar = stage_bar(False, stages=2)
    bar.start("one")
    bar.start("two")
    bar.close()
    bar.close()
    assert capsys.readouterr() == ("", "")


def test_a_stage_bar_names_each_stage_and_ends_full(capsys: pytest.CaptureFixture[str]) -> None:
    bar = stage_bar(True, stages=3)
    for name in ("load", "flow", "hosting"):
        bar.start(name)
    inner = bar._bar
    assert inner is not None
    bar.close()
    bar.close()  # twice is harmless
    assert inner.n == 3
    out, err = capsys.readouterr()
    assert out == ""
    assert all(name in err for name in ("load", "flow", "hosting")) and "2/3 stages" in err


def test_grid_check_progress_goes_to_stderr_only() -> None:
    args = ["grid", "check", RURAL, "--json", "--max-sites", "1"]
    shown = CliRunner().invoke(app, [*args, "--progress"])
    assert shown.exit_code == 0, shown.output
    assert "hosting capacity" in shown.stderr and "stages" in shown.stderr
    assert json.loads(shown.stdout)["buses"] == 15  # stdout stays the JSON alone
    quiet = CliRunner().invoke(app, [*args, "--no-progress"])
    assert quiet.exit_code == 0 and "stages" not in quiet.stderr


def test_simulate_names_its_stages_only_with_progress(tmp_path: Path) -> None:
    from tests.adapters.cli.test_main import _short_scenario

    short = _short_scenario(tmp_path)
    args = ["simulate", str(short), "--json", "--no-grid"]
    shown = CliRunner().invoke(app, [*args, "--progress"])
    assert shown.exit_code == 0, shown.output
    assert "loading" in shown.stderr and "simulating" in shown.stderr
    assert json.loads(shown.stdout)["max_limit_excess_kw"] == 0
    quiet = CliRunner().invoke(app, [*args, "--no-progress"])
    assert quiet.exit_code == 0, quiet.output
    assert "loading" not in quiet.stderr and "simulating" not in quiet.stderr
