"""The grid guarantee of ``aggregator.planning.gridloop`` on a model whose truth is known.

A fake feeder: one line feeds sites 0 and 1 (site 2 hangs elsewhere); its loading is
``base + a·P + c·(a·P)²`` — convex, so the linear rows the fake offers (``a·P ≤ 100 −
base``, never re-linearised) are optimistic and the AC check must catch what the plan gets
wrong. The planner is
the real LP. Also: the margin, the base-load correction and the energy bound.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

import grid
from adapters.files.scenario import load_scenario_and_feeder
from aggregator.errors import ConfigError, InvalidInput
from aggregator.planning.gridloop import (
    GridCheck,
    GridViolation,
    grid_site_kw,
    repair_site_kw,
    successive_plan,
)
from aggregator.planning.optimizer import Planner
from aggregator.planning.request import SiteLinearConstraints
from aggregator.sim.bound import energy_bound_kwh
from aggregator.sim.scenario import Scenario, SessionSpec
from aggregator.sim.simulation import oracle_request
from aggregator.topology import Feeder, Site, Topology

START = datetime(2026, 1, 14, 17, tzinfo=UTC)
A_PCT_PER_KW = np.array([1.0, 0.5, 0.0])  # site 2 does not load the line
CURVE = 0.002


class LineGrid:
    """The fake feeder of the module doc; ``base_pct`` per step."""

    def __init__(self, base_pct: NDArray[np.float64]) -> None:
        self.base_pct = base_pct
        self.checks = 0

    def constraints(
        self,
        start: datetime,
        step_s: float,
        steps: int,
        site_kw: NDArray[np.float64] | None,
        margin_pct: float,
    ) -> SiteLinearConstraints | None:
        # the tangent at zero, never updated: optimistic, as the curve is convex
        n = A_PCT_PER_KW.size
        cols = np.arange(n)[:, None] * steps + np.arange(steps)[None, :]  # (sites, steps)
        matrix = np.zeros((steps, n * steps))
        for t in range(steps):
            matrix[t, cols[:, t]] = A_PCT_PER_KW
        labels = tuple(f"t{t} line:L loading" for t in range(steps))
        return SiteLinearConstraints(matrix, 100.0 - margin_pct - self.base_pct[:steps], labels)

    def loading(self, site_kw: NDArray[np.float64]) -> NDArray[np.float64]:
        x = A_PCT_PER_KW @ np.asarray(site_kw)
        return self.base_pct[: x.size] + x + CURVE * x**2

    def check(self, start: datetime, step_s: float, site_kw: NDArray[np.float64]) -> GridCheck:
        self.checks += 1
        load = self.loading(site_kw)
        base = self.base_pct[: load.size]
        bad = [
            GridViolation(int(t), "line:L", "line_loading", float(load[t]), 100.0)
            for t in np.flatnonzero((load > 100.0) & (load > base + 0.1))
        ]
        return GridCheck(tuple(bad), float(load.max()), 0.0, 1.0, 1.0, tuple(load))


def scenario(steps: int = 4) -> Scenario:
    sites = tuple(Site(f"s{i}", "f", 1e4, bus=f"b{i}") for i in range(3))
    topo = Topology((Feeder("f", 1e6),), sites)
    end = START + timedelta(minutes=15 * steps)
    sessions = tuple(
        SessionSpec(f"e{i}", f"s{i % 3}", START, end, energy_kwh=40.0, max_power_kw=50.0)
        for i in range(6)
    )
    return Scenario("fake", "f", topo, START, end, 900.0, sessions)


def test_a_plan_the_check_rejects_is_repaired_and_costs_only_what_it_must() -> None:
    req = oracle_request(scenario())
    fake = LineGrid(np.full(req.steps, 30.0))
    free = Planner("HIGHS").plan(req)
    assert not fake.check(START, 900.0, grid_site_kw(free, req)).ok  # the LP alone overloads
    res = successive_plan(req, Planner("HIGHS").plan, fake)
    assert res.check is not None and res.check.ok
    site_kw = grid_site_kw(res.plan, req)
    assert (fake.loading(site_kw) <= 100.0 + 1e-9).all()
    assert res.repair is not None and res.repair.cost_kwh > 0.0
    assert res.note is not None and "repaired" in res.note
    # site 2 is not behind the line: it keeps all it could get
    np.testing.assert_allclose(site_kw[2], grid_site_kw(free, req)[2], atol=1e-6)
    # and the line is used up to the limit (within the bisection's resolution)
    assert fake.loading(site_kw).max() >= 97.0


def test_where_the_background_alone_violates_the_fleet_adds_nothing() -> None:
    req = oracle_request(scenario())
    base = np.array([30.0, 120.0, 30.0, 30.0])
    fake = LineGrid(base)
    res = successive_plan(req, Planner("HIGHS").plan, fake)
    load = fake.loading(grid_site_kw(res.plan, req))
    assert load[1] <= base[1] + 0.1
    assert (load[[0, 2, 3]] <= 100.0 + 1e-9).all()


def test_repair_keeps_steps_without_violation_and_uses_the_sensitive_site_first() -> None:
    fake = LineGrid(np.full(3, 30.0))
    site_kw = np.array([[60.0, 10.0, 40.0], [60.0, 10.0, 40.0], [50.0, 50.0, 50.0]])
    check = fake.check(START, 900.0, site_kw)
    assert [int(t) for t in check.violating_steps()] == [0]
    rows = SiteLinearConstraints(  # the linear row of the line at step 0: a·P ≤ 70
        matrix=np.array([[1.0, 0, 0, 0.5, 0, 0, 0.0, 0, 0]]),
        upper=np.array([70.0]),
        labels=("t0 line:L loading",),
    )
    fixed, after = repair_site_kw(fake, START, 900.0, site_kw, check, rows)
    assert after.ok
    np.testing.assert_array_equal(fixed[:, 1:], site_kw[:, 1:])
    assert fixed[2, 0] == site_kw[2, 0]  # not behind the line: untouched
    cut = site_kw[:, 0] - fixed[:, 0]
    assert cut[0] > cut[1] > 0.0  # the site with the larger sensitivity gives more


def test_margin_is_applied_to_planning_limits_and_reported() -> None:
    model = grid.load_feeder("1-LV-rural2--0-sw")
    placed = grid.place_sites(model, 3, seed=0, connection_limit_kw=(1e4, 1e4))
    topo = grid.to_topology(model, placed)
    fg = grid.FeederGrid(model, topo, margin=grid.GridMargin(loading_pct=5.0, voltage_pu=0.01))
    assert fg.limits.max_line_loading_pct == 95.0 and fg.limits.v_min_pu == pytest.approx(0.91)
    check = fg.check(START, 900.0, np.zeros((3, 2)))
    assert (check.margin_loading_pct, check.margin_voltage_pu) == (5.0, 0.01)
    with pytest.raises(ConfigError):
        grid.FeederGrid(model, topo, margin=grid.GridMargin(loading_pct=100.0))


def test_base_load_correction_follows_the_meter_and_decays() -> None:
    forecast = np.full(9, 100.0)
    f = grid.base_load_correction(forecast, measured_kw=150.0, ev_kw=30.0, half_life_steps=4)
    assert f[0] == pytest.approx(1.2) and f[4] == pytest.approx(1.1) and f[-1] < f[0]
    assert grid.base_load_correction(forecast, 1e6, 0.0)[0] == 2.0  # clipped


def test_energy_bound_is_the_relaxation_optimum() -> None:
    sc = scenario(steps=4)  # 6 cars × 50 kW × 1 h, 40 kWh each: all of it fits
    assert energy_bound_kwh(sc) == pytest.approx(240.0)
    capped = Scenario(
        "capped",
        "f",
        Topology((Feeder("f", 60.0),), sc.topology.sites),
        sc.start,
        sc.end,
        900.0,
        sc.sessions,
    )
    assert energy_bound_kwh(capped) == pytest.approx(60.0)  # 60 kW for one hour


def test_a_scenario_file_sets_the_feeders_margin(tmp_path: Path) -> None:
    src = Path(__file__).resolve().parents[1] / "data" / "scenarios" / "rural"
    for f in src.iterdir():
        shutil.copy(f, tmp_path / f.name)
    text = (src / "scenario.yaml").read_text()
    (tmp_path / "scenario.yaml").write_text(
        text + "grid_margin: {loading_pct: 5, voltage_pu: 0.01}\n"
    )
    sc, model = load_scenario_and_feeder(tmp_path / "scenario.yaml")
    fg = grid.FeederGrid(model, sc.topology)
    assert (fg.margin.loading_pct, fg.margin.voltage_pu) == (5.0, 0.01)
    assert fg.limits.max_trafo_loading_pct == 95.0
    (tmp_path / "scenario.yaml").write_text(text + "grid_margin: {loading_pct: 150}\n")
    with pytest.raises((ConfigError, InvalidInput)):
        load_scenario_and_feeder(tmp_path / "scenario.yaml")
    # without the key: the documented default
    sc, model = load_scenario_and_feeder(src / "scenario.yaml")
    assert grid.FeederGrid(model, sc.topology).margin == grid.DEFAULT_MARGIN
