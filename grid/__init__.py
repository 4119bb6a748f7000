"""gridflex's feeder-model package: the distribution grid under the EV fleet.

``grid`` turns grid data (SimBench codes, pandapower built-in networks, pandapower JSON
files) into frozen gridflex domain values: a :class:`FeederModel` with its rating and
EV-visible limit in kW, site placements on its buses, the :class:`aggregator.topology.Topology`
the planner and dispatcher share, and the feeder's own background load over time. ``powerflow``
runs AC power flow over a horizon (power-grid-model batch, pandapower as reference),
``sensitivity`` linearises loading and voltage around a schedule for the planner,
``hosting`` finds each site's hosting capacity, and ``model`` binds it all to the core's
``GridModel`` interface.

The package may import pandapower, simbench, numpy and ``aggregator``; never ``adapters``.
Units follow the core: kW (pandapower's MW/MVA are converted once, in this package);
positive power = import from the grid.
"""

from grid.feeders import (  # noqa: I001 (feeders first: the others build on it)
    DEFAULT_POWER_FACTOR,
    KW_PER_MW,
    MW_PER_KW,
    PANDAPOWER_NETWORKS,
    PANDAPOWER_PREFIX,
    PROFILE_STEP_MIN,
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

from grid.hosting import hosting_capacity_kw
from grid.model import DEFAULT_MARGIN, FeederGrid, GridMargin, base_load_correction
from grid.powerflow import GridLimits, PowerFlowResult, Violation, background_pq_mw, run_timeseries
from grid.sensitivity import Sensitivities, grid_constraints, linearize, predict

__all__ = [
    "DEFAULT_MARGIN",
    "DEFAULT_POWER_FACTOR",
    "KW_PER_MW",
    "MW_PER_KW",
    "PANDAPOWER_NETWORKS",
    "PANDAPOWER_PREFIX",
    "PROFILE_STEP_MIN",
    "FeederGrid",
    "FeederModel",
    "GridLimits",
    "GridMargin",
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
