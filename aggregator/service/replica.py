"""The gridflex service: fleet state, DSO limits, slow loop and fast loop on injected parts.

:class:`Service` owns a :class:`~aggregator.fleet.FleetState`, a
:class:`~aggregator.limits.LimitBook`, a :class:`~aggregator.planning.optimizer.Planner` and a
:class:`~aggregator.dispatch.Dispatcher`. It is driven from outside — by a bus adapter
(in-process or Kafka) calling :meth:`Service.handle` per record and :meth:`Service.tick`
regularly — and it emits setpoint batches to the injected
:class:`~aggregator.interfaces.SetpointSink`. The clock is injected too; the service never
reads the wall clock for its decisions.

Loops:

* slow: :meth:`tick` re-plans at every plan step boundary, when a DSO limit arrives or is
  cancelled (at once), and when sessions come and go (at most every
  ``min_replan_interval_s``);
* fast: :meth:`on_frequency` turns a frequency sample (FCR) or an aFRR request into a
  fleet deviation, dispatches, and publishes one batch per CSMS.

Sequence numbers are per CSMS, strictly increasing, and never below the batch's issue
time in epoch milliseconds, so a restarted replica (or the one that takes a feeder over)
is not mistaken for a replay. Every batch carries ``valid_until`` and each EVSE's
failsafe limit: the configured
failsafe power (default 4.2 kW), lowered where needed so that all EVSEs of a site, a
feeder or the fleet falling back together still respect the tightest cap known for the
failsafe duration.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from aggregator.dispatch import Dispatcher, DispatchFrame, fcr_activation
from aggregator.errors import InvalidInput, Issue
from aggregator.fleet import ApplyOutcome, ApplyResult, FleetState
from aggregator.interfaces import DEFAULT_TOPICS, Clock, Record, SetpointSink, Topics
from aggregator.limits import LimitBook
from aggregator.messages import (
    AfrrRequest,
    DsoLimitCancel,
    DsoLimitMessage,
    FrequencySample,
    FrequencySignal,
    GridSignal,
    SetpointBatch,
    Telemetry,
    decode_frequency,
    decode_grid_signal,
    decode_telemetry,
)
from aggregator.planning.gridloop import GridCheck, GridModel, plan_site_power_kw, successive_plan
from aggregator.planning.optimizer import Planner
from aggregator.planning.request import (
    Plan,
    PlanRequest,
    PlanWeights,
    SiteLinearConstraints,
    session_windows,
)
from aggregator.topology import Topology

__all__ = ["HISTORY", "DispatchOutcome", "PriceSeries", "Service", "ServiceConfig"]

HISTORY = 100_000  # plan and dispatch timings kept for statistics (a deque each)


@dataclass(frozen=True)
class ServiceConfig:
    """Behaviour of one service replica (seconds, kW)."""

    plan_step_s: float = 900.0
    horizon_s: float = 86_400.0
    min_replan_interval_s: float = 300.0
    setpoint_validity_s: float = 120.0
    heartbeat_interval_s: float = 30.0  # a batch per CSMS at least this often
    failsafe_kw: float = 4.2
    failsafe_duration_s: float = 7_200.0
    reserve_kw: float = 0.0
    solver: str = "HIGHS"
    plan_time_limit_s: float = 30.0
    session_timeout_s: float = 7_200.0
    grid_margin_pct: float = 2.0
    grid_max_iterations: int = 3
    grid_horizon_s: float = 14_400.0  # plan steps linearised and AC-checked in each plan
    nominal_hz: float = 50.0
    deadband_hz: float = 0.010
    full_activation_hz: float = 0.200
    weights: PlanWeights = field(default_factory=PlanWeights)

    def validate(self) -> list[Issue]:
        issues: list[Issue] = []
        if not self.plan_step_s > 0:
            issues.append(Issue("plan_step_s", "must be > 0"))
        if not self.horizon_s >= self.plan_step_s:
            issues.append(Issue("horizon_s", "must be at least one plan step"))
        if not 7_200.0 <= self.failsafe_duration_s <= 86_400.0:
            issues.append(Issue("failsafe_duration_s", "must be between 2 h and 24 h"))
        if not self.failsafe_kw >= 0:
            issues.append(Issue("failsafe_kw", "must be ≥ 0"))
        if not self.setpoint_validity_s > 0:
            issues.append(Issue("setpoint_validity_s", "must be > 0"))
        if not 0 < self.heartbeat_interval_s < self.setpoint_validity_s:
            issues.append(
                Issue("heartbeat_interval_s", "must be > 0 and below setpoint_validity_s")
            )
        if not self.reserve_kw >= 0:
            issues.append(Issue("reserve_kw", "must be ≥ 0"))
        if not 0 <= self.deadband_hz < self.full_activation_hz:
            issues.append(Issue("deadband_hz", "need 0 ≤ deadband < full activation"))
        return issues


@dataclass(frozen=True)
class PriceSeries:
    """Step-hold price series: ``eur_per_mwh[i]`` holds from ``start_s[i]`` (POSIX s)."""

    start_s: NDArray[np.float64]
    eur_per_mwh: NDArray[np.float64]

    def at(self, times_s: NDArray[np.float64]) -> NDArray[np.float64]:
        i = np.clip(np.searchsorted(self.start_s, times_s, side="right") - 1, 0, None)
        return self.eur_per_mwh[i]


@dataclass(frozen=True)
class DispatchOutcome:
    """What one fast-loop run did: setpoints per slot and the deviation asked for."""

    setpoints_kw: NDArray[np.float64]
    baseline_kw: NDArray[np.float64]
    deviation_kw: float
    batches: int
    elapsed_s: float


class Service:
    """One replica of gridflex on injected clock and setpoint sink."""

    def __init__(
        self,
        topology: Topology,
        config: ServiceConfig,
        *,
        clock: Clock,
        sink: SetpointSink,
        planner: Planner | None = None,
        topics: Topics = DEFAULT_TOPICS,
        grid: GridModel | None = None,
        events: Callable[[str, dict[str, object], datetime], None] | None = None,
    ) -> None:
        issues = topology.validate() + config.validate()
        if issues:
            raise InvalidInput(issues)
        self.topology = topology
        self.config = config
        self.clock = clock
        self.sink = sink
        self.topics = topics
        self.fleet = FleetState(topology, session_timeout_s=config.session_timeout_s)
        self.limits = LimitBook(topology)
        self.planner = planner or Planner(config.solver, time_limit_s=config.plan_time_limit_s)
        self.dispatcher = Dispatcher()
        self.grid = grid
        self.events = events  # limits received/cancelled and fallbacks (the audit log)
        self._last_dispatch: datetime | None = None
        self._last_deviation_kw = 0.0
        # bounded history: a replica runs for months (the newest values win)
        self.last_grid_check: GridCheck | None = None
        self.grid_notes: deque[str] = deque(maxlen=1_000)
        self._grid_cache: tuple[datetime, SiteLinearConstraints | None] | None = None
        self.prices: PriceSeries | None = None
        self.counters: Counter[str] = Counter()
        # EVSEs whose state changed since a bus adapter last wrote them out (state topic)
        self.changed_evses: set[str] = set()
        self.plan: Plan | None = None
        self.plan_s: deque[float] = deque(maxlen=HISTORY)  # build + solve of solved plans
        self.dispatch_s: deque[float] = deque(maxlen=HISTORY)  # fast-loop runs
        self._plan_slots: NDArray[np.intp] = np.zeros(0, dtype=np.intp)
        self._plan_req: PlanRequest | None = None
        self._planned_at: datetime | None = None
        self._planned_fleet_version = -1
        self._planned_limits_version = -1
        self._frame: DispatchFrame | None = None
        self._frame_key: tuple[object, ...] | None = None
        self._baseline: NDArray[np.float64] = np.zeros(0)
        self._failsafe: NDArray[np.float64] = np.zeros(0)
        self._csms_slots: dict[str, tuple[NDArray[np.intp], list[str]]] = {}
        self._csms_key: tuple[int, int] | None = None
        self._seq: Counter[str] = Counter()
        self._telemetry_since_frame = False
        self._frame_until: datetime | None = None

    # ------------------------------------------------------------------ input

    def handle(self, record: Record) -> str | None:
        """Apply one raw record; returns a rejection reason, or ``None`` when accepted."""
        t = self.topics
        try:
            if record.topic == t.telemetry:
                res = self.on_telemetry(decode_telemetry(record.value))
                return res.reason if res.outcome is ApplyOutcome.REJECTED else None
            if record.topic == t.grid_signals:
                return self.on_grid_signal(decode_grid_signal(record.value))
            if record.topic == t.frequency:
                self.on_frequency(decode_frequency(record.value))
                return None
        except InvalidInput as exc:
            self.counters[f"rejected.{record.topic}.invalid"] += 1
            return "invalid: " + "; ".join(str(i) for i in exc.issues)[:500]
        self.counters["rejected.unknown_topic"] += 1
        return f"unknown topic {record.topic!r}"

    def on_telemetry(self, msg: Telemetry) -> ApplyResult:
        res = self.fleet.apply(msg)
        self.counters[f"telemetry.{res.outcome.value}"] += 1
        if res.outcome is ApplyOutcome.APPLIED:
            self._telemetry_since_frame = True
            self.changed_evses.add(msg.evse_id)
        return res

    def on_grid_signal(self, msg: GridSignal) -> str | None:
        """Add or cancel a DSO limit and re-plan at once; returns a rejection reason."""
        if isinstance(msg, DsoLimitCancel):
            found = self.limits.cancel(msg.event_id)
            self.counters["limits.cancelled" if found else "limits.cancel_unknown"] += 1
            self._event(
                "limit.cancelled", {"event_id": msg.event_id, "found": found, "source": msg.source}
            )
        else:
            assert isinstance(msg, DsoLimitMessage)
            lim = msg.to_domain()
            issues = lim.validate(self.topology)
            if issues:
                self.counters["rejected.grid_signal"] += 1
                return "; ".join(str(i) for i in issues)
            self.limits.add(lim)
            self.counters["limits.received"] += 1
            self._event(
                "limit.received",
                {
                    "event_id": lim.event_id,
                    "target_type": lim.target_type.value,
                    "target_id": lim.target_id,
                    "start": lim.start.isoformat(),
                    "end": lim.end.isoformat(),
                    "limit_kw": lim.limit_kw,
                    "source": lim.source,
                },
            )
        self.tick(force_replan=True)
        return None

    def on_frequency(self, msg: FrequencySignal) -> DispatchOutcome:
        """Fast loop: one frequency sample or aFRR request → setpoint batches."""
        c = self.config
        if isinstance(msg, FrequencySample):
            dev = c.reserve_kw * fcr_activation(
                msg.hz,
                nominal_hz=c.nominal_hz,
                deadband_hz=c.deadband_hz,
                full_hz=c.full_activation_hz,
            )
        else:
            assert isinstance(msg, AfrrRequest)
            dev = float(np.clip(msg.setpoint_kw, -c.reserve_kw, c.reserve_kw))
        return self.dispatch(dev, source_ts=msg.ts)

    # ------------------------------------------------------------------ loops

    def tick(self, *, force_replan: bool = False) -> None:
        """Expire what is stale, re-plan when due, refresh the dispatch frame when needed."""
        now = self.clock.now()
        if self.fleet.expire(now):
            self.counters["sessions.expired"] += 1
        self.limits.expire(now)
        if force_replan or self._replan_due(now):
            self.replan()
        self._refresh_frame(now)
        # heartbeat: every CSMS hears from us well before its lease (valid_until) runs out,
        # also when no frequency signal drives the fast loop
        c = self.config
        if self._csms_slots and (
            self._last_dispatch is None
            or (now - self._last_dispatch).total_seconds() >= c.heartbeat_interval_s
        ):
            self.dispatch(self._last_deviation_kw)

    def _event(self, kind: str, payload: dict[str, object]) -> None:
        if self.events is not None:
            self.events(kind, payload, self.clock.now())

    def _replan_due(self, now: datetime) -> bool:
        if self._planned_at is None or self.plan is None:
            return True
        if self.limits.version != self._planned_limits_version:
            return True
        step = self.config.plan_step_s
        if math.floor(now.timestamp() / step) != math.floor(self._planned_at.timestamp() / step):
            return True
        changed = self.fleet.version != self._planned_fleet_version
        waited = (now - self._planned_at).total_seconds() >= self.config.min_replan_interval_s
        return changed and waited

    def plan_request(self, now: datetime) -> tuple[PlanRequest, NDArray[np.intp]]:
        """The planning problem for the sessions active at ``now``, and their slots."""
        c = self.config
        f = self.fleet
        step = c.plan_step_s
        now_s = now.timestamp()
        start_s = math.floor(now_s / step) * step
        start = datetime.fromtimestamp(start_s, tz=now.tzinfo)
        steps = max(1, round(c.horizon_s / step))
        slots = f.active_slots()
        slots = slots[f.departure_s[slots] > now_s]
        first, last, first_frac, last_frac = session_windows(
            start_s, step, steps, np.full(slots.size, now_s), f.departure_s[slots]
        )
        energy = f.energy_kwh[slots]
        caps = self.limits.caps_for_steps(start, step, steps)
        prices = None
        if self.prices is not None:
            prices = self.prices.at((start_s + step * np.arange(steps)).astype(np.float64))
        req = PlanRequest(
            start=start,
            step_s=step,
            steps=steps,
            session_site=f.site[slots].copy(),
            first_step=first,
            last_step=last,
            first_frac=first_frac,
            last_frac=last_frac,
            max_power_kw=f.max_power_kw[slots].copy(),
            min_power_kw=np.minimum(f.min_power_kw[slots], 0.0),
            energy_needed_kwh=np.maximum(f.energy_requested_kwh[slots] - energy, 0.0),
            discharge_budget_kwh=np.maximum(energy, 0.0),
            site_feeder=self.topology.site_feeder,
            caps=caps,
            reserve_kw=np.full(steps, c.reserve_kw),
            price_eur_per_mwh=prices,
            weights=c.weights,
        )
        return req, slots

    def replan(self) -> Plan:
        now = self.clock.now()
        req, slots = self.plan_request(now)
        plan = self._plan_on_grid(req) if self.grid is not None else self.planner.plan(req)
        self.plan, self._plan_slots, self._plan_req = plan, slots, req
        if plan.solver != "none":  # an empty plan solved nothing
            self.plan_s.append(plan.build_s + plan.solve_s)
            self.counters["plans.solved"] += 1
        self._planned_at = now
        self._planned_fleet_version = self.fleet.version
        self._planned_limits_version = self.limits.version
        self.counters["plans"] += 1
        if plan.fallback is not None:
            self.counters["plans.fallback"] += 1
            self._event(
                "fallback",
                {
                    "reason": plan.fallback,
                    "sessions": int(slots.size),
                    "plan_start": plan.start.isoformat(),
                },
            )
        self._frame_key = None
        return plan

    def feeder_headroom_kw(self) -> dict[str, float]:
        """Per feeder, its cap now minus the limit-safe base the fast loop dispatches around."""
        frame = self._frame
        if frame is None:
            return {}
            # the limit-safe baseline (the dispatch without activation), per feeder
        base = np.bincount(
            frame.slot_feeder, weights=self._baseline, minlength=self.topology.n_feeders
        )
        return {
            f.feeder_id: float(frame.feeder_cap_kw[i] - base[i])
            for i, f in enumerate(self.topology.feeders)
        }

    @property
    def last_request(self) -> PlanRequest | None:
        """The request the current plan answers (sessions, caps, steps)."""
        return self._plan_req

    def _plan_on_grid(self, req: PlanRequest) -> Plan:
        """Plan with linearised grid limits, checked by AC power flow (successive)."""
        assert self.grid is not None
        c = self.config
        cached = None
        if self._grid_cache is not None and self._grid_cache[0] == req.start:
            cached = self._grid_cache[1]  # same step: the last linearisation still fits
        guess = None
        if self.plan is not None and self.plan.start == req.start and self._plan_req is not None:
            guess = plan_site_power_kw(self.plan, self._plan_req)
        res = successive_plan(
            req,
            self.planner.plan,
            self.grid,
            guess_kw=guess,
            max_iterations=c.grid_max_iterations,
            margin_pct=c.grid_margin_pct,
            cached=cached,
            grid_steps=max(1, math.ceil(c.grid_horizon_s / c.plan_step_s)),
        )
        self._grid_cache = (req.start, res.constraints)
        if res.check is not None:
            self.last_grid_check = res.check
        if res.note is not None:
            self.grid_notes.append(res.note)
            self.counters["plans.grid_note"] += 1
        self.counters["plans.grid_iterations"] += res.iterations
        return res.plan

    def _refresh_frame(self, now: datetime) -> None:
        plan = self.plan
        step_idx = plan.step_at(now) if plan is not None else None
        caps = self.limits.caps_at(now)
        key = (
            id(plan),
            step_idx,
            self.limits.version,
            self.fleet.version,
            caps.site_kw.tobytes(),
            caps.feeder_kw.tobytes(),
            caps.fleet_kw.tobytes(),
        )
        if (
            key == self._frame_key
            and not self._telemetry_since_frame
            and self._frame_until is not None
            and now < self._frame_until
        ):
            return
        f = self.fleet
        n = f.n_slots
        step = self.config.plan_step_s
        until_s = (math.floor(now.timestamp() / step) + 1) * step
        self._frame_until = datetime.fromtimestamp(until_s, tz=now.tzinfo)
        lo, hi = f.envelope(now, max(until_s - now.timestamp(), 1.0))
        # a session not in a plan yet waits at 0 kW for the next one (at most
        # min_replan_interval_s): the fast loop knows site, feeder and DSO caps but not the
        # feeder's line and voltage limits, which only a plan checks
        base = np.zeros_like(hi)
        ru = rd = None
        if plan is not None and step_idx is not None and self._plan_slots.size:
            slots = self._plan_slots
            base[slots] = plan.power_kw[:, step_idx]
            ru, rd = plan.reserve_up_kw[:, step_idx], plan.reserve_down_kw[:, step_idx]
        self._frame = self.dispatcher.prepare(
            base_kw=base,
            lo_kw=lo,
            hi_kw=hi,
            slot_site=f.site[:n],
            site_feeder=self.topology.site_feeder,
            site_cap_kw=caps.site_kw,
            site_export_kw=caps.site_export_kw,
            feeder_cap_kw=caps.feeder_kw,
            fleet_cap_kw=float(caps.fleet_kw),
            site_reserve_up_kw=ru,
            site_reserve_down_kw=rd,
        )
        self._baseline = self.dispatcher.dispatch(0.0, self._frame)
        self._failsafe = self._failsafe_limits(now, n)
        self._csms_slots = self._group_by_csms(n)
        self._frame_key = key
        self._telemetry_since_frame = False

    def _failsafe_limits(self, now: datetime, n: int) -> NDArray[np.float64]:
        """Per-slot failsafe import cap: all EVSEs at it together respect every cap."""
        c = self.config
        topo = self.topology
        steps = max(1, math.ceil(c.failsafe_duration_s / c.plan_step_s) + 1)
        caps = self.limits.caps_for_steps(now, c.plan_step_s, steps)
        site = self.fleet.site[:n]
        feeder = topo.site_feeder[site] if n else site
        per_site = np.bincount(site, minlength=topo.n_sites).clip(1)
        per_feeder = np.bincount(feeder, minlength=topo.n_feeders).clip(1)
        fs: NDArray[np.float64] = np.full(n, c.failsafe_kw, dtype=np.float64)
        fs = np.minimum(fs, (caps.site_kw.min(axis=1) / per_site)[site])
        fs = np.minimum(fs, (caps.feeder_kw.min(axis=1) / per_feeder)[feeder])
        fs = np.minimum(fs, float(caps.fleet_kw.min()) / max(n, 1))
        return np.maximum(fs, 0.0)

    def _group_by_csms(self, n: int) -> dict[str, tuple[NDArray[np.intp], list[str]]]:
        # slots change CSMS only when a session starts or is restored (fleet.version moves):
        # meter values, which refresh the frame every cycle, reuse the grouping
        key = (n, self.fleet.version)
        if key == self._csms_key:
            return self._csms_slots
        self._csms_key = key
        groups: dict[str, list[int]] = {}
        for i, cs in enumerate(self.fleet.csms[:n]):  # per frame refresh, not per signal
            groups.setdefault(cs, []).append(i)
        ids = self.fleet.evse_ids
        return {
            cs: (np.array(ix, dtype=np.intp), [ids[i] for i in ix]) for cs, ix in groups.items()
        }

    def dispatch(
        self, deviation_kw: float, *, source_ts: datetime | None = None
    ) -> DispatchOutcome:
        """Dispatch a fleet deviation and publish one setpoint batch per CSMS."""
        t0 = time.perf_counter()
        now = self.clock.now()
        if self._frame is None or (self._frame_until is not None and now >= self._frame_until):
            self.tick()
        frame = self._frame
        assert frame is not None
        p = self.dispatcher.dispatch(deviation_kw, frame)
        valid_until = now + timedelta(seconds=self.config.setpoint_validity_s)
        for cs, (ix, evse_ids) in self._csms_slots.items():
            # epoch milliseconds, strictly increasing: a restarted service or the replica
            # that takes over a feeder continues above every sequence number sent before
            self._seq[cs] = max(self._seq[cs] + 1, int(now.timestamp() * 1000))
            # trusted, internally built data: construct without re-validating 10k floats
            batch = SetpointBatch.model_construct(
                csms_id=cs,
                seq=self._seq[cs],
                issued_at=now,
                valid_until=valid_until,
                source_ts=source_ts,
                evse_ids=evse_ids,
                power_kw=p[ix].tolist(),
                failsafe_kw=self._failsafe[ix].tolist(),
            )
            self.sink.publish(batch)
        elapsed = time.perf_counter() - t0
        self.dispatch_s.append(elapsed)
        self.counters["dispatches"] += 1
        self._last_dispatch = now
        self._last_deviation_kw = deviation_kw
        return DispatchOutcome(p, self._baseline, deviation_kw, len(self._csms_slots), elapsed)
