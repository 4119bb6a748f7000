"""What the OpenADR 3 VEN reports, per gridflex target, read from a running service.

:class:`PlanReadings` is refreshed by the service loop (its own thread) and read by the VEN's
threads: each refresh builds a new dict and swaps it in whole, so readers never see a half
update. Per site, feeder and the fleet:

* ``usage_kw`` — measured power of the live sessions (``Service.measured_power_kw``);
* ``baseline_kw`` — the current plan's power in the current step (what the fleet would
  draw without an activation: the plan is the baseline the aggregator committed to);
* ``up_kw`` / ``down_kw`` — regulation available in the current step around the plan
  (:func:`markets.flexibility.fleet_flexibility_kw` over the target's sessions, never
  below 0: solver round-off is not a negative offer), for feeders and the fleet; ``None``
  for single sites (not worth a sub-plan per site).

Without a plan only ``usage_kw`` is given. Refreshing costs one sub-plan per feeder, so the
loop calls it every few seconds, not every turn (:attr:`PlanReadings.every_s`).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from adapters.openadr3.config import OpenAdr3Target
from adapters.openadr3.mapping import Readings
from aggregator.planning.request import select_sessions
from markets.flexibility import fleet_flexibility_kw

__all__ = ["PlanReadings"]


class PlanReadings:
    """Readings per target id, swapped whole on each refresh (thread-safe to read)."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s = every_s
        self._at = -math.inf
        self._by_id: dict[str, Readings] = {}

    def __call__(self, target: OpenAdr3Target) -> Readings:
        return self._by_id.get(target.id, Readings(usage_kw=0.0))

    def refresh(self, service: Any) -> None:
        """Recompute from ``service`` (a :class:`~aggregator.service.replica.Service`) when
        ``every_s`` has passed since the last time."""
        if service is None or time.monotonic() - self._at < self.every_s:
            return
        self._at = time.monotonic()
        usage = service.measured_power_kw()
        plan, req = service.plan, service.last_request
        baseline: dict[str, float] = {}
        flex: dict[str, tuple[float, float]] = {}
        if plan is not None and req is not None and req.steps > 0:
            now = service.clock.now()
            step = int((now - req.start).total_seconds() // req.step_s)
            if 0 <= step < req.steps:
                baseline, flex = _from_plan(service.topology, plan, req, step)
        self._by_id = {
            tid: Readings(
                usage_kw=kw,
                baseline_kw=baseline.get(tid),
                up_kw=flex[tid][0] if tid in flex else None,
                down_kw=flex[tid][1] if tid in flex else None,
            )
            for tid, kw in usage.items()
        }


def _from_plan(
    topo: Any, plan: Any, req: Any, step: int
) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    now_kw = plan.power_kw[:, step] if req.n_sessions else np.zeros(0)
    site_kw = np.bincount(req.session_site, weights=now_kw, minlength=topo.n_sites)
    feeder_kw = np.bincount(topo.site_feeder, weights=site_kw, minlength=topo.n_feeders)
    baseline = {s.site_id: float(site_kw[i]) for i, s in enumerate(topo.sites)}
    baseline.update({f.feeder_id: float(feeder_kw[i]) for i, f in enumerate(topo.feeders)})
    baseline["fleet"] = float(site_kw.sum())
    flex: dict[str, tuple[float, float]] = {}
    groups = {f.feeder_id: i for i, f in enumerate(topo.feeders)}
    session_feeder = topo.site_feeder[req.session_site] if req.n_sessions else np.zeros(0, int)
    for fid, fi in [*groups.items(), ("fleet", -1)]:
        keep = session_feeder == fi if fi >= 0 else np.ones(req.n_sessions, dtype=bool)
        up, down = fleet_flexibility_kw(*select_sessions(plan, req, keep))
        flex[fid] = (max(0.0, float(up[step])), max(0.0, float(down[step])))
    return baseline, flex
