"""Pin the public surface of the core packages: a change to ``__all__`` must be deliberate."""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest

import aggregator
import grid
import markets

AGGREGATOR_ALL = [
    "Activation",
    "ApplyOutcome",
    "ApplyResult",
    "Caps",
    "Clock",
    "ConfigError",
    "DispatchFrame",
    "Dispatcher",
    "DsoLimit",
    "EnergyConstraint",
    "EnergyTransferPlan",
    "Feeder",
    "FleetState",
    "GridflexError",
    "HistorySink",
    "Infeasible",
    "InvalidInput",
    "Issue",
    "LimitBook",
    "ManualClock",
    "MessageBus",
    "PowerConstraints",
    "PowerEnvelope",
    "PowerRange",
    "Record",
    "SessionState",
    "SetpointSink",
    "Site",
    "SolverFailed",
    "TargetType",
    "Topics",
    "Topology",
    "TransientIO",
    "check_energy_feasible",
    "check_plan",
    "limit_excess_kw",
]

GRID_ALL = [
    "DEFAULT_MARGIN",
    "DEFAULT_POWER_FACTOR",
    "FeederGrid",
    "FeederModel",
    "GridLimits",
    "GridMargin",
    "KW_PER_MW",
    "MW_PER_KW",
    "PANDAPOWER_NETWORKS",
    "PANDAPOWER_PREFIX",
    "PROFILE_STEP_MIN",
    "PowerFlowResult",
    "Sensitivities",
    "SitePlacement",
    "Violation",
    "background_load_kw",
    "background_pq_mw",
    "base_load_correction",
    "bus_index",
    "bus_name",
    "grid_constraints",
    "hosting_capacity_kw",
    "kw_to_mw",
    "linearize",
    "load_buses",
    "load_feeder",
    "mw_to_kw",
    "place_sites",
    "predict",
    "run_timeseries",
    "to_topology",
    "validate_placements",
]

MARKETS_ALL = [
    "AFRR",
    "FCR",
    "Product",
    "fleet_flexibility_kw",
    "max_symmetric_reserve_kw",
]

PACKAGES = [(aggregator, AGGREGATOR_ALL), (grid, GRID_ALL), (markets, MARKETS_ALL)]
IDS = [pkg.__name__ for pkg, _ in PACKAGES]


@pytest.mark.parametrize(("package", "expected"), PACKAGES, ids=IDS)
def test_all_is_pinned(package: ModuleType, expected: list[str]) -> None:
    assert expected == sorted(expected), "keep the pinned list sorted"
    assert len(package.__all__) == len(set(package.__all__)), "duplicate name in __all__"
    assert sorted(package.__all__) == expected


@pytest.mark.parametrize(("package", "expected"), PACKAGES, ids=IDS)
def test_every_public_name_is_importable(package: ModuleType, expected: list[str]) -> None:
    fresh = importlib.import_module(package.__name__)
    missing = [name for name in package.__all__ if not hasattr(fresh, name)]
    assert missing == []
    namespace: dict[str, object] = {}
    exec(f"from {package.__name__} import *", namespace)  # the star import uses __all__
    assert set(expected) <= set(namespace)


def test_aggregator_doc_states_the_sign_convention() -> None:
    doc = aggregator.__doc__
    assert doc is not None
    flat = " ".join(doc.replace("*", "").split()).lower()
    assert "positive power = import" in flat
    assert "negative power = export" in flat
