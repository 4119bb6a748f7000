"""Tests for grid.sensitivity and grid.hosting against real SimBench grids (no mocks).

Every claim is checked against the AC power flow of :mod:`grid.powerflow`: the linear
model's predictions (tolerances stated in :mod:`grid.sensitivity`), the constraint rows
(satisfied by a sound operating point, violated by points AC flags) and the hosting
capacity (safe in AC, and +10 % + 1 kW is not). Grids and linearizations are built once
per module.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from numpy.typing import NDArray

from aggregator.errors import InvalidInput, SolverFailed
from aggregator.planning.request import SiteLinearConstraints
from grid import FeederModel, background_load_kw, load_feeder, place_sites
from grid.hosting import DEFAULT_CAP_KW, hosting_capacity_kw, linear_hosting_kw
from grid.powerflow import GridLimits, PowerFlowResult, run_timeseries
from grid.sensitivity import (
    LOADING_FLOOR_PCT,
    LOADING_TOLERANCE_PCT,
    VM_TOLERANCE_PU,
    Sensitivities,
    grid_constraints,
    linearize,
    predict,
)

RURAL = "1-LV-rural1--0-sw"
URBAN = "1-LV-urban6--0-sw"
GRIDS = (RURAL, URBAN)
N_SITES = 8
# four days of the SimBench year (winter, spring, summer with PV, autumn), hourly
TIMES = tuple(
    datetime(2016, month, 5, tzinfo=UTC) + timedelta(hours=h)
    for month in (1, 4, 7, 10)
    for h in range(24)
)
EVENING = tuple(datetime(2016, 1, 5, h, tzinfo=UTC) for h in (17, 18, 19))  # load-dominated
MOVE_KW = 20.0
MIN_JUDGED_LOADINGS = 100  # loaded (step, element) pairs the tolerance must be judged on
FloatArray = NDArray[np.float64]


@pytest.fixture(scope="module")
def models() -> dict[str, FeederModel]:
    return {code: load_feeder(code) for code in GRIDS}


@pytest.fixture(scope="module")
def buses(models: dict[str, FeederModel]) -> dict[str, list[str]]:
    return {code: [p.bus for p in place_sites(m, N_SITES, seed=3)] for code, m in models.items()}


@pytest.fixture(scope="module")
def sens(models: dict[str, FeederModel], buses: dict[str, list[str]]) -> dict[str, Sensitivities]:
    return {code: linearize(models[code], buses[code], TIMES) for code in GRIDS}


@pytest.fixture(scope="module")
def evening_hc(
    models: dict[str, FeederModel], buses: dict[str, list[str]]
) -> dict[str, FloatArray]:
    return {code: hosting_capacity_kw(models[code], buses[code], EVENING) for code in GRIDS}


def _ac(
    model: FeederModel, site_buses: list[str], times: list[datetime], site_kw: FloatArray
) -> PowerFlowResult:
    """AC power flow with ``site_kw`` (scenarios, sites) added at the sites' buses."""
    extra: dict[str, FloatArray] = {}
    for s, bus in enumerate(site_buses):
        extra[bus] = extra.get(bus, np.zeros(len(times))) + site_kw[:, s]
    return run_timeseries(model, times, extra)


def _one_site_moves(
    times: tuple[datetime, ...], p0: FloatArray, move_kw: FloatArray
) -> tuple[list[datetime], FloatArray]:
    """Scenarios (site-major) where site s alone moves by ``move_kw[t, s]`` from ``p0``."""
    n_steps, n_sites = p0.shape
    site_kw = np.tile(p0, (n_sites, 1))
    for s in range(n_sites):
        site_kw[s * n_steps : (s + 1) * n_steps, s] += move_kw[:, s]
    return list(times) * n_sites, site_kw


def _violated(res: PowerFlowResult, limits: GridLimits | None = None) -> NDArray[np.bool_]:
    flags = np.zeros(len(res.converged), dtype=bool)
    for v in res.violations(limits):
        flags[v.step] = True
    return flags


# --- the linear model ----------------------------------------------------------------------


