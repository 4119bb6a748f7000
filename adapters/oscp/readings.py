"""What the OSCP provider reads from a running service, per gridflex target.

:class:`FleetReadings` is refreshed by the service loop (its thread) and read by the
provider's worker: each refresh builds new dicts and swaps them in whole, so a reader never
sees half an update. Per site, feeder (by id) and ``"fleet"``:

* ``measured_kw`` — measured net import of the live sessions
  (``Service.measured_power_kw``, :func:`aggregator.service.views.measured_power_kw`);
* ``required_kw`` — what the live sessions that still need energy would draw unhindered:
  the sum of their maximum power (:func:`aggregator.service.views.required_power_kw`).
  The plan itself never exceeds a cap in force, so the sessions' own maximum is what tells
  that a capacity is short (the AdjustGroupCapacity rule: required > capacity of the
  block in force).
"""

from __future__ import annotations

from typing import Any

from aggregator.service.views import required_power_kw

__all__ = ["FleetReadings"]


class FleetReadings:
    """Measured and required kW per target id (thread-safe to read)."""

    def __init__(self) -> None:
        self._measured: dict[str, float] = {}
        self._required: dict[str, float] = {}

    def measured_kw(self, target_id: str) -> float:
        return self._measured.get(target_id, 0.0)

    def required_kw(self, target_id: str) -> float:
        return self._required.get(target_id, 0.0)

    def refresh(self, service: Any) -> None:
        """Recompute from ``service`` (a :class:`~aggregator.service.replica.Service`)."""
        if service is None:
            self._measured, self._required = {}, {}
            return
        self._measured = service.measured_power_kw()
        self._required = required_power_kw(service.fleet, service.topology)
