"""One replica on Kafka: consume, apply, publish, commit — on the transport seam only.

:class:`StreamRunner` drives one :class:`~aggregator.service.replica.Service` through a
:class:`~adapters.stream.transport.Transport` (confluent-kafka by default, kafka-python, or
the in-memory fake): records are routed to typed calls (:mod:`adapters.stream.router`),
bad ones dead-lettered with their reason, setpoint batches go out through
:class:`~adapters.csms.kafka.KafkaSetpointSink`, session states through the coalescing
:class:`~adapters.stream.state.StateWriter`. The runner never plans: it calls
``service.tick()`` about once a second (the service takes finished plans from its worker).

**One cycle** (:meth:`StreamRunner.poll_once`): the frequency consumer first (the fast
path: newest sample only, batches flushed at once); then the group consumer (telemetry and
grid signals; rebalance callbacks run here); the due state writes; then, if anything was
produced or consumed, ``flush`` and only after it ``commit`` of the offsets
:meth:`~adapters.stream.state.StateWriter.committable` allows. An idle replica blocks up
to ``poll_timeout_s`` (default 0.1 s) in the frequency poll instead of spinning.

**Ownership.** Records are keyed by feeder; a replica owns the feeders hashing to its
telemetry partitions (same numbers of the grid-signals topic: eager ``range`` assignment).
Every assignment builds a fresh service for the feeders now owned, holding their part of
the fleet's reserve (:meth:`StreamRunner.config_for`: by rating, so the replicas' parts sum
to the award whoever owns what).

**No batch before the limits are known** (takeover). After an assignment the gate in front
of the setpoint sink is closed: the runner restores the owned sessions from the state
topic, hands the leases still in force on the setpoints topic to the service
(``seed_leases``, so EVSEs whose session ended are named at 0 kW until their old lease
expires), takes the end offsets of the grid-signal partitions (which the transport
replays from their beginning), and opens the gate — and asks the service to publish at once
— only when the consumer's positions have reached those end offsets. If that has not
happened before the leases in force run out (their earliest ``valid_until`` less a margin;
half the setpoint validity when none is known), the gate passes **failsafe-safe** batches
only: every setpoint lowered to its failsafe value (and that to the previous owner's
failsafe value for the EVSE), until the catch-up completes.

**Commit after effects.** Offsets are committed only after ``flush`` returned for the
setpoints, dead letters and state records the consumed records caused, and never past a
record whose state is still coalescing (see :mod:`adapters.stream.state`). On revocation
the runner writes every pending state, flushes, commits and drops the service; on
:meth:`close` the same, then closes the transport.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import structlog

from adapters.csms.kafka import KafkaSetpointSink
from adapters.ops.metrics import Metrics
from adapters.stream.fleet import demand_report, static_share_limits
from adapters.stream.gate import GatedSink
from adapters.stream.router import Rejection, dead_letter_headers, route, route_frequency
from adapters.stream.settings import KafkaSettings
from adapters.stream.state import (
    StateWriter,
    prior_failsafe_kw,
    recent_batches,
    restore_sessions,
)
from adapters.stream.topics import ensure_topics, feeder_partition, owned_topology
from adapters.stream.transport import Message, TopicPartition, Transport
from aggregator.errors import InvalidInput, TransientIO
from aggregator.interfaces import Clock, SetpointSink
from aggregator.service.events import EventSink, FanOut
from aggregator.service.fleetsplit import reserve_fraction
from aggregator.service.planrunner import EngineFactory, ProcessPlanRunner
from aggregator.service.replica import Service, ServiceConfig
from aggregator.topology import Topology
from markets.activation import ReserveActivation

__all__ = ["MakeService", "StreamRunner", "feeder_partition", "make_transport", "owned_topology"]

log = structlog.get_logger("gridflex.kafka")

MakeService = Callable[[Topology, SetpointSink, EventSink], Service]
"""Builds the service for the owned part of the topology on the runner's sink and events."""

_TICK_S = 1.0
_LEASE_MARGIN_S = 5.0


def make_transport(settings: KafkaSettings) -> Transport:
    """The transport ``settings.client`` names (confluent-kafka unless told otherwise)."""
    if settings.client == "kafka-python":
        from adapters.stream.kafkapython import KafkaPythonTransport

        return KafkaPythonTransport(settings)
    from adapters.stream.confluent import ConfluentTransport

    return ConfluentTransport(settings)


