"""gridflex edge: the charging-station area controller (CSAC) beside a site or a CSMS.

:class:`EdgeRunner` reads setpoint batches for one CSMS id (Kafka or embedded), keeps the
sites under their caps whatever upstream does (:mod:`.autonomy`: lease, failsafe,
autonomous, local balancing), drives the registered southbound targets (:mod:`.targets`:
OCPP stations, S2 resource managers) and sends telemetry upstream through a durable
on-disk buffer (:mod:`.buffer`), exactly once per record id.
"""

from adapters.csms.edge.autonomy import ActiveSession, Csac, SiteSpec, balance
from adapters.csms.edge.buffer import TelemetryBuffer
from adapters.csms.edge.runner import EdgeRunner
from adapters.csms.edge.settings import EdgeSettings, load_edge_settings
from adapters.csms.edge.targets import TARGETS, EdgeContext, EdgeTarget, build_target
from adapters.csms.edge.upstream import EdgeReport, EmbeddedUpstream, KafkaUpstream, Upstream

__all__ = [
    "TARGETS",
    "ActiveSession",
    "Csac",
    "EdgeContext",
    "EdgeReport",
    "EdgeRunner",
    "EdgeSettings",
    "EdgeTarget",
    "EmbeddedUpstream",
    "KafkaUpstream",
    "SiteSpec",
    "TelemetryBuffer",
    "Upstream",
    "balance",
    "build_target",
    "load_edge_settings",
]
