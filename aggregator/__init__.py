"""gridflex's domain core: PEBC types, messages, fleet state, planner and dispatcher.

Sign convention (the only one in gridflex): **positive power = import from the grid**
(charging), negative power = export to the grid (V2G discharge). Units in the core: kW,
kWh, seconds, UTC-aware datetimes; adapters convert at the boundary (pandapower MW, S2 W
and ms, OpenADR ISO 8601 durations).

The core never imports an adapter or an I/O library; it depends on the small protocols
in :mod:`aggregator.interfaces` (bus, setpoint sink, history sink, clock).
"""

from aggregator.dispatch import Dispatcher, DispatchFrame, fcr_activation, limit_excess_kw
from aggregator.errors import (
    ConfigError,
    GridflexError,
    Infeasible,
    InvalidInput,
    Issue,
    SolverFailed,
    TransientIO,
)
from aggregator.fleet import ApplyOutcome, ApplyResult, FleetState, SessionState
from aggregator.interfaces import (
    Clock,
    HistorySink,
    ManualClock,
    MessageBus,
    Record,
    SetpointSink,
    Topics,
)
from aggregator.limits import Caps, DsoLimit, LimitBook, TargetType
from aggregator.optimizer import Planner, proportional_plan
from aggregator.pebc import (
    EnergyConstraint,
    EnergyTransferPlan,
    PowerConstraints,
    PowerEnvelope,
    PowerRange,
    check_energy_feasible,
    check_plan,
)
from aggregator.planning import Plan, PlanRequest, PlanWeights, transfer_plan
from aggregator.scenario import AnnouncedLimit, Scenario, SessionSpec, TimeSeries
from aggregator.service import DispatchOutcome, PriceSeries, Service, ServiceConfig
from aggregator.simulation import SimulationResult, deliverable_energy_kwh, run_simulation
from aggregator.topology import Feeder, Site, Topology

__all__ = [
    "AnnouncedLimit",
    "ApplyOutcome",
    "ApplyResult",
    "Caps",
    "Clock",
    "ConfigError",
    "DispatchFrame",
    "DispatchOutcome",
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
    "Plan",
    "PlanRequest",
    "PlanWeights",
    "Planner",
    "PowerConstraints",
    "PowerEnvelope",
    "PowerRange",
    "PriceSeries",
    "Record",
    "Scenario",
    "Service",
    "ServiceConfig",
    "SessionSpec",
    "SessionState",
    "SetpointSink",
    "SimulationResult",
    "Site",
    "SolverFailed",
    "TargetType",
    "TimeSeries",
    "Topics",
    "Topology",
    "TransientIO",
    "check_energy_feasible",
    "check_plan",
    "deliverable_energy_kwh",
    "fcr_activation",
    "limit_excess_kw",
    "proportional_plan",
    "run_simulation",
    "transfer_plan",
]
