"""Regenerate the golden AC cases (run from the repo root): pandapower is the reference.

Each case: ``input.json`` (feeder, times, extra kW per bus), ``params.json`` (engines and
tolerances), ``expected.json`` (per-step extremes and violations). Review a diff before
committing it: a changed expectation is a changed physics claim.
"""

import json
import pathlib
from datetime import datetime, timedelta

import numpy as np

import grid
from grid.powerflow import run_timeseries

cases = {
    "lv_rural2_evening_ev": ("1-LV-rural2--0-sw", "2016-01-14T17:00:00+00:00", 4, 4, 22.0),
    "lv_semiurb5_morning_ramp": ("1-LV-semiurb5--0-sw", "2016-01-14T06:00:00+00:00", 4, 6, 11.0),
    "mv_urban_noon_pv_hubs": ("1-MV-urban--0-sw", "2016-06-15T12:00:00+00:00", 4, 3, 2000.0),
}
root = pathlib.Path("tests/data/ac")
for name, (code, start, steps, sites, kw) in cases.items():
    model = grid.load_feeder(code)
    buses = [p.bus for p in grid.place_sites(model, sites, seed=5)]
    ev = {
        b: [round(kw * (1 + k) * (1 + t) / steps, 3) for t in range(steps)]
        for k, b in enumerate(buses)
    }
    t0 = datetime.fromisoformat(start)
    times = [t0 + timedelta(minutes=15 * i) for i in range(steps)]
    res = run_timeseries(model, times, {b: np.array(v) for b, v in ev.items()}, engine="pandapower")
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "input.json").write_text(
        json.dumps(
            {"feeder": code, "start": start, "step_s": 900.0, "steps": steps, "extra_kw": ev},
            indent=1,
        )
        + "\n"
    )
    (d / "params.json").write_text(
        json.dumps(
            {
                "engines": ["pgm", "pandapower"],
                "tolerance": {"vm_pu": 1e-5, "loading_pct": 0.01},
                "reference": "pandapower runpp (numba=False), taps acting",
            },
            indent=1,
        )
        + "\n"
    )
    (d / "expected.json").write_text(
        json.dumps(
            {
                "max_line_loading_pct": [
                    round(float(x), 6) for x in np.nanmax(res.line_loading_pct, axis=1)
                ],
                "max_trafo_loading_pct": [
                    round(float(x), 6) for x in np.nanmax(res.trafo_loading_pct, axis=1)
                ],
                "min_vm_pu": [round(float(x), 8) for x in np.nanmin(res.vm_pu, axis=1)],
                "violations": [[v.step, v.element, v.kind] for v in res.violations()],
            },
            indent=1,
        )
        + "\n"
    )
    print(
        name,
        np.nanmax(res.line_loading_pct, axis=1).round(1),
        np.nanmin(res.vm_pu, axis=1).round(3),
        len(res.violations()),
    )
