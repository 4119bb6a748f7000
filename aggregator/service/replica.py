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

import time
from collections import Counter, deque
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from aggregator.closedloop import MeasuredLoop
from aggregator.dispatch import Activation, Dispatcher, NoActivation
from aggregator.errors import InvalidInput
from aggregator.fleet import ApplyOutcome, ApplyResult, FleetState, SessionState
from aggregator.interfaces import DEFAULT_TOPICS, Clock, Record, SetpointSink, Topics
from aggregator.limits import LimitBook
from aggregator.messages import (
    DsoLimitCancel,
    DsoLimitMessage,
    FrequencySample,
    FrequencySignal,
    GridSignal,
    SessionEnded,
    SessionStarted,
    Telemetry,
    decode_frequency,
    decode_grid_signal,
    decode_telemetry,
)
from aggregator.planning.gridloop import GridCheck, GridModel
from aggregator.planning.optimizer import Planner
from aggregator.planning.request import Plan, PlanRequest
from aggregator.service.batches import Leases, lease_end, publish_batches
from aggregator.service.config import HISTORY, PriceSeries, ServiceConfig
from aggregator.service.events import (
    BatchesPublished,
    EventSink,
    LimitApplied,
    LimitCancelled,
    LimitRejected,
    NullSink,
    ServiceEvent,
    ServiceStatus,
    SessionChanged,
)
from aggregator.service.frame import Frame, build_frame, changed_sessions
from aggregator.service.planrunner import (
    InlinePlanRunner,
    PlanEngine,
    PlanRunner,
)
from aggregator.service.plans import PlanDesk
from aggregator.service.poolrecord import PoolSampler
from aggregator.service.request import plan_request
from aggregator.service.views import DispatchOutcome, measured_power_kw
from aggregator.service.views import feeder_demand_kw as _demand
from aggregator.service.views import feeder_headroom_kw as _headroom
from aggregator.topology import Topology