@pytest.mark.parametrize("code", GRIDS)
def test_linearize_shapes_and_operating_point(
    code: str,
    models: dict[str, FeederModel],
    buses: dict[str, list[str]],
    sens: dict[str, Sensitivities],
) -> None:
    s = sens[code]
    base = _ac(models[code], buses[code], list(TIMES), np.zeros((len(TIMES), N_SITES)))
    n_t, n_l, n_k, n_b = (
        len(TIMES),
        len(base.line_names),
        len(base.trafo_names),
        len(base.bus_names),
    )
    assert s.d_line_pct_per_kw.shape == (n_t, n_l, N_SITES)
    assert s.d_trafo_pct_per_kw.shape == (n_t, n_k, N_SITES)
    assert s.d_vm_pu_per_kw.shape == (n_t, n_b, N_SITES)
    assert (s.line_names, s.trafo_names, s.bus_names) == (
        base.line_names,
        base.trafo_names,
        base.bus_names,
    )
    assert s.steps == n_t and s.n_sites == N_SITES and s.site_buses == tuple(buses[code])
    np.testing.assert_allclose(s.base_vm_pu, base.vm_pu, atol=1e-9)
    np.testing.assert_allclose(s.base_line_loading_pct, base.line_loading_pct, atol=1e-6)
    assert not s.d_vm_pu_per_kw.flags.writeable
    _, trafo, vm = predict(s, s.base_site_kw)
    np.testing.assert_allclose(vm, s.base_vm_pu)
    np.testing.assert_allclose(trafo, s.base_trafo_loading_pct)


@pytest.mark.parametrize("code", GRIDS)
@pytest.mark.parametrize("operating_kw", [0.0, 30.0])
def test_small_change_is_predicted_within_the_stated_tolerance(
    code: str, operating_kw: float, models: dict[str, FeederModel], buses: dict[str, list[str]]
) -> None:
    p0 = np.full((len(TIMES), N_SITES), operating_kw)
    lin = linearize(models[code], buses[code], TIMES, p0)
    times, site_kw = _one_site_moves(TIMES, p0, np.full(p0.shape, MOVE_KW))
    ac = _ac(models[code], buses[code], times, site_kw)
    n_t = len(TIMES)
    judged = 0
    for k in range(N_SITES):
        rows = slice(k * n_t, (k + 1) * n_t)
        line, trafo, vm = predict(lin, site_kw[rows])
        assert np.nanmax(np.abs(vm - ac.vm_pu[rows])) <= VM_TOLERANCE_PU
        for pred, after, before in (
            (line, ac.line_loading_pct[rows], lin.base_line_loading_pct),
            (trafo, ac.trafo_loading_pct[rows], lin.base_trafo_loading_pct),
        ):
            loaded = np.minimum(before, after) >= LOADING_FLOOR_PCT
            judged += int(loaded.sum())
            assert np.abs(pred - after)[loaded].max(initial=0.0) <= LOADING_TOLERANCE_PCT
    # not vacuous: the loading tolerance was judged on many loaded (step, element) pairs
    assert judged >= MIN_JUDGED_LOADINGS, judged


@pytest.mark.parametrize("code", GRIDS)
def test_signs_in_a_load_dominated_hour(
    code: str, models: dict[str, FeederModel], buses: dict[str, list[str]]
) -> None:
    assert (background_load_kw(models[code], EVENING) > 0).all()
    s = linearize(models[code], buses[code], EVENING)
    assert (s.d_trafo_pct_per_kw > 0).all()  # any LV site loads the transformer
    own = np.array([s.bus_names.index(b) for b in buses[code]])
    own_dv = s.d_vm_pu_per_kw[:, own, np.arange(N_SITES)]
    assert (own_dv < 0).all()  # a site pulls its own bus down ...
    assert (s.d_vm_pu_per_kw <= 1e-9).all()  # ... and no bus up


