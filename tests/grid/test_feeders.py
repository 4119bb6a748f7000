"""Tests for grid.feeders against real SimBench and pandapower grids (no mocks).

SimBench loading dominates the run time, so each grid is loaded once per module.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandapower as pp
import pytest
import simbench as sb
from hypothesis import given, settings
from hypothesis import strategies as st

import grid
from aggregator.errors import ConfigError, GridflexError, InvalidInput
from grid import (
    FeederModel,
    SitePlacement,
    background_load_kw,
    bus_index,
    bus_name,
    kw_to_mw,
    load_buses,
    load_feeder,
    mw_to_kw,
    place_sites,
    to_topology,
    validate_placements,
)

RURAL = "1-LV-rural1--0-sw"
URBAN = "1-LV-urban6--0-sw"
MV_RURAL = "1-MV-rural--0-sw"


@pytest.fixture(scope="module")
def rural() -> FeederModel:
    return load_feeder(RURAL)


@pytest.fixture(scope="module")
def urban() -> FeederModel:
    return load_feeder(URBAN)


@pytest.fixture(scope="module")
def mv_rural() -> FeederModel:
    return load_feeder(MV_RURAL)


@pytest.fixture(scope="module")
def cigre_lv() -> FeederModel:
    return load_feeder("pandapower:cigre_lv")


def _disconnect_a_load_bus(model: FeederModel) -> tuple[FeederModel, str]:
    """A copy of ``model`` with the only line to one load bus out of service."""
    net = copy.deepcopy(model.net)
    for bus in sorted(set(net.load.bus)):
        touching = net.line.index[(net.line.from_bus == bus) | (net.line.to_bus == bus)]
        if len(touching) == 1:
            net.line.loc[touching[0], "in_service"] = False
            return dataclasses.replace(model, net=net), bus_name(net, int(bus))
    raise AssertionError("no load bus hangs on a single line")


# --- package surface and units -------------------------------------------------------------


def test_public_surface_is_exported() -> None:
    # the list itself is pinned once, in tests/test_public_api.py
    assert all(hasattr(grid, name) for name in grid.__all__)


def test_unit_converters_round_trip() -> None:
    assert kw_to_mw(160.0) == pytest.approx(0.16)
    assert mw_to_kw(0.63) == pytest.approx(630.0)
    assert mw_to_kw(kw_to_mw(123.4)) == pytest.approx(123.4)


# --- loading -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "feeder_id", "rating_kva", "level_kv", "buses", "lines", "n_load_buses"),
    [
        # one 0.16 MVA 20/0.4 kV transformer
        ("rural", RURAL, 160.0, 0.4, 15, 13, 13),
        # one 0.63 MVA 20/0.4 kV transformer
        ("urban", URBAN, 630.0, 0.4, 59, 57, 53),
        # two 25 MVA 110/20 kV transformers; the second HV bus hangs on the ext_grid bus
        # through a closed bus coupler, so both count
        ("mv_rural", MV_RURAL, 50_000.0, 20.0, 97, 99, 92),
        # three 20/0.4 kV transformers (0.5 + 0.15 + 0.3 MVA) behind bus-bus switches
        ("cigre_lv", "cigre_lv", 950.0, 0.4, 44, 37, 15),
    ],
)
def test_loaded_feeder_numbers(
    request: pytest.FixtureRequest,
    fixture: str,
    feeder_id: str,
    rating_kva: float,
    level_kv: float,
    buses: int,
    lines: int,
    n_load_buses: int,
) -> None:
    model: FeederModel = request.getfixturevalue(fixture)
    assert model.feeder_id == feeder_id
    assert model.rating_kva == pytest.approx(rating_kva)
    assert model.limit_kw == pytest.approx(rating_kva * 0.95)
    assert model.voltage_level_kv == pytest.approx(level_kv)
    assert (model.buses, model.lines) == (buses, lines)
    assert (len(model.net.bus), len(model.net.line)) == (buses, lines)
    names = load_buses(model)
    assert len(names) == n_load_buses
    assert len(set(model.bus_names())) == model.buses
    for name in names:
        idx = bus_index(model, name)
        assert bus_name(model.net, idx) == name
        assert (model.net.load.bus == idx).any()


def test_rating_equals_transformer_table(rural: FeederModel) -> None:
    assert rural.rating_kva == pytest.approx(mw_to_kw(float(rural.net.trafo.sn_mva.sum())))


def test_simbench_bus_names_are_kept(rural: FeederModel) -> None:
    assert rural.bus_names() == tuple(rural.net.bus.name)
    assert "MV1.101 Bus 4" in rural.bus_names()


def test_feeder_id_and_power_factor_options() -> None:
    model = load_feeder("pandapower:kerber_landnetz_freileitung_1", feeder_id="f1", power_factor=1)
    assert model.feeder_id == "f1"
    assert model.source == "pandapower:kerber_landnetz_freileitung_1"
    assert model.rating_kva == pytest.approx(160.0)
    assert model.limit_kw == pytest.approx(160.0)
    with pytest.raises(ConfigError) as err:
        load_feeder("pandapower:cigre_lv", power_factor=1.5)
    assert [i.field for i in err.value.issues] == ["power_factor"]


def test_more_pandapower_builtins_load() -> None:
    mv = load_feeder("pandapower:cigre_mv")
    assert (mv.rating_kva, mv.voltage_level_kv) == (pytest.approx(50_000.0), 20.0)
    dorf = load_feeder("pandapower:kerber_dorfnetz")
    assert (dorf.rating_kva, dorf.voltage_level_kv) == (pytest.approx(400.0), 0.4)


def test_each_load_gets_its_own_net(cigre_lv: FeederModel) -> None:
    other = load_feeder("pandapower:cigre_lv")
    assert other.net is not cigre_lv.net
    other.net.load.loc[:, "p_mw"] = 0.0
    assert cigre_lv.net.load.p_mw.sum() > 0
    assert other == cigre_lv  # the net does not take part in equality


@pytest.mark.parametrize("spec", ["no-such-grid", "pandapower:no_such_net", "1-LV-rural9--0-sw"])
def test_unknown_spec_lists_accepted_forms(spec: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_feeder(spec)
    assert isinstance(err.value, GridflexError)
    (issue,) = err.value.issues
    assert (issue.field, issue.ids) == ("spec", (spec,))
    for form in ("SimBench code", "pandapower:<name>", "cigre_lv", "kerber_dorfnetz", ".json"):
        assert form in issue.message


def test_missing_json_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_feeder(str(tmp_path / "absent.json"))
    assert err.value.issues[0].field == "spec"


# --- transformer taps ----------------------------------------------------------------------


def _lv_voltage_pu(net: Any, tap_pos: float) -> float:
    net = copy.deepcopy(net)
    net.trafo.loc[:, "tap_pos"] = tap_pos
    pp.runpp(net, numba=False)
    return float(net.res_bus.vm_pu.at[int(net.trafo.lv_bus.iloc[0])])


def test_simbench_tap_changer_type_is_set_and_taps_act(rural: FeederModel) -> None:
    assert (rural.net.trafo.tap_changer_type == "Ratio").all()
    assert _lv_voltage_pu(rural.net, 2) < _lv_voltage_pu(rural.net, 0) - 0.02
    # the pitfall: without a tap changer type pandapower >= 3 ignores the tap position
    untyped = copy.deepcopy(rural.net)
    untyped.trafo["tap_changer_type"] = None
    assert _lv_voltage_pu(untyped, 2) == pytest.approx(_lv_voltage_pu(untyped, 0))


def test_taps_without_data_are_left_alone(cigre_lv: FeederModel) -> None:
    assert cigre_lv.net.trafo.tap_changer_type.isna().all()


# --- JSON files ----------------------------------------------------------------------------


def test_json_round_trip(rural: FeederModel, tmp_path: Path) -> None:
    net = copy.deepcopy(rural.net)
    net.trafo["tap_changer_type"] = None  # as written by older tools
    path = tmp_path / "rural_copy.json"
    pp.to_json(net, str(path))
    model = load_feeder(str(path))
    assert model.feeder_id == "rural_copy"
    assert model.source == str(path)
    assert (model.rating_kva, model.limit_kw) == (rural.rating_kva, rural.limit_kw)
    assert (model.buses, model.lines) == (rural.buses, rural.lines)
    assert model.bus_names() == rural.bus_names()
    assert load_buses(model) == load_buses(rural)
    assert (model.net.trafo.tap_changer_type == "Ratio").all()
    times = [datetime(2016, 1, 10, 3, tzinfo=UTC), datetime(2016, 7, 1, 12, tzinfo=UTC)]
    np.testing.assert_allclose(background_load_kw(model, times), background_load_kw(rural, times))


def test_feeder_without_transformer_is_rated_by_its_cable_head(tmp_path: Path) -> None:
    net = pp.create_empty_network()
    b0 = pp.create_bus(net, vn_kv=0.4, name="head")
    b1 = pp.create_bus(net, vn_kv=0.4, name="end")
    pp.create_ext_grid(net, b0)
    pp.create_line(net, b0, b1, length_km=0.2, std_type="NAYY 4x150 SE")
    pp.create_load(net, b1, p_mw=0.03)
    path = tmp_path / "no_trafo.json"
    pp.to_json(net, str(path))
    model = load_feeder(str(path))
    max_i_ka = float(net.line.max_i_ka.iloc[0])
    assert model.rating_kva == pytest.approx(math.sqrt(3) * 0.4 * max_i_ka * 1000)
    assert model.voltage_level_kv == 0.4
    assert load_buses(model) == ("end",)


# --- bus labels ----------------------------------------------------------------------------


def test_bus_labels_fall_back_to_index(cigre_lv: FeederModel) -> None:
    net = copy.deepcopy(cigre_lv.net)
    i1, i2, i3, i4, i5 = (int(i) for i in net.bus.index[1:6])
    net.bus.loc[i2, "name"] = net.bus.at[i1, "name"]  # duplicate
    net.bus.loc[i3, "name"] = None  # missing
    net.bus.loc[i4, "name"] = f"bus{i5}"  # would shadow another bus's fallback
    model = dataclasses.replace(cigre_lv, net=net)
    labels = model.bus_names()
    assert [labels[k] for k in range(1, 5)] == [f"bus{i1}", f"bus{i2}", f"bus{i3}", f"bus{i4}"]
    assert len(set(labels)) == len(labels)
    for idx, label in zip(net.bus.index, labels, strict=True):
        assert bus_name(net, int(idx)) == label
        assert bus_index(model, label) == idx


def test_unknown_bus_name_and_index_raise(cigre_lv: FeederModel) -> None:
    with pytest.raises(InvalidInput) as err:
        bus_index(cigre_lv, "nowhere")
    assert err.value.issues[0].ids == ("nowhere",)
    with pytest.raises(InvalidInput):
        bus_name(cigre_lv.net, 10_000)


# --- site placement and validation ---------------------------------------------------------


def test_place_sites_is_deterministic_and_valid(urban: FeederModel) -> None:
    a = place_sites(urban, 20, seed=7)
    assert a == place_sites(urban, 20, seed=7)
    assert a != place_sites(urban, 20, seed=8)
    assert [p.site_id for p in a] == [f"site-{i:03d}" for i in range(1, 21)]
    assert len({p.bus for p in a}) == 20  # no bus reused while there are enough
    assert set(p.bus for p in a) <= set(load_buses(urban))
    for p in a:
        assert 50.0 <= p.connection_limit_kw <= 200.0
        assert p.connection_limit_kw % 5 == 0
    assert validate_placements(urban, a) == []


def test_place_more_sites_than_load_buses(rural: FeederModel) -> None:
    sites = place_sites(rural, 30, seed=3, prefix="cp", connection_limit_kw=(11.0, 22.0))
    buses = [p.bus for p in sites]
    assert set(buses) == set(load_buses(rural))
    assert len(set(buses[:13])) == 13  # the first round uses every bus once
    assert sites[-1].site_id == "cp-030"
    assert {p.connection_limit_kw for p in sites} <= {15.0, 20.0}
    assert validate_placements(rural, sites) == []


def test_place_sites_rejects_bad_arguments(rural: FeederModel) -> None:
    with pytest.raises(InvalidInput) as err:
        place_sites(rural, -1, connection_limit_kw=(100.0, 50.0))
    assert {i.field for i in err.value.issues} == {"n_sites", "connection_limit_kw"}
    assert place_sites(rural, 0) == ()


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_sites=st.integers(0, 40),
    low=st.floats(1.0, 300.0),
    width=st.floats(0.0, 300.0),
)
def test_placements_always_validate(
    mv_rural: FeederModel, seed: int, n_sites: int, low: float, width: float
) -> None:
    sites = place_sites(mv_rural, n_sites, seed=seed, connection_limit_kw=(low, low + width))
    assert len(sites) == n_sites
    assert validate_placements(mv_rural, sites) == []
    for p in sites:
        assert p.connection_limit_kw % 5 == 0
        if math.ceil(low / 5) * 5 <= low + width:
            assert low <= p.connection_limit_kw <= low + width


def test_disconnected_bus_is_reported(rural: FeederModel) -> None:
    cut, bus = _disconnect_a_load_bus(rural)
    issues = validate_placements(cut, [SitePlacement("site-001", bus, 100.0)])
    assert [(i.field, i.ids) for i in issues] == [("placements.bus", ("site-001",))]
    assert "no path to the external grid" in issues[0].message
    assert validate_placements(rural, [SitePlacement("site-001", bus, 100.0)]) == []
    assert bus not in {p.bus for p in place_sites(cut, 40, seed=1)}


def test_validate_reports_every_problem_at_once(rural: FeederModel) -> None:
    cut, dead_bus = _disconnect_a_load_bus(rural)
    good = next(b for b in load_buses(rural) if b != dead_bus)
    placements = [
        SitePlacement("site-001", good, 100.0),  # fine
        SitePlacement("site-002", "no such bus", 100.0),
        SitePlacement("site-001", good, 50.0),  # duplicate id
        SitePlacement("site-003", good, 0.0),
        SitePlacement("site-004", good, math.nan),
        SitePlacement("site-005", good, math.inf),
        SitePlacement("site-006", "MV1.101 Bus 4", 100.0),  # 20 kV, upstream of the trafo
        SitePlacement("site-007", dead_bus, 100.0),
        SitePlacement("", good, 100.0),
        SitePlacement("site-008", "elsewhere", -5.0),  # two problems
    ]
    issues = validate_placements(cut, placements)
    assert sorted((i.field, i.ids) for i in issues) == sorted(
        [
            ("placements.bus", ("site-002",)),
            ("placements.site_id", ("site-001",)),
            ("placements.connection_limit_kw", ("site-003",)),
            ("placements.connection_limit_kw", ("site-004",)),
            ("placements.connection_limit_kw", ("site-005",)),
            ("placements.bus", ("site-006",)),
            ("placements.bus", ("site-007",)),
            ("placements.site_id", ()),
            ("placements.bus", ("site-008",)),
            ("placements.connection_limit_kw", ("site-008",)),
        ]
    )


def test_to_topology(urban: FeederModel) -> None:
    sites = place_sites(urban, 5, seed=1)
    topo = to_topology(urban, sites, csms_id="csms-a")
    assert topo.validate() == []
    (feeder,) = topo.feeders
    assert (feeder.feeder_id, feeder.limit_kw, feeder.name) == (URBAN, 598.5, URBAN)
    assert [s.bus for s in topo.sites] == [p.bus for p in sites]
    assert {s.feeder_id for s in topo.sites} == {URBAN}
    assert {s.csms_id for s in topo.sites} == {"csms-a"}
    np.testing.assert_allclose(topo.site_limit_kw, [p.connection_limit_kw for p in sites])


# --- background load -----------------------------------------------------------------------


def test_background_load_follows_the_profile(urban: FeederModel) -> None:
    day = datetime(2024, 1, 17, tzinfo=UTC)
    times = [day + timedelta(minutes=15 * k) for k in range(96)]
    load_kw = background_load_kw(urban, times)
    assert load_kw.shape == (96,)
    assert np.isfinite(load_kw).all()
    night, midday = load_kw[12], load_kw[48]  # 03:00 and 12:00 UTC
    assert abs(midday - night) > 1.0


@pytest.mark.parametrize("fixture", ["rural", "mv_rural"])
def test_background_load_matches_simbench_absolute_values(
    request: pytest.FixtureRequest, fixture: str
) -> None:
    model: FeederModel = request.getfixturevalue(fixture)
    absolute = sb.get_absolute_values(
        copy.deepcopy(model.net), profiles_instead_of_study_cases=True
    )
    times = [datetime(2016, 6, 15, 12, 0, tzinfo=UTC), datetime(2016, 12, 31, 23, 45, tzinfo=UTC)]
    steps = [((t.timetuple().tm_yday - 1) * 1440 + t.hour * 60 + t.minute) // 15 for t in times]
    assert steps[-1] == 35_135  # the last step of the leap year 2016
    expected_mw = [
        absolute[("load", "p_mw")].iloc[k].sum() - absolute[("sgen", "p_mw")].iloc[k].sum()
        for k in steps
    ]
    np.testing.assert_allclose(background_load_kw(model, times), np.array(expected_mw) * 1000)


def test_background_load_time_mapping(rural: FeederModel) -> None:
    base = datetime(2016, 1, 10, 12, 0, tzinfo=UTC)
    same_step = [
        base,
        base + timedelta(minutes=14),  # same 15-minute step
        datetime(2021, 1, 10, 12, 0, tzinfo=UTC),  # year ignored
        datetime(2016, 1, 10, 13, 0, tzinfo=timezone(timedelta(hours=1))),  # = 12:00 UTC
    ]
    values = background_load_kw(rural, same_step)
    np.testing.assert_allclose(values, values[0])
    with pytest.raises(InvalidInput) as err:
        background_load_kw(rural, [base, datetime(2016, 1, 10)])  # noqa: DTZ001
    assert err.value.issues[0].ids == ("1",)


def test_background_load_without_profiles_is_static(cigre_lv: FeederModel) -> None:
    net = cigre_lv.net
    assert net.sgen.empty
    load_mw = (net.load.p_mw * net.load.scaling)[net.load.in_service.astype(bool)].sum()
    times = [datetime(2024, 3, 1, h, tzinfo=UTC) for h in (0, 12, 23)]
    np.testing.assert_allclose(background_load_kw(cigre_lv, times), load_mw * 1000)
    assert load_mw * 1000 == pytest.approx(686.6)
