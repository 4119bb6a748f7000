"""The slow loop's desk: which plan job was submitted, and which finished plan is in use.

:class:`PlanDesk` sits between the service and its
:class:`~aggregator.service.planrunner.PlanRunner`. It decides when a re-plan is due (plan
step boundary, a limit change, session churn at most every ``min_replan_interval_s``),
builds the :class:`~aggregator.service.planrunner.PlanJob` from the request of now, and
takes finished results: a result built before a newer limit change, or without a plan,
is discarded (:class:`~aggregator.service.events.PlanDiscarded`); otherwise it becomes
the plan in use (:class:`~aggregator.service.events.PlanMade`).

Invariants: a plan is used only if the limit book has not changed since its job was
built and it passed the PEBC check of its sessions' envelopes (the engine replaces one that
fails by the proportional fallback); nothing here ever waits for a solve (the runner's
``submit`` and ``poll`` do not block); the timing and grid histories are bounded.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from aggregator.fleet import FleetState
from aggregator.planning.gridloop import GridCheck
from aggregator.planning.request import PlanRequest
from aggregator.service.config import HISTORY, ServiceConfig
from aggregator.service.events import PlanDiscarded, PlanMade, ServiceEvent
from aggregator.service.jobs import PlanJob, PlanResult
from aggregator.service.planrunner import PlanRunner

__all__ = ["PlanDesk"]


class PlanDesk:
    """Submits plan jobs when due and keeps the plan in use (see the module docstring)."""

    def __init__(
        self,
        runner: PlanRunner,
        config: ServiceConfig,
        counters: Counter[str],
        emit: Callable[[ServiceEvent], None],
    ) -> None:
        self.runner = runner
        self.config = config
        self.counters = counters
        self.emit = emit
        self.result: PlanResult | None = None  # the plan in use
        self.plan_s: deque[float] = deque(maxlen=HISTORY)  # build + solve of solved plans
        self.last_grid_check: GridCheck | None = None
        self.grid_notes: deque[str] = deque(maxlen=1_000)
        # per plan start: what the grid loop's repair did to the last plan of that step
        self.grid_repairs: dict[datetime, object] = {}
        self._job_id = 0
        self._submitted: tuple[int, int, int, datetime] | None = None  # lv, fv, step, at

    @property
    def waiting(self) -> bool:
        """A job was submitted and its result is not in use (yet)."""
        return self._submitted is not None and (
            self.result is None or self.result.job.job_id != self._job_id
        )

    def due(self, now: datetime, limits_version: int, fleet_version: int) -> bool:
        sub = self._submitted
        if sub is None:
            return True
        lv, fv, step, at = sub
        if limits_version != lv:
            return True
        if math.floor(now.timestamp() / self.config.plan_step_s) != step:
            return True
        waited = (now - at).total_seconds() >= self.config.min_replan_interval_s
        return fleet_version != fv and waited

    def submit(
        self,
        now: datetime,
        request: PlanRequest,
        slots: NDArray[np.intp],
        fleet: FleetState,
        limits_version: int,
    ) -> None:
        """Hand the runner a job for ``request`` (rows = fleet ``slots``), with what the
        fleet knows of those sessions now: arrival, PEBC envelopes and minimum power."""
        arrival_s = fleet.arrival_s[slots].copy()
        envelopes = fleet.session_envelopes(
            slots, start=request.start, step_s=request.step_s, steps=request.steps, now=now
        )
        min_charge_kw = fleet.min_charge_kw[slots].copy()
        fleet_version = fleet.version
        self._job_id += 1
        job = PlanJob(
            job_id=self._job_id,
            made_at=now,
            request=request,
            slots=slots,
            arrival_s=arrival_s,
            limits_version=limits_version,
            fleet_version=fleet_version,
            envelopes=envelopes,
            min_charge_kw=min_charge_kw,
        )
        step = math.floor(now.timestamp() / self.config.plan_step_s)
        self._submitted = (limits_version, fleet_version, step, now)
        self.counters["plans.submitted"] += 1
        self.runner.submit(job)

    def take(self, now: datetime, limits_version: int) -> bool:
        """Take every finished result; ``True`` when the plan in use changed."""
        changed = False
        while (res := self.runner.poll()) is not None:
            changed = self._accept(res, now, limits_version) or changed
        return changed

    def _accept(self, res: PlanResult, now: datetime, limits_version: int) -> bool:
        plan, job = res.plan, res.job
        start = job.request.start
        if plan is None:
            self.counters["plans.failed"] += 1
            if res.pebc_rejected is not None:
                self.counters["plans.pebc_rejected"] += 1
            self.emit(PlanDiscarded(at=now, plan_start=start, reason=res.error or "no plan"))
            return False
        if job.limits_version != limits_version:
            # built before a newer limit change: never applied over it (a newer job is due)
            self.counters["plans.discarded"] += 1
            self.emit(PlanDiscarded(at=now, plan_start=start, reason="limits changed meanwhile"))
            return False
        if res.pebc_rejected is not None:
            self.counters["plans.pebc_rejected"] += 1
        if plan.solver != "none":  # an empty plan solved nothing
            self.plan_s.append(plan.build_s + plan.solve_s)
            self.counters["plans.solved"] += 1
        self.counters["plans"] += 1
        if plan.fallback is not None:
            self.counters["plans.fallback"] += 1
        if res.grid_used:
            self.counters["plans.grid_iterations"] += res.grid_iterations
            if res.grid_check is not None:
                self.last_grid_check = res.grid_check
            if res.grid_note is not None:
                self.grid_notes.append(res.grid_note)
                self.counters["plans.grid_note"] += 1
            if res.grid_repair is not None:
                self.grid_repairs[start] = res.grid_repair
                while len(self.grid_repairs) > HISTORY:
                    del self.grid_repairs[next(iter(self.grid_repairs))]
        self.result = res
        self.emit(
            PlanMade(
                at=now,
                plan_start=start,
                sessions=int(job.slots.size),
                build_s=plan.build_s,
                solve_s=plan.solve_s,
                solver=plan.solver,
                fallback=plan.fallback,
                grid_iterations=res.grid_iterations,
                grid_note=res.grid_note,
                limits_version=job.limits_version,
            )
        )
        return True