def test_engines_agree_on_sensitivities(
    models: dict[str, FeederModel], buses: dict[str, list[str]]
) -> None:
    times, sites = EVENING[:2], buses[RURAL][:3]
    pgm = linearize(models[RURAL], sites, times)
    pp_ = linearize(models[RURAL], sites, times, engine="pandapower")
    # measured: ≤ 6e-9 pu/kW and ≤ 1e-6 %/kW on both grids
    np.testing.assert_allclose(pgm.d_vm_pu_per_kw, pp_.d_vm_pu_per_kw, atol=1e-7)
    np.testing.assert_allclose(pgm.d_trafo_pct_per_kw, pp_.d_trafo_pct_per_kw, atol=1e-5)
    np.testing.assert_allclose(pgm.d_line_pct_per_kw, pp_.d_line_pct_per_kw, atol=1e-5)


def test_sites_on_one_bus_share_their_sensitivities(
    models: dict[str, FeederModel], buses: dict[str, list[str]]
) -> None:
    bus = buses[RURAL][0]
    s = linearize(models[RURAL], [bus, buses[RURAL][1], bus], EVENING)
    np.testing.assert_array_equal(s.d_vm_pu_per_kw[:, :, 0], s.d_vm_pu_per_kw[:, :, 2])


# --- constraint rows -------------------------------------------------------------------------


@pytest.mark.parametrize("code", GRIDS)
def test_rows_hold_at_a_sound_operating_point(code: str, sens: dict[str, Sensitivities]) -> None:
    s = sens[code]
    assert np.nanmax(s.base_trafo_loading_pct) < 98.0 and np.nanmax(s.base_line_loading_pct) < 98.0
    p0 = s.base_site_kw.T.ravel()  # site-major: index site × steps + step
    for cons in (
        grid_constraints(s, prune=False),
        grid_constraints(s, max_site_kw=np.full(N_SITES, 200.0)),
    ):
        assert cons.validate(N_SITES, len(TIMES)) == []
        assert (cons.matrix @ p0 <= cons.upper + 1e-9).all()
        assert not any(label.endswith("(relaxed)") for label in cons.labels)


def test_row_layout_is_site_major(sens: dict[str, Sensitivities]) -> None:
    s = sens[RURAL]
    cons = grid_constraints(s, prune=False)
    n_t = len(TIMES)
    row = cons.labels.index(f"t5 trafo:{s.trafo_names[0]} loading")
    coefs = cons.matrix.getrow(row).toarray().ravel()
    expected = np.zeros(N_SITES * n_t)
    expected[np.arange(N_SITES) * n_t + 5] = s.d_trafo_pct_per_kw[5, 0]
    np.testing.assert_allclose(coefs, expected)
    head_room = 100.0 - 2.0 - s.base_trafo_loading_pct[5, 0]
    assert cons.upper[row] == pytest.approx(head_room)  # operating point at zero site power
    bus = s.bus_names[int(np.argmin(s.base_vm_pu[5]))]
    assert f"t5 bus:{bus} vmin" in cons.labels and f"t5 bus:{bus} vmax" in cons.labels


@pytest.mark.parametrize("code", GRIDS)
def test_rows_flag_points_that_ac_flags(
    code: str,
    models: dict[str, FeederModel],
    buses: dict[str, list[str]],
    evening_hc: dict[str, FloatArray],
) -> None:
    """1.5 × the AC hosting capacity at one site: AC violates, and so do the rows."""
    s = linearize(models[code], buses[code], EVENING)
    cons = grid_constraints(s, max_site_kw=np.full(N_SITES, 2000.0))
    times, site_kw = _one_site_moves(EVENING, s.base_site_kw, 1.5 * evening_hc[code])
    assert _violated(_ac(models[code], buses[code], times, site_kw)).all()
    n_t = len(EVENING)
    for i in range(len(times)):
        k, t = divmod(i, n_t)
        p = np.zeros((n_t, N_SITES))
        p[t] = site_kw[i]
        assert (cons.matrix @ p.T.ravel() > cons.upper).any(), (k, t)


