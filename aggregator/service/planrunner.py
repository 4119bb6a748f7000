"""The slow loop off the fast path: plan jobs, the engine that solves them, and runners.

The service builds a :class:`PlanJob` (the :class:`~aggregator.planning.request.PlanRequest`,
the fleet slots its rows belong to, and the limits and fleet versions it was built from)
and hands it to a :class:`PlanRunner`; it later takes the :class:`PlanResult` back with
:meth:`PlanRunner.poll`, which never blocks. Two runners:

* :class:`InlinePlanRunner` solves at :meth:`~InlinePlanRunner.submit` on the caller's
  thread: deterministic, for the closed-loop simulation and unit tests;
* :class:`ProcessPlanRunner` solves in one worker process (``concurrent.futures`` with a
  forkserver or spawn context: cvxpy canonicalisation holds the GIL, so a thread would
  stall the fast loop). The worker builds its :class:`PlanEngine` — planner and grid model —
  once, from a picklable factory (:class:`EngineFactory`), and keeps its warm state (the
  last plan as the grid loop's guess, the last linearisation) between jobs.

Invariants: at most one job is solved at a time and at most one waits; a newer job
supersedes the waiting one (never the running one: its result still tells the service
something, and the service decides whether to use it). A job that raises in the worker
comes back as a result with ``error`` set and no plan; a dead worker is replaced.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from aggregator.pebc.sessions import check_plan_against_pebc
from aggregator.planning.fallback import proportional_plan
from aggregator.planning.gridloop import (
    GridModel,
    grid_site_kw,
    successive_plan,
)
from aggregator.planning.optimizer import Planner
from aggregator.planning.request import Plan, PlanRequest, SiteLinearConstraints
from aggregator.service.config import ServiceConfig
from aggregator.service.jobs import PlanJob, PlanResult

__all__ = [
    "EngineFactory",
    "InlinePlanRunner",
    "PlanEngine",
    "PlanJob",
    "PlanResult",
    "PlanRunner",
    "ProcessPlanRunner",
]


class PlanEngine:
    """Planner plus optional grid model, and the warm state carried between plans."""

    def __init__(
        self,
        planner: Planner,
        grid: GridModel | None = None,
        *,
        grid_max_iterations: int = 3,
        grid_margin_pct: float = 2.0,
        grid_steps: int | None = None,
    ) -> None:
        self.planner = planner
        self.grid = grid
        self.grid_max_iterations = grid_max_iterations
        self.grid_margin_pct = grid_margin_pct
        self.grid_steps = grid_steps
        self._cache: tuple[datetime, SiteLinearConstraints | None] | None = None
        self._last: tuple[Plan, PlanRequest] | None = None

    @classmethod
    def from_config(cls, config: ServiceConfig, grid: GridModel | None = None) -> PlanEngine:
        return cls(
            Planner(config.solver, time_limit_s=config.plan_time_limit_s),
            grid,
            grid_max_iterations=config.grid_max_iterations,
            grid_margin_pct=config.grid_margin_pct,
            grid_steps=max(1, math.ceil(config.grid_horizon_s / config.plan_step_s)),
        )

    def solve(self, job: PlanJob) -> PlanResult:
        """Solve ``job``; a plan that leaves the sessions' PEBC envelopes or energy
        constraints is replaced by the proportional fallback (checked too) or, if that
        fails as well, comes back without a plan."""
        res = self._solve(job)
        env = job.envelopes
        if env is None or res.plan is None:
            return res
        issues = check_plan_against_pebc(res.plan, job.request, env)
        if not issues:
            return res
        why = f"PEBC check: {issues[0].code} {issues[0]}"[:300]
        fallback = proportional_plan(job.request, why)
        if check_plan_against_pebc(fallback, job.request, env):
            return PlanResult(job=job, plan=None, error=why, pebc_rejected=why)
        return PlanResult(job=job, plan=fallback, pebc_rejected=why)

    def _solve(self, job: PlanJob) -> PlanResult:
        req = job.request
        mins = job.min_charge_kw

        def plan(r: PlanRequest) -> Plan:  # semi-continuous when the job says so
            return self.planner.plan(r, min_charge_kw=mins)

        if self.grid is None:
            return PlanResult(job=job, plan=plan(req))
        cached = None
        if self._cache is not None and self._cache[0] == req.start:
            cached = self._cache[1]  # same step: the last linearisation still fits
        guess = None
        if self._last is not None and self._last[0].start == req.start:
            guess = grid_site_kw(*self._last)  # linearise where the grid loop checks
        res = successive_plan(
            req,
            plan,
            self.grid,
            guess_kw=guess,
            max_iterations=self.grid_max_iterations,
            margin_pct=self.grid_margin_pct,
            cached=cached,
            grid_steps=self.grid_steps,
        )
        self._cache = (req.start, res.constraints)
        self._last = (res.plan, req)
        verified = None
        if res.check is not None and res.check.ok:
            verified = grid_site_kw(res.plan, req)  # what the AC check passed
        return PlanResult(
            job=job,
            plan=res.plan,
            grid_used=True,
            grid_check=res.check,
            grid_note=res.note,
            grid_iterations=res.iterations,
            grid_repair=getattr(res, "repair", None),
            verified_site_kw=verified,
        )


@dataclass(frozen=True)
class EngineFactory:
    """Builds a :class:`PlanEngine` in the worker (picklable: ``grid`` must be a picklable
    callable, e.g. a module-level function or a ``functools.partial``)."""

    config: ServiceConfig
    grid: Callable[[], GridModel] | None = None

    def __call__(self) -> PlanEngine:
        return PlanEngine.from_config(self.config, self.grid() if self.grid else None)


@runtime_checkable
class PlanRunner(Protocol):
    def submit(self, job: PlanJob) -> None:
        """Queue ``job`` (it supersedes a job still waiting); never waits for a solve."""
        ...

    def poll(self) -> PlanResult | None:
        """A finished result, or ``None``; never blocks."""
        ...

    def close(self) -> None: ...


class InlinePlanRunner:
    """Solves at submit, on the caller's thread (simulation, unit tests)."""

    def __init__(self, engine: PlanEngine) -> None:
        self.engine = engine
        self._done: PlanResult | None = None

    def submit(self, job: PlanJob) -> None:
        self._done = self.engine.solve(job)

    def poll(self) -> PlanResult | None:
        done, self._done = self._done, None
        return done

    def close(self) -> None:
        self._done = None


