"""gridflex's domain core: PEBC types, messages, fleet state, DSO limits and the fast loop.

Rooms: :mod:`aggregator.planning` (slow loop: request, optimizer, fallback, grid loop),
:mod:`aggregator.service` (one replica: typed calls in, typed events and batches out),
:mod:`aggregator.sim` (scenarios, closed-loop simulation, reference CSMS, LPC machine).
Importing this package loads no solver: the fast loop stays light.

Sign convention (the only one in gridflex): **positive power = import from the grid**
(charging), negative power = export to the grid (V2G discharge). Units in the core: kW,
kWh, seconds, UTC-aware datetimes; adapters convert at the boundary (pandapower MW, S2 W
and ms, OpenADR ISO 8601 durations).

The core never imports an adapter or an I/O library; it depends on the small protocols
in :mod:`aggregator.interfaces` (bus, setpoint sink, history sink, clock).
"""

from aggregator.dispatch import Activation, Dispatcher, DispatchFrame, limit_excess_kw
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
from aggregator.pebc import (
    EnergyConstraint,
    EnergyTransferPlan,
    PowerConstraints,
    PowerEnvelope,
    PowerRange,
    check_energy_feasible,
    check_plan,
)
from aggregator.topology import Feeder, Site, Topology

__all__ = [
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
