"""The audit log's subscription to the service's typed events (one entry per fact).

The DSO intake writes ``limit.received`` / ``limit.cancelled`` once, when a limit arrives
whatever its protocol; the service's own :class:`~aggregator.service.events.LimitApplied`
and :class:`~aggregator.service.events.LimitCancelled` therefore add nothing to the audit
log (they are for metrics). What only the service knows is audited here:

* ``fallback`` — a plan made by the proportional fallback (optimizer infeasible, timed
  out, failed a check), with the reason;
* ``limit.rejected`` — a limit the service refused although the intake accepted it.

``emit`` runs on the service's thread and never raises: a failed append is logged.
"""

from __future__ import annotations

import structlog

from adapters.dso.audit import AuditLog, fallback_taken
from aggregator.errors import InvalidInput
from aggregator.service.events import LimitRejected, PlanMade, ServiceEvent

__all__ = ["LIMIT_REJECTED", "AuditSink"]

LIMIT_REJECTED = "limit.rejected"
_log = structlog.get_logger("gridflex.audit")


class AuditSink:
    """An :class:`~aggregator.service.events.EventSink` writing to an audit log."""

    def __init__(self, log: AuditLog, *, source: str = "service") -> None:
        self.log = log
        self.source = source

    def emit(self, event: ServiceEvent) -> None:
        try:
            if isinstance(event, PlanMade) and event.fallback is not None:
                details = {
                    "plan_start": event.plan_start.isoformat(),
                    "sessions": event.sessions,
                    "solver": event.solver,
                }
                fallback_taken(
                    self.log, event.fallback, event.at, details=details, source=self.source
                )
            elif isinstance(event, LimitRejected):
                payload = {"event_id": event.event_id, "reason": event.reason}
                self.log.append(LIMIT_REJECTED, payload, event.at, source=self.source)
        except (InvalidInput, OSError, ValueError) as exc:
            _log.error("audit_append_failed", event=type(event).__name__, error=repr(exc))
