"""One gridflex replica: typed calls in, setpoint batches and typed events out.

:class:`Service` owns a :class:`~aggregator.fleet.FleetState`, a
:class:`~aggregator.limits.LimitBook`, a :class:`~aggregator.service.planrunner.PlanRunner`
(the slow loop) and a :class:`~aggregator.dispatch.Dispatcher` (the fast loop). A bus
adapter calls :meth:`Service.handle` per record (or the typed ``on_*`` methods) and
:meth:`Service.tick` about every second; batches go to the injected
:class:`~aggregator.interfaces.SetpointSink`, events to the injected
:class:`~aggregator.service.events.EventSink`. The clock is injected too.

The two loops never wait for each other:

* slow — :meth:`tick` takes finished plans from the runner and swaps a new
  :class:`~aggregator.service.frame.Frame` in; it submits a re-plan when one is due (plan
  step boundary, limit change, session churn at most every ``min_replan_interval_s``) and
  never waits for it. A plan built before a newer limit change is discarded
  (:class:`~aggregator.service.events.PlanDiscarded`) and the newer job's plan is used;
* fast — :meth:`on_frequency` asks the injected ``activation`` (a market rule) for the
  fleet deviation and :meth:`dispatch` spreads it over the last frame. Neither calls
  :meth:`tick` nor the planner: when a known cap change has passed, the frame is rebuilt
  from the limit book of now (numpy, no solver).

Invariants: a DSO limit or cancellation takes effect in the frame at once and batches go
out at once; a batch's lease never outlives a known cap change it does not respect, and
:meth:`tick` publishes as soon as a cap change has passed (see
:mod:`aggregator.service.batches`); sequence numbers are per CSMS, strictly increasing and
never below the issue time in epoch milliseconds (a restarted replica, or one that takes a
feeder over, is not mistaken for a replay).
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from aggregator.dispatch import Activation, Dispatcher, NoActivation
from aggregator.errors import InvalidInput
from aggregator.fleet import ApplyOutcome, ApplyResult, FleetState
from aggregator.interfaces import DEFAULT_TOPICS, Clock, Record, SetpointSink, Topics
from aggregator.limits import LimitBook
from aggregator.messages import (
    DsoLimitCancel,
    DsoLimitMessage,
    FrequencySignal,
    GridSignal,
    SessionEnded,
    SessionStarted,
    SetpointBatch,
    Telemetry,
    decode_frequency,
    decode_grid_signal,
    decode_telemetry,
)
from aggregator.planning.gridloop import GridCheck, GridModel
from aggregator.planning.optimizer import Planner
from aggregator.planning.request import Plan, PlanRequest
from aggregator.service.batches import CsmsGroup, Leases, lease_end
from aggregator.service.config import HISTORY, PriceSeries, ServiceConfig
from aggregator.service.events import (
    BatchesPublished,
    EventSink,
    LimitApplied,
    LimitCancelled,
    LimitRejected,
    NullSink,
    PlanDiscarded,
    PlanMade,
    ServiceEvent,
    SessionChanged,
)
from aggregator.service.frame import Frame, build_frame, changed_sessions
from aggregator.service.planrunner import (
    InlinePlanRunner,
    PlanEngine,
    PlanJob,
    PlanResult,
    PlanRunner,
)
from aggregator.service.request import plan_request
from aggregator.topology import Topology

__all__ = [
    "HISTORY",
    "DispatchOutcome",
    "PriceSeries",
    "Service",
    "ServiceConfig",
    "ServiceStatus",
]


@dataclass(frozen=True)
class DispatchOutcome:
    """What one fast-loop run did: setpoints per slot and the deviation asked for."""

    setpoints_kw: NDArray[np.float64]
    baseline_kw: NDArray[np.float64]
    deviation_kw: float
    batches: int
    elapsed_s: float


@dataclass(frozen=True, kw_only=True)
class ServiceStatus:
    """A read-only snapshot for health and metrics."""

    at: datetime
    sessions: int
    plan_age_s: float | None
    planning: bool  # a job was submitted and its result is not in yet
    headroom_kw: dict[str, float]  # per feeder: cap now minus the limit-safe base


class Service:
    """One replica of gridflex on an injected clock, setpoint sink, event sink and runner."""

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
        events: EventSink | None = None,
        activation: Activation | None = None,
        runner: PlanRunner | None = None,
    ) -> None:
        issues = topology.validate() + config.validate()
        if issues:
            raise InvalidInput(issues)
        self.topology = topology
        self.config = config
        self.clock = clock
        self.sink = sink
        self.topics = topics
        self.grid = grid
        self.events: EventSink = events if events is not None else NullSink()
        self.activation: Activation = activation if activation is not None else NoActivation()
        self.fleet = FleetState(topology, session_timeout_s=config.session_timeout_s)
        self.limits = LimitBook(topology)
        if runner is None:
            engine = PlanEngine.from_config(config, grid)
            if planner is not None:
                engine.planner = planner
            runner = InlinePlanRunner(engine)
        self.runner = runner
        self.dispatcher = Dispatcher()
        self.prices: PriceSeries | None = None
        self.counters: Counter[str] = Counter()
        # kept for adapters not yet on SessionChanged events (the state topic writer)
        self.changed_evses: set[str] = set()
        self.plan_s: deque[float] = deque(maxlen=HISTORY)  # build + solve of solved plans
        self.dispatch_s: deque[float] = deque(maxlen=HISTORY)  # fast-loop runs
        self.last_grid_check: GridCheck | None = None
        self.grid_notes: deque[str] = deque(maxlen=1_000)
        self._result: PlanResult | None = None  # the plan in use
        self._accepted_at: datetime | None = None
        self._job_id = 0
        self._submitted: tuple[int, int, int, datetime] | None = None  # lv, fv, step, at
        self._frame: Frame | None = None
        self._frame_key: tuple[object, ...] | None = None
        self._telemetry_since_frame = False
        self._touched: set[int] = set()  # slots whose session started/ended since the frame
        self._leases = Leases(config.failsafe_duration_s, config.failsafe_kw)
        self._seq: Counter[str] = Counter()
        self._last_dispatch: datetime | None = None
        self._last_deviation_kw = 0.0
        self._published_fleet_version = -1
        self._publish_due = False

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
            if isinstance(msg, SessionStarted | SessionEnded):
                slot = self.fleet.slot_of.get(msg.evse_id)
                if slot is not None:  # its frame row belongs to the session before
                    self._touched.add(slot)
            self._session_changed(msg.evse_id)
        return res

    def _session_changed(self, evse_id: str) -> None:
        f = self.fleet
        slot = f.slot_of.get(evse_id)
        csms = f.csms[slot] if slot is not None else ""
        self._emit(
            SessionChanged(
                at=self.clock.now(), evse_id=evse_id, csms_id=csms, state=f.session_state(evse_id)
            )
        )

    def on_grid_signal(self, msg: GridSignal) -> str | None:
        """Add or cancel a DSO limit: the frame's caps change and batches go out at once,
        a re-plan is asked for; returns a rejection reason."""
        now = self.clock.now()
        if isinstance(msg, DsoLimitCancel):
            found = self.limits.cancel(msg.event_id)
            self.counters["limits.cancelled" if found else "limits.cancel_unknown"] += 1
            self._emit(
                LimitCancelled(at=now, event_id=msg.event_id, found=found, source=msg.source)
            )
        else:
            assert isinstance(msg, DsoLimitMessage)
            lim = msg.to_domain()
            issues = lim.validate(self.topology)
            if issues:
                self.counters["rejected.grid_signal"] += 1
                reason = "; ".join(str(i) for i in issues)
                self._emit(LimitRejected(at=now, event_id=lim.event_id, reason=reason))
                return reason
            self.limits.add(lim)
            self.counters["limits.received"] += 1
            self._emit(
                LimitApplied(
                    at=now,
                    event_id=lim.event_id,
                    target_type=lim.target_type.value,
                    target_id=lim.target_id,
                    start=lim.start,
                    end=lim.end,
                    limit_kw=lim.limit_kw,
                    source=lim.source,
                )
            )
        self._publish_due = True
        self.tick()
        return None

    def on_frequency(self, msg: FrequencySignal) -> DispatchOutcome:
        """Fast loop: one frequency sample or aFRR request → setpoint batches."""
        dev = self.activation.deviation_kw(msg, self.config.reserve_kw)
        return self.dispatch(dev, source_ts=msg.ts)

    def seed_leases(
        self,
        csms_id: str,
        evse_ids: list[str],
        power_kw: list[float],
        valid_until: datetime,
        failsafe_kw: list[float] | None = None,
        seq: int | None = None,
    ) -> int:
        """Leases another replica issued (its last batch for ``csms_id``, read back after a
        takeover). Pass every batch whose failsafe period may still run
        (``valid_until + failsafe_duration_s > now``), lapsed ones too: an EVSE whose lease
        lapsed holds its failsafe value. The EVSEs are named in this CSMS's batches (0 kW
        and failsafe 0 when they have no session here) until their lease has expired and a
        batch has zeroed them, and what they may draw (the setpoint, or the failsafe value —
        ``failsafe_kw``, else the configured failsafe power) counts against the caps until a
        batch of ours replaced it. ``seq``, the batch's sequence number, keeps ours above
        it. Returns how many leases were taken over."""
        now = self.clock.now()
        if seq is not None:
            self._seq[csms_id] = max(self._seq[csms_id], seq)
        kept = self._leases.seed(
            self.fleet, csms_id, evse_ids, power_kw, valid_until, now, failsafe_kw
        )
        if kept:
            self._publish_due = True
        return kept

    # ------------------------------------------------------------------ slow loop

    def tick(self, *, force_replan: bool = False) -> None:
        """Expire what is stale, take finished plans, submit a re-plan when due (never
        wait), refresh the frame when something changed, publish when caps changed, a
        session came or went, or the heartbeat is due."""
        now = self.clock.now()
        for evse in self.fleet.expire(now):
            self.counters["sessions.expired"] += 1
            self.changed_evses.add(evse)
            self._session_changed(evse)
        self.limits.expire(now)
        self._take_results(now)
        if force_replan or self._replan_due(now):
            self.replan()
            self._take_results(now)
        old = self._frame
        if self._frame_stale(now):
            self._refresh_frame(now)
        new = self._frame
        if old is not None and new is not None and old is not new:
            caps_moved = not (
                np.array_equal(old.caps.site_kw, new.caps.site_kw)
                and np.array_equal(old.caps.feeder_kw, new.caps.feeder_kw)
                and float(old.caps.fleet_kw) == float(new.caps.fleet_kw)
            )
            if caps_moved:
                self._publish_due = True
        if self.fleet.version != self._published_fleet_version:
            self._publish_due = True  # a session came or went: its batch goes out now
        heartbeat = self._last_dispatch is None or (
            (now - self._last_dispatch).total_seconds() >= self.config.heartbeat_interval_s
        )
        if self._publish_due or heartbeat:
            self.dispatch(self._last_deviation_kw)

    def _take_results(self, now: datetime) -> None:
        while (res := self.runner.poll()) is not None:
            self._accept(res, now)

    def _accept(self, res: PlanResult, now: datetime) -> None:
        plan, job = res.plan, res.job
        start = job.request.start
        if plan is None:
            self.counters["plans.failed"] += 1
            self._emit(PlanDiscarded(at=now, plan_start=start, reason=res.error or "no plan"))
            return
        if job.limits_version != self.limits.version:
            # built before a newer limit change: never applied over it (a newer job is due)
            self.counters["plans.discarded"] += 1
            self._emit(
                PlanDiscarded(at=now, plan_start=start, reason="limits changed while planning")
            )
            return
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
        self._result, self._accepted_at = res, now
        self._frame_key = None
        self._emit(
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

    def _replan_due(self, now: datetime) -> bool:
        sub = self._submitted
        if sub is None:
            return True
        lv, fv, step, at = sub
        if self.limits.version != lv:
            return True
        if math.floor(now.timestamp() / self.config.plan_step_s) != step:
            return True
        waited = (now - at).total_seconds() >= self.config.min_replan_interval_s
        return self.fleet.version != fv and waited

    def plan_request(self, now: datetime) -> tuple[PlanRequest, NDArray[np.intp]]:
        """The planning problem for the sessions active at ``now``, and their slots."""
        return plan_request(
            now, fleet=self.fleet, limits=self.limits, config=self.config, prices=self.prices
        )

    def replan(self) -> None:
        """Submit a plan job for now (the runner solves it; :meth:`tick` takes it)."""
        now = self.clock.now()
        req, slots = self.plan_request(now)
        self._job_id += 1
        job = PlanJob(
            job_id=self._job_id,
            made_at=now,
            request=req,
            slots=slots,
            arrival_s=self.fleet.arrival_s[slots].copy(),
            limits_version=self.limits.version,
            fleet_version=self.fleet.version,
        )
        step = math.floor(now.timestamp() / self.config.plan_step_s)
        self._submitted = (self.limits.version, self.fleet.version, step, now)
        self.counters["plans.submitted"] += 1
        self.runner.submit(job)

    # ------------------------------------------------------------------ frame

    def _frame_stale(self, now: datetime) -> bool:
        fr = self._frame
        if fr is None or self._telemetry_since_frame:
            return True
        if fr.caps_until is not None and now >= fr.caps_until:
            return True
        if now >= fr.step_until:
            return True
        return self._key() != self._frame_key

    def _key(self) -> tuple[object, ...]:
        return (id(self._result), self.limits.version, self.fleet.version, self._leases.version)

    def _refresh_frame(self, now: datetime) -> Frame:
        site_kw, feeder_kw, fleet_kw = self._leases.pending_kw(
            self.fleet, self.topology, now.timestamp()
        )
        self._frame = build_frame(
            now=now,
            fleet=self.fleet,
            topology=self.topology,
            limits=self.limits,
            config=self.config,
            dispatcher=self.dispatcher,
            result=self._result,
            leased_site_kw=site_kw,
            leased_feeder_kw=feeder_kw,
            leased_fleet_kw=fleet_kw,
        )
        self._frame_key = self._key()
        self._telemetry_since_frame = False
        self._touched.clear()
        return self._frame

    # ------------------------------------------------------------------ fast loop

    def dispatch(
        self, deviation_kw: float, *, source_ts: datetime | None = None
    ) -> DispatchOutcome:
        """Dispatch a fleet deviation on the current frame and publish one batch per CSMS.

        Never plans and never waits: only when there is no frame yet, or a known cap change
        has passed since it was built, the frame is rebuilt from the limits of now.
        """
        t0 = time.perf_counter()
        now = self.clock.now()
        frame = self._frame
        if (
            frame is None
            or (frame.caps_until is not None and now >= frame.caps_until)
            or frame.dispatch.base_kw.shape[0] != self.fleet.n_slots
        ):
            frame = self._refresh_frame(now)
        p = self.dispatcher.dispatch(deviation_kw, frame.dispatch)
        fs = frame.failsafe_kw
        changed = changed_sessions(frame, self.fleet, self._touched)
        if changed is not None:  # a session came or went since the frame: 0 until refresh
            p[changed] = 0.0
            self.dispatcher.enforce(p, frame.dispatch)
            fs = np.where(changed, 0.0, fs)
        valid_until = lease_end(
            now, self.config.setpoint_validity_s, p, frame.dispatch, self.limits
        )
        now_s = now.timestamp()
        groups = self._leases.groups(self.fleet, now_s)
        floor_seq = int(now_s * 1000)
        publish: Callable[[SetpointBatch], object] = self.sink.publish
        delivered: dict[str, CsmsGroup] = {}
        for cs, g in groups.items():
            # epoch milliseconds, strictly increasing: a restarted service or the replica
            # that takes over a feeder continues above every sequence number sent before
            self._seq[cs] = max(self._seq[cs] + 1, floor_seq)
            power = p[g.slots].tolist()
            failsafe = fs[g.slots].tolist()
            evse_ids = g.evse_ids
            if g.ghost_ids:
                zeros = [0.0] * len(g.ghost_ids)
                evse_ids, power, failsafe = evse_ids + g.ghost_ids, power + zeros, failsafe + zeros
            # trusted, internally built data: construct without re-validating 10k floats
            batch = SetpointBatch.model_construct(
                csms_id=cs,
                seq=self._seq[cs],
                issued_at=now,
                valid_until=valid_until,
                source_ts=source_ts,
                evse_ids=evse_ids,
                power_kw=power,
                failsafe_kw=failsafe,
            )
            if publish(batch) is not False:  # a gate may say it dropped the batch
                delivered[cs] = g
        self._leases.published(self.fleet, delivered, valid_until, now_s)
        elapsed = time.perf_counter() - t0
        self.dispatch_s.append(elapsed)
        self.counters["dispatches"] += 1
        self._last_dispatch = now
        self._last_deviation_kw = deviation_kw
        self._published_fleet_version = self.fleet.version
        # again at the next tick: a batch the sink dropped, or sessions served at 0 kW
        # because they changed since the frame
        self._publish_due = len(delivered) < len(groups) or changed is not None
        self._emit(
            BatchesPublished(
                at=now,
                batches=len(groups),
                deviation_kw=deviation_kw,
                elapsed_s=elapsed,
                source_ts=source_ts,
            )
        )
        return DispatchOutcome(p, frame.baseline_kw, deviation_kw, len(groups), elapsed)

    # ------------------------------------------------------------------ views

    def _emit(self, event: ServiceEvent) -> None:
        self.events.emit(event)

    @property
    def plan(self) -> Plan | None:
        """The plan the fast loop dispatches around (immutable)."""
        return self._result.plan if self._result is not None else None

    @property
    def last_request(self) -> PlanRequest | None:
        """The request the current plan answers (sessions, caps, steps)."""
        return self._result.job.request if self._result is not None else None

    def feeder_headroom_kw(self) -> dict[str, float]:
        """Per feeder, its cap now minus the limit-safe base the fast loop dispatches around."""
        frame = self._frame
        if frame is None:
            return {}
        base = np.bincount(
            frame.dispatch.slot_feeder,
            weights=frame.baseline_kw,
            minlength=self.topology.n_feeders,
        )
        return {
            f.feeder_id: float(frame.dispatch.feeder_cap_kw[i] - base[i])
            for i, f in enumerate(self.topology.feeders)
        }

    def status(self) -> ServiceStatus:
        now = self.clock.now()
        n = self.fleet.n_slots
        sub = self._submitted
        age = None
        if self._accepted_at is not None and self._result is not None:
            age = (now - self._result.job.made_at).total_seconds()
        return ServiceStatus(
            at=now,
            sessions=int(self.fleet.active[:n].sum()),
            plan_age_s=age,
            planning=sub is not None
            and (self._result is None or self._result.job.job_id != self._job_id),
            headroom_kw=self.feeder_headroom_kw(),
        )

    def close(self) -> None:
        """Stop the plan runner (a worker process, when there is one)."""
        self.runner.close()