__all__ = ["HISTORY", "DispatchOutcome", "PriceSeries", "Service", "ServiceConfig", "ServiceStatus"]


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
        # closed loop on meter values: unused allowance re-allocated, over-takers reported
        self.closed_loop = MeasuredLoop()
        self.over_takers: tuple[str, ...] = ()
        self.prices: PriceSeries | None = None
        self.counters: Counter[str] = Counter()
        self.events: EventSink = events if events is not None else NullSink()
        self.plans = PlanDesk(runner, config, self.counters, self._emit)
        self.plan_s = self.plans.plan_s  # build + solve of solved plans (bounded)
        self.grid_notes = self.plans.grid_notes
        self.grid_repairs = self.plans.grid_repairs
        self.dispatch_s: deque[float] = deque(maxlen=HISTORY)  # fast-loop runs
        self._frame: Frame | None = None
        self._frame_key: tuple[object, ...] | None = None
        self._telemetry_since_frame = False
        self._touched: set[int] = set()  # slots whose session started/ended since the frame
        self._leases = Leases(config.failsafe_duration_s, config.failsafe_kw)
        self._seq: Counter[str] = Counter()
        self._last_dispatch: datetime | None = None
        self._last_deviation_kw = 0.0
        self.pool = PoolSampler()  # the market's 1 s record (PoolSampled events)
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
                at=self.clock.now(), evse_id=evse_id, csms_id=csms, row=f.session_row(evse_id)
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
        self.pool.asked(msg)  # what was asked, for the pool's 1 s record
        fcr = isinstance(msg, FrequencySample)  # FCR's part of the block, else aFRR's
        up_kw, down_kw = self.config.reserve.band(msg.ts.timestamp(), fcr=fcr)
        dev = self.activation.deviation_kw(msg, max(up_kw, down_kw))
        return self.dispatch(min(max(dev, -down_kw), up_kw), source_ts=msg.ts)

    def restore(self, state: SessionState) -> None:
        """Put a session back as the state topic holds it (after an assignment); raises
        :class:`~aggregator.errors.InvalidInput` for a state this replica cannot take."""
        self.fleet.restore(state)

    def measured_power_kw(self) -> dict[str, float]:
        """Measured power of the live sessions per site, feeder (by id) and ``"fleet"``."""
        return measured_power_kw(self.fleet, self.topology)

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
            self._session_changed(evse)
        self.limits.expire(now)
        self._take_results(now)
        if force_replan or self.plans.due(now, self.limits.version, self.fleet.version):
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
        if self.plans.take(now, self.limits.version):
            self._frame_key = None  # a new plan: the frame is rebuilt

    def plan_request(self, now: datetime) -> tuple[PlanRequest, NDArray[np.intp]]:
        """The planning problem for the sessions active at ``now``, and their slots."""
        return plan_request(
            now, fleet=self.fleet, limits=self.limits, config=self.config, prices=self.prices
        )

    def replan(self) -> None:
        """Submit a plan job for now (the runner solves it; :meth:`tick` takes it)."""
        now = self.clock.now()
        req, slots = self.plan_request(now)
        self.plans.submit(now, req, slots, self.fleet, self.limits.version)

    # ------------------------------------------------------------------ frame

    def _frame_stale(self, now: datetime) -> bool:
        fr = self._frame
        if fr is None or self._telemetry_since_frame:
            return True
        if fr.refresh_at is not None and now >= fr.refresh_at:
            return True  # a cap change is near: look ahead again
        if now >= fr.step_until:
            return True
        return self._key() != self._frame_key

    def _key(self) -> tuple[object, ...]:
        return (
            id(self.plans.result),
            self.limits.version,
            self.fleet.version,
            self._leases.version,
        )

    def _refresh_frame(self, now: datetime) -> Frame:
        site_kw, feeder_kw, fleet_kw = self._leases.pending_kw(
            self.fleet, self.topology, now.timestamp()
        )
        f, n = self.fleet, self.fleet.n_slots
        view = self.closed_loop.observe(
            measured_kw=f.power_kw[:n],
            meter_s=f.last_meter_s[:n],
            active=f.active[:n],
            min_kw=f.min_charge_kw[:n],
            slot_site=f.site[:n],
            n_sites=self.topology.n_sites,
        )
        takers = tuple(f.evse_ids[i] for i in view.over_takers)
        self.counters["over_takers.reported"] += len(set(takers) - set(self.over_takers))
        self.over_takers = takers
        self._frame = build_frame(
            now=now,
            fleet=self.fleet,
            topology=self.topology,
            limits=self.limits,
            config=self.config,
            dispatcher=self.dispatcher,
            result=self.plans.result,
            leased_site_kw=site_kw,
            leased_feeder_kw=feeder_kw,
            leased_fleet_kw=fleet_kw,
            measured=view,
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
        # a session came or went since the frame: 0 until refresh; the semi-continuous
        # rule's minimum on/off times run on the time of the batch
        changed = changed_sessions(frame, self.fleet, self._touched)
        p = self.dispatcher.dispatch(
            deviation_kw, frame.dispatch, now_s=now.timestamp(), zero=changed
        )
        self.closed_loop.sent(p)
        fs = frame.failsafe_kw
        if changed is not None:
            fs = np.where(changed, 0.0, fs)
        valid_until = lease_end(
            now, self.config.setpoint_validity_s, p, frame.dispatch, self.limits
        )
        now_s = now.timestamp()
        groups = self._leases.groups(self.fleet, now_s)
        delivered = publish_batches(
            self.sink,
            groups,
            p,
            fs,
            self._seq,
            now=now,
            valid_until=valid_until,
            source_ts=source_ts,
        )
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
        sample = self.pool.sample(
            now,
            reserve_kw=max(self.config.reserve.at(now_s)),
            baseline_kw=frame.baseline_kw,
            deviation_kw=deviation_kw,
            setpoints_kw=p,
            fleet=self.fleet,
        )
        if sample is not None:
            self._emit(sample)
        return DispatchOutcome(p, frame.baseline_kw, deviation_kw, len(groups), elapsed)

    # ------------------------------------------------------------------ views

    def _emit(self, event: ServiceEvent) -> None:
        self.events.emit(event)

    @property
    def plan(self) -> Plan | None:
        """The plan the fast loop dispatches around (immutable)."""
        res = self.plans.result
        return res.plan if res is not None else None

    @property
    def last_request(self) -> PlanRequest | None:
        """The request the current plan answers (sessions, caps, steps)."""
        res = self.plans.result
        return res.job.request if res is not None else None

    def feeder_demand_kw(self) -> dict[str, float]:
        """Per feeder, Σ max power of its live sessions (at most its rating)."""
        return _demand(self.fleet, self.topology)

    def feeder_headroom_kw(self) -> dict[str, float]:
        """Per feeder, its cap now minus the limit-safe base the fast loop dispatches around."""
        return _headroom(self._frame, self.topology)

    @property
    def last_grid_check(self) -> GridCheck | None:
        return self.plans.last_grid_check

    def status(self) -> ServiceStatus:
        """A read-only snapshot for health and metrics."""
        now = self.clock.now()
        res = self.plans.result
        return ServiceStatus(
            at=now,
            sessions=int(self.fleet.active[: self.fleet.n_slots].sum()),
            plan_age_s=None if res is None else (now - res.job.made_at).total_seconds(),
            planning=self.plans.waiting,
            headroom_kw=self.feeder_headroom_kw(),
        )

    def close(self) -> None:
        """Stop the plan runner (a worker process, when there is one)."""
        self.runner.close()
