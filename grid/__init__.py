"""gridflex's feeder-model package: the distribution grid under the EV fleet.

``grid`` turns grid data (SimBench codes, pandapower built-in networks, pandapower JSON
files) into frozen gridflex domain values: a :class:`FeederModel` with its rating and
EV-visible limit in kW, site placements on its buses, the :class:`aggregator.topology.Topology`
the planner and dispatcher share, and the feeder's own background load over time. Later
modules add linear sensitivities (power → voltage, loading) and AC power-flow validation of
dispatch plans.

The package may import pandapower, simbench, numpy and ``aggregator``; never ``adapters``.
Units follow the core: kW (pandapower's MW/MVA are converted once, in this package);
positive power = import from the grid.
"""

from grid.feeders import (
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

__all__ = [
    "DEFAULT_POWER_FACTOR",
    "KW_PER_MW",
    "MW_PER_KW",
    "PANDAPOWER_NETWORKS",
    "PANDAPOWER_PREFIX",
    "PROFILE_STEP_MIN",
    "FeederModel",
    "SitePlacement",
    "background_load_kw",
    "bus_index",
    "bus_name",
    "kw_to_mw",
    "load_buses",
    "load_feeder",
    "mw_to_kw",
    "place_sites",
    "to_topology",
    "validate_placements",
]