@functools.cache
def _prune_case() -> tuple[SiteLinearConstraints, SiteLinearConstraints, FloatArray]:
    """Full and pruned rows of the rural evening (cached: hypothesis takes no fixtures)."""
    model = load_feeder(RURAL)
    site_buses = [p.bus for p in place_sites(model, N_SITES, seed=3)]
    s = linearize(model, site_buses, EVENING)
    bound = np.linspace(50.0, 300.0, N_SITES)
    return grid_constraints(s, prune=False), grid_constraints(s, max_site_kw=bound), bound


@settings(max_examples=60, deadline=None)
@given(frac=arrays(np.float64, (len(EVENING), N_SITES), elements=st.floats(-1.0, 1.0)))
def test_pruning_never_changes_the_feasible_box(frac: FloatArray) -> None:
    full, pruned, bound = _prune_case()
    p = (frac * bound).T.ravel()
    assert (full.matrix @ p <= full.upper).all() == (pruned.matrix @ p <= pruned.upper).all()
    assert 0 < pruned.matrix.shape[0] < full.matrix.shape[0]


def test_background_violations_are_relaxed_not_imposed(sens: dict[str, Sensitivities]) -> None:
    s = sens[URBAN]
    tight = GridLimits(max_trafo_loading_pct=20.0)
    zero = np.zeros(N_SITES * len(TIMES))
    relaxed = grid_constraints(s, limits=tight, margin_pct=0.0)
    marked = [i for i, label in enumerate(relaxed.labels) if label.endswith("(relaxed)")]
    assert marked and (relaxed.upper[marked] == 0.0).all()
    assert (relaxed.matrix @ zero <= relaxed.upper).all()
    strict = grid_constraints(s, limits=tight, margin_pct=0.0, relax_background=False)
    assert (strict.matrix @ zero > strict.upper).any()


def test_constraint_arguments_are_validated(sens: dict[str, Sensitivities]) -> None:
    with pytest.raises(InvalidInput) as info:
        grid_constraints(sens[RURAL], margin_pct=-1.0, max_site_kw=np.ones(3))
    assert {i.field for i in info.value.issues} == {"margin_pct", "max_site_kw"}
    with pytest.raises(InvalidInput, match="max_site_kw"):
        grid_constraints(sens[RURAL], max_site_kw=-np.ones(N_SITES))
    with pytest.raises(InvalidInput) as info:
        grid_constraints(sens[RURAL], margin_pct=100.0, margin_pu=0.15)
    assert [i.field for i in info.value.issues] == ["margin_pct", "margin_pu"]


# --- hosting capacity ------------------------------------------------------------------------


@pytest.mark.parametrize("code", GRIDS)
def test_hosting_capacity_is_safe_and_tight_in_ac(
    code: str,
    models: dict[str, FeederModel],
    buses: dict[str, list[str]],
    evening_hc: dict[str, FloatArray],
) -> None:
    hc = evening_hc[code]
    assert hc.shape == (len(EVENING), N_SITES)
    assert ((hc > 0) & (hc < DEFAULT_CAP_KW)).all()  # every LV site is grid-limited here
    p0 = np.zeros(hc.shape)
    times, at_hc = _one_site_moves(EVENING, p0, hc)
    assert not _violated(_ac(models[code], buses[code], times, at_hc)).any()
    times, beyond = _one_site_moves(EVENING, p0, 1.1 * hc + 1.0)
    assert _violated(_ac(models[code], buses[code], times, beyond)).all()
    # cut short, the search still returns only values AC found safe
    quick = hosting_capacity_kw(models[code], buses[code], EVENING, max_rounds=1)
    assert (quick <= hc * 1.01 + 0.5).all()
    times, at_quick = _one_site_moves(EVENING, p0, quick)
    assert not _violated(_ac(models[code], buses[code], times, at_quick)).any()


def test_linear_hosting_estimate_is_close_and_verify_false_returns_it(
    models: dict[str, FeederModel], buses: dict[str, list[str]], evening_hc: dict[str, FloatArray]
) -> None:
    s = linearize(models[URBAN], buses[URBAN], EVENING)
    estimate = hosting_capacity_kw(models[URBAN], buses[URBAN], EVENING, verify=False)
    np.testing.assert_array_equal(estimate, linear_hosting_kw(s))
    ratio = estimate / evening_hc[URBAN]
    assert (ratio > 0.9).all() and (ratio < 1.5).all()


