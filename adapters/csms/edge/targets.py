"""What the edge controls: the :class:`EdgeTarget` protocol and the ONE registration point.

An edge target is a southbound protocol room (OCPP stations, S2 resource managers) that
reports its open sessions and applies per-EVSE targets (kW) and per-station limits. The
edge runner knows targets only through this protocol.

**Registration point.** :data:`TARGETS` maps a target name (as given in the edge
settings, ``GRIDFLEX_EDGE__TARGETS``) to ``"module:function"``; the function takes an
:class:`EdgeContext` and returns the target. A new protocol room adds one line here and
nothing else: the S2 PEBC energy manager registers as ``"s2"``, its builder living in
``adapters/csms/s2/edge.py`` (``build(ctx) -> EdgeTarget``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from adapters.csms.edge.autonomy import ActiveSession, Mode, SiteSpec
from aggregator.interfaces import Clock

if TYPE_CHECKING:
    from adapters.csms.edge.settings import EdgeSettings
    from adapters.csms.ocpp.station import Emit

__all__ = ["TARGETS", "EdgeContext", "EdgeTarget", "build_target"]

TARGETS: dict[str, str] = {
    "ocpp": "adapters.csms.edge.ocpp_target:build",
    "s2": "adapters.csms.s2.edge:build",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class EdgeContext:
    """What a target builder gets: settings, topology, clock, and the two outlets
    (``emit(kind, feeder key, wire message)`` → buffered upstream; ``report(EdgeReport)``)."""

    settings: EdgeSettings
    sites: Sequence[SiteSpec]
    clock: Clock
    emit: Emit
    report: Callable[[Any], None]


class EdgeTarget(Protocol):
    name: str

    async def start(self) -> None:
        """Start serving (bind ports); called once before the first step."""
        ...

    async def stop(self) -> None: ...

    def sessions(self, now: datetime) -> Sequence[ActiveSession]:
        """The open sessions it controls (and release held telemetry due at ``now``)."""
        ...

    def evse_ids_by_station(self) -> Mapping[str, Sequence[str]]:
        """Gridflex EVSE ids per station (or per resource manager)."""
        ...

    async def apply(self, targets_kw: Mapping[str, float], mode: Mode) -> int:
        """Apply per-EVSE targets (only the EVSEs it owns); returns how many were accepted."""
        ...

    async def set_station_limits(self, limits: Mapping[str, tuple[float, float]]) -> None:
        """Per station: (max kW, failsafe kW); send only what changed."""
        ...


def build_target(name: str, ctx: EdgeContext) -> EdgeTarget:
    """Build the target registered as ``name`` (ValueError for an unknown name)."""
    where = TARGETS.get(name)
    if where is None:
        raise ValueError(f"unknown edge target {name!r}; known: {', '.join(sorted(TARGETS))}")
    module, _, func = where.partition(":")
    builder: Callable[[EdgeContext], EdgeTarget] = getattr(importlib.import_module(module), func)
    return builder(ctx)