_ENGINE: PlanEngine | None = None  # the worker process's engine


def _init_worker(factory: Callable[[], PlanEngine]) -> None:
    global _ENGINE
    _ENGINE = factory()


def _solve_in_worker(job: PlanJob) -> PlanResult:
    assert _ENGINE is not None, "worker not initialised"
    return _ENGINE.solve(job)


def _context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


class ProcessPlanRunner:
    """Solves in one worker process; the caller's thread never waits for a plan."""

    def __init__(self, factory: Callable[[], PlanEngine]) -> None:
        self._factory = factory
        self._pool = self._start()
        self._running: tuple[PlanJob, Future[PlanResult]] | None = None
        self._waiting: PlanJob | None = None
        self.superseded = 0  # waiting jobs replaced by newer ones

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=1,
            mp_context=_context(),
            initializer=_init_worker,
            initargs=(self._factory,),
        )

    @property
    def busy(self) -> bool:
        return self._running is not None or self._waiting is not None

    def submit(self, job: PlanJob) -> None:
        if self._running is None:
            self._running = (job, self._pool.submit(_solve_in_worker, job))
        else:
            if self._waiting is not None:
                self.superseded += 1
            self._waiting = job

    def poll(self) -> PlanResult | None:
        if self._running is None:
            return None
        job, fut = self._running
        if not fut.done():
            return None
        self._running = None
        try:
            result = fut.result()
        except BrokenProcessPool as exc:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._start()
            result = PlanResult(job=job, plan=None, error=f"worker died: {exc}"[:300])
        except Exception as exc:  # a planner bug must not stop the service
            result = PlanResult(job=job, plan=None, error=f"{type(exc).__name__}: {exc}"[:300])
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            self.submit(waiting)
        return result

    def close(self) -> None:
        """Stop at once: a plan being solved is abandoned (the worker is terminated, so
        neither this call nor the interpreter's exit waits for a solver)."""
        self._waiting = None
        self._running = None
        workers = list(getattr(self._pool, "_processes", {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for proc in workers:
            if proc.is_alive():
                proc.terminate()
        for proc in workers:
            proc.join(timeout=5.0)
