"""S2 (EN 50491-12-2) power envelope based control: gridflex as the CEM for resource managers.

* :mod:`adapters.csms.s2.convert` — S2 PEBC wire models ↔ :mod:`aggregator.pebc` (W, ms ↔
  kW, s), clamping every envelope bound into what the resource manager allowed;
* :mod:`adapters.csms.s2.session` — one resource manager's session (no I/O);
* :mod:`adapters.csms.s2.cem` — the WebSocket server and setpoint sink.
"""

from adapters.csms.s2.cem import S2Cem, S2Settings, batch_segments, plan_segments
from adapters.csms.s2.convert import EnvelopeSegment, S2Limits
from adapters.csms.s2.session import InstructionRecord, Reaction, RmSession, S2Resource

__all__ = [
    "EnvelopeSegment",
    "InstructionRecord",
    "Reaction",
    "RmSession",
    "S2Cem",
    "S2Limits",
    "S2Resource",
    "S2Settings",
    "batch_segments",
    "plan_segments",
]
