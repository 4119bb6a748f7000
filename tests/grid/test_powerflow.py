"""Tests for grid.powerflow: power-grid-model batch vs pandapower loop on real SimBench grids.

No mocks: every test runs real pandapower, SimBench and power-grid-model. Grids and the
(slow) pandapower reference runs are computed once per module.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from numpy.typing import NDArray
from pandapower.toolbox import reindex_buses

import grid.powerflow as powerflow
from aggregator.errors import InvalidInput
from grid import FeederModel, background_load_kw, bus_name, load_buses, load_feeder, place_sites
from grid.powerflow import (
    LOADING_TOLERANCE_PCT,
    VM_TOLERANCE_PU,
    GridLimits,
    PowerFlowResult,
    Violation,
    background_pq_mw,
    run_timeseries,
)

RURAL = "1-LV-rural1--0-sw"
URBAN = "1-LV-urban6--0-sw"
MV_RURAL = "1-MV-rural--0-sw"
GRIDS = (RURAL, URBAN, MV_RURAL)
STEPS = 10


def _times(hour: int, n: int = STEPS, day_of_year: int = 14) -> list[datetime]:
    start = datetime(2016, 1, 1, hour, tzinfo=UTC) + timedelta(days=day_of_year - 1)
    return [start + timedelta(minutes=15 * i) for i in range(n)]


EVENING = _times(17)
NIGHT = _times(2)


@pytest.fixture(scope="module")
def models() -> dict[str, FeederModel]:
    return {code: load_feeder(code) for code in GRIDS}


def _ev_load(model: FeederModel, n_buses: int = 5) -> dict[str, NDArray[np.float64]]:
    """A varying 11–44 kW charging profile on ``n_buses`` placed (supplied) buses."""
    buses = sorted({p.bus for p in place_sites(model, n_buses, seed=3)})
    ramp = 11.0 * (1.0 + np.arange(STEPS, dtype=np.float64) % 4)
    return {bus: ramp * (1 + i % 2) for i, bus in enumerate(buses)}


def _heavy(model: FeederModel) -> dict[str, NDArray[np.float64]]:
    """150 kW at each of the last four load buses of the LV rural feeder, all evening."""
    return {bus: np.full(STEPS, 150.0) for bus in load_buses(model)[-4:]}


@pytest.fixture(scope="module")
def pairs(models: dict[str, FeederModel]) -> dict[tuple[str, bool], tuple[PowerFlowResult, ...]]:
    """(pgm, pandapower) results per grid, background only and with EV load."""
    out = {}
    for code, model in models.items():
        for with_ev in (False, True):
            extra = _ev_load(model) if with_ev else None
            out[code, with_ev] = tuple(
                run_timeseries(model, EVENING, extra, engine=e, power_factor=0.95)
                for e in ("pgm", "pandapower")
            )
    return out


@pytest.fixture(scope="module")
def heavy(models: dict[str, FeederModel]) -> tuple[PowerFlowResult, PowerFlowResult]:
    model = models[RURAL]
    pgm, ref = (
        run_timeseries(model, EVENING, _heavy(model), engine=e, power_factor=0.95)
        for e in ("pgm", "pandapower")
    )
    return pgm, ref


def _assert_agree(a: PowerFlowResult, b: PowerFlowResult) -> None:
    assert a.converged.all() and b.converged.all()
    for name in ("vm_pu", "line_loading_pct", "trafo_loading_pct"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape
        np.testing.assert_array_equal(np.isnan(x), np.isnan(y), err_msg=name)
        tol = VM_TOLERANCE_PU if name == "vm_pu" else LOADING_TOLERANCE_PCT
        assert np.nanmax(np.abs(x - y), initial=0.0) <= tol, name


def _kinds(result: PowerFlowResult, limits: GridLimits | None = None) -> set[tuple[int, str, str]]:
    return {(v.step, v.element, v.kind) for v in result.violations(limits)}


# --- surface ---------------------------------------------------------------------------


def test_public_surface_is_pinned() -> None:
    assert sorted(powerflow.__all__) == sorted(
        [
            "IDEAL_SOURCE_SC_MVA",
            "LOADING_TOLERANCE_PCT",
            "VM_TOLERANCE_PU",
            "GridLimits",
            "PowerFlowResult",
            "Violation",
            "background_pq_mw",
            "net_fingerprint",
            "run_timeseries",
        ]
    )


def test_stated_tolerance_is_documented() -> None:
    assert VM_TOLERANCE_PU <= 1e-4 and LOADING_TOLERANCE_PCT <= 0.1
    assert powerflow.__doc__ is not None and "Stated tolerance" in powerflow.__doc__


# --- engines agree ---------------------------------------------------------------------


@pytest.mark.parametrize("with_ev", [False, True], ids=["background", "with_ev"])
@pytest.mark.parametrize("code", GRIDS)
def test_pgm_agrees_with_pandapower(
    pairs: dict[tuple[str, bool], tuple[PowerFlowResult, ...]], code: str, with_ev: bool
) -> None:
    pgm, ref = pairs[code, with_ev]
    assert (pgm.engine, ref.engine) == ("pgm", "pandapower")
    _assert_agree(pgm, ref)
    assert _kinds(pgm) == _kinds(ref)


def test_ev_load_raises_loading_and_lowers_voltage(
    pairs: dict[tuple[str, bool], tuple[PowerFlowResult, ...]],
) -> None:
    for code in (RURAL, URBAN):  # the MV feeder exports at noon-free evenings too: skip it
        base, ev = pairs[code, False][0], pairs[code, True][0]
        assert ev.max_trafo_loading_pct() > base.max_trafo_loading_pct()
        assert ev.min_voltage_pu() < base.min_voltage_pu()


def test_heavy_load_agrees_within_the_stated_tolerance(
    heavy: tuple[PowerFlowResult, PowerFlowResult],
) -> None:
    _assert_agree(*heavy)


def test_result_shape_names_and_immutability(
    models: dict[str, FeederModel], pairs: dict[tuple[str, bool], tuple[PowerFlowResult, ...]]
) -> None:
    model = models[URBAN]
    net = model.net
    for result in pairs[URBAN, True]:
        assert result.vm_pu.shape == (STEPS, len(net.bus))
        assert result.line_loading_pct.shape == (STEPS, len(net.line))
        assert result.trafo_loading_pct.shape == (STEPS, len(net.trafo))
        assert result.bus_names == model.bus_names()
        assert result.line_names == tuple(net.line["name"])
        assert result.trafo_names == tuple(net.trafo["name"])
        assert result.converged.dtype == np.bool_ and result.elapsed_s > 0
        with pytest.raises(ValueError, match="read-only"):
            result.vm_pu[0, 0] = 1.0


# --- violations ------------------------------------------------------------------------


def test_heavy_evening_ev_load_overloads_and_night_base_is_clean(
    models: dict[str, FeederModel], heavy: tuple[PowerFlowResult, PowerFlowResult]
) -> None:
    night = run_timeseries(models[RURAL], NIGHT)
    assert night.violations() == []
    assert night.max_trafo_loading_pct() < 50.0
    for result in heavy:
        kinds = {v.kind for v in result.violations()}
        assert {"trafo_loading", "line_loading", "undervoltage"} <= kinds
        assert result.max_trafo_loading_pct() > 100.0 and result.min_voltage_pu() < 0.9
    assert _kinds(heavy[0]) == _kinds(heavy[1])


@pytest.mark.parametrize(
    "limits",
    [
        GridLimits(),
        GridLimits(max_line_loading_pct=60.0, max_trafo_loading_pct=80.0, v_min_pu=0.95),
        GridLimits(v_min_pu=0.5, v_max_pu=1.02),
    ],
)
def test_violations_are_exactly_the_elements_beyond_the_limits(
    heavy: tuple[PowerFlowResult, PowerFlowResult], limits: GridLimits
) -> None:
    result = heavy[0]
    expected: set[tuple[int, str, str]] = set()
    checks = (
        (result.line_loading_pct > limits.max_line_loading_pct, "line", "line_loading"),
        (result.trafo_loading_pct > limits.max_trafo_loading_pct, "trafo", "trafo_loading"),
        (result.vm_pu < limits.v_min_pu, "bus", "undervoltage"),
        (result.vm_pu > limits.v_max_pu, "bus", "overvoltage"),
    )
    names = {"line": result.line_names, "trafo": result.trafo_names, "bus": result.bus_names}
    for mask, prefix, kind in checks:
        for s, j in zip(*np.nonzero(mask), strict=True):
            expected.add((int(s), f"{prefix}:{names[prefix][j]}", kind))
    found = result.violations(limits)
    assert expected and _kinds(result, limits) == expected
    assert len(found) == len(expected)  # no duplicates
    assert [v.step for v in found] == sorted(v.step for v in found)
    for v in found:
        assert v.limit in {
            limits.max_line_loading_pct,
            limits.max_trafo_loading_pct,
            limits.v_min_pu,
            limits.v_max_pu,
        }
        assert (v.value > v.limit) == (v.kind != "undervoltage")


def test_non_converged_step_is_nan_and_reported(models: dict[str, FeederModel]) -> None:
    model = models[RURAL]
    extra = {load_buses(model)[-1]: np.array([20.0, 50_000.0, 20.0])}
    for engine in ("pgm", "pandapower"):
        result = run_timeseries(model, EVENING[:3], extra, engine=engine)
        assert result.converged.tolist() == [True, False, True]
        assert np.isnan(result.vm_pu[1]).all() and not np.isnan(result.vm_pu[[0, 2]]).any()
        stuck = [v for v in result.violations() if v.kind == "not_converged"]
        assert [(v.step, v.element) for v in stuck] == [(1, "grid")]
        assert math.isnan(stuck[0].value)


def test_steps_iterative_current_cannot_solve_are_retried(models: dict[str, FeederModel]) -> None:
    """750 kW at the feeder end (0.74 pu): beyond iterative current, within Newton-Raphson."""
    model = models[RURAL]
    extra = {load_buses(model)[-1]: np.array([20.0, 750.0, 20.0])}
    pgm, ref = (run_timeseries(model, EVENING[:3], extra, engine=e) for e in ("pgm", "pandapower"))
    _assert_agree(pgm, ref)
    assert pgm.min_voltage_pu() < 0.75


def test_unsupplied_buses_are_nan_in_both_engines(models: dict[str, FeederModel]) -> None:
    model = models[RURAL]
    net = copy.deepcopy(model.net)
    bus = next(
        b
        for b in sorted(set(net.load.bus))
        if ((net.line.from_bus == b) | (net.line.to_bus == b)).sum() == 1
    )
    net.line.loc[(net.line.from_bus == bus) | (net.line.to_bus == bus), "in_service"] = False
    cut = dataclasses.replace(model, net=net)
    pgm, ref = (run_timeseries(cut, EVENING[:4], engine=e) for e in ("pgm", "pandapower"))
    column = model.bus_names().index(bus_name(net, int(bus)))
    assert np.isnan(pgm.vm_pu[:, column]).all()
    _assert_agree(pgm, ref)
    # the intact model still gets its own (cached) conversion
    assert not np.isnan(run_timeseries(model, EVENING[:4]).vm_pu).any()


def test_sparse_reordered_bus_index(models: dict[str, FeederModel]) -> None:
    """Bus indices are labels, not positions (the MV/LV grids have gaps in them)."""
    model = models[RURAL]
    net = copy.deepcopy(model.net)
    reindex_buses(net, {int(b): 1000 - 7 * i for i, b in enumerate(net.bus.index)})
    net.bus.sort_index(inplace=True)
    shuffled = dataclasses.replace(model, net=net)
    extra = {bus: np.full(3, 40.0) for bus in load_buses(shuffled)[-3:]}
    pgm, ref = (
        run_timeseries(shuffled, EVENING[:3], extra, engine=e) for e in ("pgm", "pandapower")
    )
    _assert_agree(pgm, ref)
    original = run_timeseries(model, EVENING[:3], extra)
    order = [model.bus_names().index(name) for name in shuffled.bus_names()]
    np.testing.assert_allclose(pgm.vm_pu, original.vm_pu[:, order], atol=1e-12)


def test_power_factor_and_background_switch(models: dict[str, FeederModel]) -> None:
    model = models[RURAL]
    bus = load_buses(model)[-1]
    extra = {bus: np.full(3, 60.0)}
    unity, lagging = (
        run_timeseries(model, EVENING[:3], extra, power_factor=pf) for pf in (1.0, 0.9)
    )
    column = model.bus_names().index(bus)
    assert (lagging.vm_pu[:, column] < unity.vm_pu[:, column]).all()
    idle = run_timeseries(model, EVENING[:3], background=False)
    assert idle.max_trafo_loading_pct() < 1.0  # only magnetising and charging currents
    assert idle.max_voltage_pu() - idle.min_voltage_pu() < 1e-3  # a flat, unloaded feeder


# --- background profiles ---------------------------------------------------------------


@pytest.mark.parametrize("code", GRIDS)
def test_background_elements_sum_to_background_load(
    models: dict[str, FeederModel], code: str
) -> None:
    model = models[code]
    times = [*EVENING, *_times(12, 4, day_of_year=200), *_times(0, 2, day_of_year=366)]
    p_load, q_load, p_sgen, q_sgen = background_pq_mw(model, times)
    net = model.net
    assert p_load.shape == q_load.shape == (len(times), len(net.load))
    assert p_sgen.shape == q_sgen.shape == (len(times), len(net.sgen))
    net_kw = (p_load.sum(axis=1) - p_sgen.sum(axis=1)) * 1000.0
    np.testing.assert_allclose(net_kw, background_load_kw(model, times), rtol=0, atol=1e-6)
    assert (p_load >= 0).all() and (p_sgen >= 0).all()
    assert len({tuple(row) for row in p_load.round(9)}) > 1  # the profile moves


def test_net_without_profiles_or_sgens() -> None:
    model = load_feeder("pandapower:cigre_lv")  # static loads, no sgens, three trafos
    p_load, q_load, p_sgen, _ = background_pq_mw(model, EVENING[:3])
    static = (model.net.load["p_mw"] * model.net.load["scaling"]).to_numpy()
    np.testing.assert_allclose(p_load, np.tile(static, (3, 1)))
    assert q_load.shape == p_load.shape and p_sgen.shape == (3, 0)
    extra = {load_buses(model)[-1]: np.array([10.0, 30.0, 50.0])}
    pgm, ref = (run_timeseries(model, EVENING[:3], extra, engine=e) for e in ("pgm", "pandapower"))
    _assert_agree(pgm, ref)
    assert pgm.trafo_loading_pct.shape == (3, 3)


# --- input validation ------------------------------------------------------------------


def test_times_must_be_aware(models: dict[str, FeederModel]) -> None:
    model = models[RURAL]
    naive = [datetime(2016, 1, 14, 17), datetime(2016, 1, 14, 17, 15)]  # noqa: DTZ001
    with pytest.raises(InvalidInput, match="timezone-aware") as info:
        run_timeseries(model, naive)
    assert info.value.issues[0].ids == ("0", "1")
    with pytest.raises(InvalidInput):
        background_pq_mw(model, naive)
    with pytest.raises(InvalidInput):
        run_timeseries(model, naive, background=False, engine="pandapower")
    cet = timezone(timedelta(hours=1))
    shifted = [t.astimezone(cet) for t in EVENING[:3]]
    np.testing.assert_array_equal(
        run_timeseries(model, shifted).vm_pu, run_timeseries(model, EVENING[:3]).vm_pu
    )


def test_invalid_arguments_report_every_problem(models: dict[str, FeederModel]) -> None:
    model = models[RURAL]
    bus = load_buses(model)[0]
    bad = {"no such bus": np.zeros(3), bus: np.array([1.0, math.nan, 2.0])}
    with pytest.raises(InvalidInput) as info:
        run_timeseries(model, EVENING[:3], bad)
    assert {i.field for i in info.value.issues} == {"bus", "extra_kw"}
    with pytest.raises(InvalidInput, match="finite values"):
        run_timeseries(model, EVENING[:3], {bus: np.zeros(4)})
    with pytest.raises(InvalidInput) as info:
        run_timeseries(model, EVENING[:3], power_factor=0.0, engine="x")  # type: ignore[arg-type]
    assert {i.field for i in info.value.issues} == {"engine", "power_factor"}
    for limits in ({"v_min_pu": 1.1, "v_max_pu": 0.9}, {"max_line_loading_pct": 0.0}):
        with pytest.raises(InvalidInput):
            GridLimits(**limits)


def test_empty_horizon(models: dict[str, FeederModel]) -> None:
    result = run_timeseries(models[RURAL], [])
    assert result.vm_pu.shape == (0, len(models[RURAL].net.bus))
    assert result.violations() == [] and math.isnan(result.max_line_loading_pct())


def test_violation_is_a_value() -> None:
    v = Violation(3, "bus:x", "undervoltage", 0.88, 0.9)
    assert v == Violation(3, "bus:x", "undervoltage", 0.88, 0.9)
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.step = 4  # type: ignore[misc]