def test_hosting_is_zero_where_the_operating_point_violates(
    models: dict[str, FeederModel], buses: dict[str, list[str]]
) -> None:
    s = linearize(models[URBAN], buses[URBAN], EVENING)
    loading = np.sort(s.base_trafo_loading_pct[:, 0])
    limit = float(loading[-2:].mean())  # only the busiest step is over it
    tight = GridLimits(max_trafo_loading_pct=limit)
    hc = hosting_capacity_kw(models[URBAN], buses[URBAN], EVENING, limits=tight)
    over = s.base_trafo_loading_pct[:, 0] > limit
    assert over.any() and (hc[over] == 0.0).all() and (hc[~over] > 0.0).all()


def test_hosting_reports_the_cap_when_nothing_limits(
    models: dict[str, FeederModel], buses: dict[str, list[str]]
) -> None:
    loose = GridLimits(max_line_loading_pct=1e6, max_trafo_loading_pct=1e6, v_min_pu=0.01)
    hc = hosting_capacity_kw(models[RURAL], buses[RURAL], EVENING, limits=loose, cap_kw=50.0)
    np.testing.assert_array_equal(hc, np.full((len(EVENING), N_SITES), 50.0))


def test_operating_point_is_taken_into_account(
    models: dict[str, FeederModel], buses: dict[str, list[str]], evening_hc: dict[str, FloatArray]
) -> None:
    p0 = np.full((len(EVENING), N_SITES), 10.0)
    hc = hosting_capacity_kw(models[RURAL], buses[RURAL], EVENING, p0)
    assert (hc < evening_hc[RURAL]).all()


# --- input validation ------------------------------------------------------------------------


def test_naive_times_and_bad_inputs_are_rejected(
    models: dict[str, FeederModel], buses: dict[str, list[str]]
) -> None:
    naive = [datetime(2016, 1, 5, 18)]  # noqa: DTZ001 - the point of the test
    model, site_buses = models[RURAL], buses[RURAL]
    with pytest.raises(InvalidInput) as info:
        linearize(model, site_buses, naive)
    assert [i.field for i in info.value.issues] == ["times"]
    with pytest.raises(InvalidInput):
        hosting_capacity_kw(model, site_buses, naive)
    with pytest.raises(InvalidInput) as info:
        linearize(model, ["no such bus"], EVENING, np.zeros((2, 1)), delta_kw=0.0)
    fields = {i.field for i in info.value.issues}
    assert fields == {"bus", "base_site_kw", "delta_kw"}
    with pytest.raises(InvalidInput) as info:
        hosting_capacity_kw(
            model, site_buses, EVENING, rtol=2.0, cap_kw=-1.0, atol_kw=0.0, max_rounds=0
        )
    assert {i.field for i in info.value.issues} == {"rtol", "cap_kw", "atol_kw", "max_rounds"}
    with pytest.raises(InvalidInput, match="must be finite"):
        linearize(model, site_buses, EVENING, np.full((len(EVENING), N_SITES), np.nan))
    with pytest.raises(InvalidInput):
        linearize(model, site_buses, [])
    other_zone = [datetime(2016, 1, 5, 19, tzinfo=timezone(timedelta(hours=1)))]
    assert linearize(model, site_buses, other_zone).steps == 1  # aware, any zone
    with pytest.raises(InvalidInput):
        predict(linearize(model, site_buses, EVENING), np.zeros((1, N_SITES)))


def test_an_operating_point_without_ac_solution_is_a_solver_failure(
    models: dict[str, FeederModel], buses: dict[str, list[str]]
) -> None:
    p0 = np.zeros((len(EVENING), N_SITES))
    p0[1, 0] = 50_000.0  # 50 MW on a 160 kVA LV feeder
    with pytest.raises(SolverFailed, match="steps 1"):
        linearize(models[RURAL], buses[RURAL], EVENING, p0)