class _SendView:
    """``send``/``flush`` on the transport, for publishers written for a producer object
    (the DSO intake publishes grid signals through it from other threads)."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def send(self, topic: str, key: bytes | None = None, value: bytes | None = None) -> None:
        self._t.produce(topic, key, value)

    def flush(self, timeout: float | None = None) -> None:
        self._t.flush(30.0 if timeout is None else timeout)


class StreamRunner:
    """One replica: consume, apply, publish, commit (see the module docstring)."""

    def __init__(
        self,
        topology: Topology,
        config: ServiceConfig,
        kafka: KafkaSettings,
        *,
        clock: Clock,
        metrics: Metrics,
        make_service: MakeService | None = None,
        events: EventSink | None = None,
        transport: Transport | None = None,
        wrap_sink: Callable[[SetpointSink], SetpointSink] | None = None,
    ) -> None:
        self.topology = topology
        self.config = config
        self.kafka = kafka
        self.topics = kafka.topics()
        self.clock = clock
        self.metrics = metrics
        self.transport = transport if transport is not None else make_transport(kafka)
        created = ensure_topics(self.transport, kafka)
        if created:
            log.info("topics_created", topics=created)
        self.producer = _SendView(self.transport)
        self.gate = GatedSink(KafkaSetpointSink(self.transport, self.topics.setpoints, metrics))
        # what the services publish to: the gate, seen by e.g. the history's setpoint sums
        self.sink: SetpointSink = self.gate if wrap_sink is None else wrap_sink(self.gate)
        self.state = StateWriter(
            self.transport, self.topics.state, interval_s=kafka.state_interval_s
        )
        sinks: list[EventSink] = [self.state, metrics]
        if events is not None:
            sinks.append(events)
        self.events = FanOut(sinks)
        self._make_service = make_service
        self.service: Service | None = None
        self.ready = False
        self.last_loop = time.monotonic()
        self._last_tick = 0.0
        self._assigned: list[TopicPartition] | None = None
        self._consumed: dict[TopicPartition, int] = {}
        self._tps: dict[tuple[str, int], TopicPartition] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._catchup: dict[TopicPartition, int] | None = None
        self.catchup_deadline = 0.0  # monotonic s: failsafe-only batches after it
        self.tick_s = _TICK_S
        self.fleet_control = kafka.fleet_control()
        self.report_s = kafka.fleet_report_interval_s
        self._last_report = 0.0
        self._busy = False
        self.transport.subscribe(
            [self.topics.telemetry, self.topics.grid_signals],
            replay=[self.topics.grid_signals],
            on_assign=self._on_assigned,
            on_revoke=self._on_revoked,
        )

    # ----------------------------------------------------------------- rebalance

    def _settle(self) -> None:
        """Write every pending state, flush, commit: the state topic then holds the effect
        of every record consumed, whatever position the consumer resumes from."""
        self.ready = False
        self.metrics.ready.set(0)
        self.gate.close()
        self.state.write_all()
        try:
            self.transport.flush()
            self._commit()
        except Exception as exc:  # the next owner replays from the last commit
            log.warning("commit_on_revoke_failed", error=str(exc))
        self._drop_service()
        self.state.reset()
        self._consumed.clear()
        self._catchup = None

    def _on_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        """Inside poll: write what is pending, flush, commit, stop publishing."""
        self._settle()
        log.info("partitions_revoked", partitions=[f"{p.topic}:{p.partition}" for p in revoked])

    def _on_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        # inside poll: only note it; poll_once rebuilds before it applies any record
        self._assigned = list(assigned)

    def config_for(self, topo: Topology) -> ServiceConfig:
        """The service config for the owned part ``topo``: the fleet's reserve split among
        replicas by their feeders' rating (the parts sum to the award, whoever owns what)."""
        ratings = {f.feeder_id: f.limit_kw for f in self.topology.feeders}
        owned = [f.feeder_id for f in topo.feeders]
        return self.config.reserve_share(reserve_fraction(ratings, owned))

    def _build(self, topo: Topology) -> Service:
        if self._make_service is not None:
            return self._make_service(topo, self.sink, self.events)
        config = self.config_for(topo)
        return Service(  # the planner in a worker process: this thread never plans
            topo,
            config,
            clock=self.clock,
            sink=self.sink,
            topics=self.topics,
            events=self.events,
            activation=ReserveActivation(),
            runner=ProcessPlanRunner(EngineFactory(config)),
        )

    def _drop_service(self) -> None:
        svc, self.service = self.service, None
        if svc is not None:
            svc.close()  # stops its plan worker

    def _rebuild(self, assigned: list[TopicPartition]) -> None:
        """A fresh service for the feeders now owned, restored, leases seeded, gate closed."""
        if self.service is not None or self.state.pending:
            # assigned again without a revocation first (a client may do so, and keep its
            # positions): settle as on a revocation so that nothing consumed is lost
            self._settle()
        self.gate.close()
        self.metrics.sessions_reset()
        self._committed.clear()
        parts = self.transport.partitions(self.topics.telemetry) or []
        owned = {p.partition for p in assigned if p.topic == self.topics.telemetry}
        topo = owned_topology(self.topology, len(parts), owned)
        svc: Service | None = None
        restored = seeded = 0
        lease_left_s = self.config.setpoint_validity_s / 2
        if topo.sites:  # a replica may own partitions no feeder hashes to: it idles, ready
            svc = self._build(topo)
            # each owned feeder's default share of the static fleet cap, before the replay
            # of the grid signals (whose shares, if any, replace it): see adapters.stream.fleet
            now = self.clock.now()
            for share in static_share_limits(self.topology, list(topo.feeder_index), now):
                svc.on_grid_signal(share)
            sites = topo.site_index
            for st in restore_sessions(self.transport, self.topics.state):
                if st.site_id in sites:
                    try:
                        svc.restore(st)
                    except InvalidInput:
                        continue
                    restored += 1
                    self.metrics.session_restored(st.evse_id)
            now = self.clock.now()
            leases = recent_batches(
                self.transport,
                self.topics.setpoints,
                {s.csms_id for s in topo.sites},
                now,
                self.config.setpoint_validity_s,
                self.config.failsafe_duration_s,
            )
            for b in leases:
                if b.valid_until > now:
                    lease_left_s = min(lease_left_s, (b.valid_until - now).total_seconds())
                seeded += svc.seed_leases(
                    b.csms_id,
                    list(b.evse_ids),
                    list(b.power_kw),
                    b.valid_until,
                    failsafe_kw=list(b.failsafe_kw),
                    seq=b.seq,
                )
            self.gate.prior_failsafe = prior_failsafe_kw(leases)
        signals = [p for p in assigned if p.topic == self.topics.grid_signals]
        ends = self.transport.end_offsets(signals)
        begins = self.transport.beginning_offsets(signals)
        self._catchup = {tp: e for tp, e in ends.items() if e > begins.get(tp, 0)}
        self.catchup_deadline = time.monotonic() + max(1.0, lease_left_s - _LEASE_MARGIN_S)
        self.service = svc
        log.info(
            "partitions_assigned",
            partitions=sorted(owned),
            feeders=[f.feeder_id for f in topo.feeders],
            restored_sessions=restored,
            seeded_leases=seeded,
            signals_to_read=sum(self._catchup.values()),
        )

    def _check_catchup(self) -> None:
        """Open the gate once the grid signals are read up to the assignment's end offsets."""
        ends = self._catchup
        if ends is None:
            return
        pos = self.transport.position(list(ends))
        if all(pos.get(tp, 0) >= end for tp, end in ends.items()):
            self._catchup = None
            self.gate.open()
            self.ready = True
            self.metrics.ready.set(1)
            svc = self.service
            if svc is not None:  # publish at once: the feeders are back under control
                svc.tick()
                svc.dispatch(0.0)
            log.info("caught_up", feeders=0 if svc is None else svc.topology.n_feeders)
        elif not self.gate.failsafe_only and time.monotonic() >= self.catchup_deadline:
            self.gate.to_failsafe_only()
            if self.service is not None:  # keep the CSMSs under lease, at failsafe values
                self.service.dispatch(0.0)
            log.warning("catchup_slow_failsafe_only", behind={str(tp): e for tp, e in ends.items()})

    # ----------------------------------------------------------------- loop

    def poll_once(self, timeout_s: float | None = None) -> int:
        """One cycle (see the module docstring); returns the records consumed."""
        self.last_loop = time.monotonic()
        idle = self.kafka.poll_timeout_s if timeout_s is None else timeout_s
        self._frequency(0.0 if self._busy else idle)
        produced = False
        batch = self.transport.poll(0.0, self.kafka.max_poll_records)
        if self._assigned is not None:
            assigned, self._assigned = self._assigned, None
            self._rebuild(assigned)
        svc = self.service
        tps = self._tps
        consumed = self.metrics.consumed
        for m in batch:
            consumed(m.topic)
            tp = tps.get((m.topic, m.partition))
            if tp is None:
                tp = tps[(m.topic, m.partition)] = m.tp
            self.state.position = (tp, m.offset)
            rejection = route(svc, m, self.topics)
            if rejection is not None:
                self._dead_letter(m, rejection)
                produced = True
            self._consumed[tp] = m.offset + 1
        self.state.position = None
        self._busy = bool(batch)
        if self._catchup is not None:
            self._check_catchup()
        if svc is not None and time.monotonic() - self._last_tick >= self.tick_s:
            self._last_tick = time.monotonic()
            svc.tick()
            self.metrics.set_headroom(svc.feeder_headroom_kw())
        if svc is not None and time.monotonic() - self._last_report >= self.report_s:
            self._last_report = time.monotonic()  # the fleet splitter's input (no blocking)
            report = demand_report(svc.feeder_demand_kw(), self.kafka.client_id, self.clock.now())
            self.transport.produce(self.fleet_control, None, report)
            produced = True
        produced = self.state.write_due() > 0 or produced
        if produced or batch or self.gate.sent:
            self.gate.sent = 0
            self.transport.flush()  # effects first ...
            self._commit()  # ... then the offsets
        return len(batch)

    def _commit(self) -> None:
        offsets = self.state.committable(self._consumed)
        if not self.gate.is_open:  # a committed grid signal means its batches went out (the
            # fleet splitter's acknowledgement); they are replayed from the beginning anyway
            gs = self.topics.grid_signals
            offsets = {tp: o for tp, o in offsets.items() if tp.topic != gs}
        todo = {tp: o for tp, o in offsets.items() if self._committed.get(tp) != o}
        if todo:
            try:
                self.transport.commit(todo)
            except TransientIO as exc:  # e.g. a rebalance under way: replay covers it
                log.warning("commit_failed", error=str(exc))
                return
            self._committed.update(todo)

    def _frequency(self, timeout_s: float) -> None:
        records = self.transport.poll_frequency(timeout_s)
        if not records:
            return
        self.metrics.consumed(self.topics.frequency, len(records))
        svc = self.service
        if svc is None or not self.gate.is_open:
            return
        newest = max(records, key=lambda r: (r.timestamp_ms, r.offset))  # stale superseded
        t0 = time.perf_counter()
        rejection = route_frequency(svc, newest)
        if rejection is not None:
            self._dead_letter(newest, rejection)
        self.transport.flush()
        self.gate.sent = 0
        self.metrics.fast_loop.observe(time.perf_counter() - t0)

    def _dead_letter(self, m: Message, rejection: Rejection) -> None:
        self.metrics.rejected.labels(rejection.code[:40]).inc()
        self.transport.produce(
            self.topics.deadletter, m.key, m.value, dead_letter_headers(m, rejection)
        )
        self.metrics.messages_out.labels(self.topics.deadletter).inc()
        log.info(
            "record_rejected",
            topic=m.topic,
            partition=m.partition,
            offset=m.offset,
            reason=rejection.reason[:200],
        )

    def run_until(self, stop: Callable[[], bool]) -> None:
        """Cycle until ``stop()`` is true (tests, benchmarks)."""
        while not stop():
            self.poll_once()

    def close(self) -> None:
        """Stop polling, write pending state, publish, commit, close (the SIGTERM path)."""
        self.state.write_all()
        try:
            self.transport.flush()
            self._commit()
        except Exception as exc:
            log.warning("final_commit_failed", error=str(exc))
        self._drop_service()
        self.transport.close()

    @property
    def owned_feeders(self) -> list[str]:
        svc = self.service
        return [] if svc is None else [f.feeder_id for f in svc.topology.feeders]
