"""Golden AC cases as data (``tests/data/ac/<case>/{input,params,expected}.json``).

Each case fixes a feeder, times and EV power per bus; every engine named in its params
must reproduce the expected per-step extremes within the tolerances stated in the data,
and find exactly the expected violations. ``tests/data/ac/regenerate.py`` made them.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import grid
from grid.powerflow import run_timeseries

ROOT = Path(__file__).resolve().parents[1] / "data" / "ac"
CASES = sorted(p.name for p in ROOT.iterdir() if (p / "expected.json").is_file())


def _load(case: str, name: str) -> Any:
    return json.loads((ROOT / case / f"{name}.json").read_text())


def test_there_are_golden_cases() -> None:
    assert len(CASES) >= 3


@pytest.mark.parametrize("case", CASES)
def test_engines_reproduce_the_golden_case(case: str) -> None:
    given, params, expected = (_load(case, n) for n in ("input", "params", "expected"))
    model = grid.load_feeder(given["feeder"])
    start = datetime.fromisoformat(given["start"])
    times = [start + timedelta(seconds=given["step_s"] * i) for i in range(given["steps"])]
    extra = {bus: np.array(v, dtype=float) for bus, v in given["extra_kw"].items()}
    tol = params["tolerance"]
    for engine in params["engines"]:
        res = run_timeseries(model, times, extra, engine=engine)
        np.testing.assert_allclose(
            np.nanmax(res.line_loading_pct, axis=1),
            expected["max_line_loading_pct"],
            atol=tol["loading_pct"],
        )
        np.testing.assert_allclose(
            np.nanmax(res.trafo_loading_pct, axis=1),
            expected["max_trafo_loading_pct"],
            atol=tol["loading_pct"],
        )
        np.testing.assert_allclose(
            np.nanmin(res.vm_pu, axis=1), expected["min_vm_pu"], atol=tol["vm_pu"]
        )
        found = [[v.step, v.element, v.kind] for v in res.violations()]
        assert found == expected["violations"], engine
