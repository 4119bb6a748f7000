"""Ingest benchmark: validated telemetry messages per second for one replica.

What is measured, on a real Kafka broker: M telemetry records (N ``session_started``,
then meter values round-robin over the N EVSEs, newer each time, all valid) are produced
to a fresh 6-partition telemetry topic *before* the clock starts. Then one replica
consumes them and the clock runs until every one of the M records has been applied:
``msgs_per_s = M / elapsed``. Per record the replica does what the shipped one does:
consume, validate (``decode_telemetry``, pydantic), apply to the fleet state
(``Service.handle``); per poll it writes the changed sessions to the compacted state
topic, flushes the producer (``acks=all``, idempotent) and commits the offsets (the
commit follows the flush, as in :class:`adapters.stream.runner.StreamRunner`). The 1 s
``Service.tick`` runs as well (no re-plan is due in the window: the replica planned once,
empty, before the records were produced, and re-plans at most every 300 s or at a plan
step boundary; ``plans_in_window`` says whether one happened).

Replicas (``--kafka-client``):

* ``kafka-python`` (default): the shipped :class:`~adapters.stream.runner.StreamRunner`,
  in-process, looping ``poll_once()``;
* ``confluent``: a loop doing the same work on confluent-kafka (librdkafka);
* ``both``: both, one after the other on the same records (each with its own group).

Each is run twice: once plain (the figure), once with timers around consume (poll),
decode, apply, tick, state write, flush and commit (``profile``; the timers add a little
overhead of their own, so its total is slightly above the plain run's).

The 2-core machine runs the broker (JVM) and the replica together (the producer has
finished before the clock starts); other processes competed too (``loadavg_1m``).

Usage (from the repo root)::

    python benchmarks/ingest.py --json
    python benchmarks/ingest.py --kafka-client both --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

try:
    import aggregator  # noqa: F401
except ImportError:  # not installed: run from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _machine import machine_info
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from pydantic import TypeAdapter
from stream_latency import (
    BenchTopics,
    Fleet,
    crc32c_impl,
    kafka_broker,
    log,
    use_pure_python_crc32c,
)

import aggregator.service.replica as service_module
from adapters.ops.metrics import Metrics
from adapters.serve.run import configure_logging
from adapters.stream.inprocess import SystemClock
from adapters.stream.runner import StreamRunner
from adapters.stream.settings import KafkaSettings
from aggregator.fleet import SessionState
from aggregator.interfaces import Record
from aggregator.messages import MeterValue, SetpointBatch, encode
from aggregator.service.replica import Service, ServiceConfig
from aggregator.topology import Feeder, Site, Topology

TARGET_MSGS_PER_S = 20_000.0
METER_STEP_S = 10.0
_T = TypeVar("_T")


def topology(fleet: Fleet) -> Topology:
    feeders = tuple(Feeder(f"f{f:02d}", 1e6) for f in range(fleet.feeders))
    sites = tuple(
        Site(f"s{s:05d}", fleet.feeder_of(s), 150.0, None, fleet.csms_of(s))
        for s in range(fleet.sites)
    )
    return Topology(feeders, sites)


def messages(fleet: Fleet, m: int) -> list[tuple[bytes, bytes]]:
    """(key, value) of M valid telemetry records: N session starts, then meter values."""
    t0 = datetime.now(UTC) - timedelta(hours=1)
    out: list[tuple[bytes, bytes]] = []
    for i in range(min(fleet.evses, m)):
        s = fleet.session(i, t0)
        out.append((s.feeder_id.encode(), encode(s)))
    k = 0
    while len(out) < m:
        i = k % fleet.evses
        step = k // fleet.evses + 1
        site = i // 20
        mv = MeterValue(
            ts=t0 + timedelta(seconds=step * METER_STEP_S),
            feeder_id=fleet.feeder_of(site),
            evse_id=f"e{i:06d}",
            session_id=f"sess-{i:06d}",
            energy_kwh=min(0.1 * step, 29.0),
            power_kw=7.0,
        )
        out.append((mv.feeder_id.encode(), encode(mv)))
        k += 1
    return out


def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> float:
    """Write the records (not timed as ingest); returns the seconds it took."""
    t = time.monotonic()
    try:
        from confluent_kafka import Producer
    except ImportError:
        producer = KafkaProducer(
            bootstrap_servers=bootstrap, acks=1, linger_ms=20, batch_size=512 * 1024
        )
        for key, value in records:
            producer.send(topic, key=key, value=value)
        producer.flush()
        producer.close()
        return time.monotonic() - t
    cp = Producer({"bootstrap.servers": bootstrap, "acks": 1, "linger.ms": 20})
    for key, value in records:
        while True:
            try:
                cp.produce(topic, key=key, value=value)
                break
            except BufferError:
                cp.poll(0.05)
        cp.poll(0)
    cp.flush()
    return time.monotonic() - t


class Timers:
    """Accumulated seconds per phase (profile mode)."""

    def __init__(self) -> None:
        self.s: dict[str, float] = defaultdict(float)

    def wrap(self, name: str, fn: Callable[..., _T]) -> Callable[..., _T]:
        def timed(*args: Any, **kwargs: Any) -> _T:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.s[name] += time.perf_counter() - t

        return timed

    def report(self, total: float) -> dict[str, Any]:
        s = dict(self.s)
        # handle() includes decode: apply = handle − decode
        s["apply"] = s.pop("handle", 0.0) - s.get("decode", 0.0)
        s["other"] = total - sum(s.values())
        return {
            "total_s": round(total, 3),
            "seconds": {k: round(v, 3) for k, v in sorted(s.items(), key=lambda kv: -kv[1])},
            "share": {k: round(v / total, 3) for k, v in sorted(s.items(), key=lambda kv: -kv[1])},
        }


@contextlib.contextmanager
def timed_decode(timers: Timers | None) -> Iterator[None]:
    """Time ``decode_telemetry`` as the service calls it (module global)."""
    if timers is None:
        yield
        return
    orig = service_module.decode_telemetry
    service_module.decode_telemetry = timers.wrap("decode", orig)
    try:
        yield
    finally:
        service_module.decode_telemetry = orig


class Stall:
    """Fails the run when nothing was applied for 30 s (a record lost or rejected)."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.applied = -1
        self.since = time.monotonic()

    def check(self) -> None:
        applied = self.svc.counters["telemetry.applied"]
        if applied != self.applied:
            self.applied, self.since = applied, time.monotonic()
        elif time.monotonic() - self.since > 30:
            raise SystemExit(f"no progress for 30 s: {dict(self.svc.counters)}")


def fresh_state_topic(topics: BenchTopics, tag: str) -> str:
    """A new compacted state topic for one run: a replica restores its sessions from the
    state topic, so a run on the previous run's state would see only duplicates."""
    name = topics(f"state-{tag}")
    admin = KafkaAdminClient(bootstrap_servers=topics.bootstrap)
    try:
        admin.create_topics([NewTopic(name, 6, 1, topic_configs={"cleanup.policy": "compact"})])
    finally:
        admin.close()
    return name


def committed_equals_end(bootstrap: str, group: str, topic: str) -> bool:
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        end = c.end_offsets(tps)
        return all((c.committed(tp) or 0) == end[tp] for tp in tps)
    finally:
        c.close()


# ---------------------------------------------------------------------- kafka-python


def run_kafka_python(topics: BenchTopics, topo: Topology, m: int, profile: bool) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    group = f"{topics.prefix}-kp-{tag}"
    settings = KafkaSettings(
        bootstrap=topics.bootstrap,
        group_id=group,
        telemetry_topic=topics("telemetry"),
        grid_signals_topic=topics("grid-signals"),
        frequency_topic=topics("frequency"),
        setpoints_topic=topics("setpoints"),
        state_topic=fresh_state_topic(topics, tag),
        deadletter_topic=topics("deadletter"),
    )
    runner = StreamRunner(topo, ServiceConfig(), settings, clock=SystemClock(), metrics=Metrics())
    try:
        deadline = time.monotonic() + 60
        while runner.service is None or runner.service.plan is None:
            if time.monotonic() > deadline:
                raise SystemExit("the kafka-python replica got no assignment in 60 s")
            runner.poll_once()
        svc = runner.service
        plans0 = svc.counters["plans"]
        timers = Timers() if profile else None
        if timers is not None:
            runner.consumer.poll = timers.wrap("consume", runner.consumer.poll)
            runner.consumer.commit = timers.wrap("commit", runner.consumer.commit)
            runner.producer.flush = timers.wrap("flush", runner.producer.flush)
            runner._write_state = timers.wrap("state_write", runner._write_state)  # type: ignore[method-assign]
            svc.handle = timers.wrap("handle", svc.handle)  # type: ignore[method-assign]
            svc.tick = timers.wrap("tick", svc.tick)  # type: ignore[method-assign]
        before = svc.counters["telemetry.applied"]
        stall = Stall(svc)
        with timed_decode(timers):
            t0 = time.perf_counter()
            while svc.counters["telemetry.applied"] < m:
                runner.poll_once()
                if runner.service is not svc:
                    raise SystemExit("the replica was rebalanced during the run")
                stall.check()
            elapsed = time.perf_counter() - t0
        rejected = sum(v for k, v in svc.counters.items() if k.startswith("rejected"))
        res: dict[str, Any] = {
            "elapsed_s": round(elapsed, 3),
            "msgs_per_s": round((m - before) / elapsed),
            "applied_before_clock": before,
            "applied": svc.counters["telemetry.applied"],
            "rejected": rejected,
            "plans_in_window": svc.counters["plans"] - plans0,
        }
        if timers is not None:
            res["profile"] = timers.report(elapsed)
    finally:
        runner.close()
    res["committed_equals_end"] = committed_equals_end(topics.bootstrap, group, topics("telemetry"))
    return res


# ------------------------------------------------------------------------ confluent


def run_confluent(topics: BenchTopics, topo: Topology, m: int, profile: bool) -> dict[str, Any]:
    from confluent_kafka import Consumer, Producer

    tag = uuid.uuid4().hex[:6]
    group = f"{topics.prefix}-ck-{tag}"
    state = TypeAdapter(SessionState)
    producer = Producer(
        {"bootstrap.servers": topics.bootstrap, "acks": "all", "enable.idempotence": True,
         "linger.ms": 0}
    )  # fmt: skip

    def send(topic: str, key: bytes, value: bytes | None) -> None:
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                return
            except BufferError:
                producer.poll(0.05)

    class Sink:
        def publish(self, batch: SetpointBatch) -> None:
            send(topics("setpoints"), batch.csms_id.encode(), encode(batch))

    tp = KafkaSettings(
        bootstrap=topics.bootstrap,
        telemetry_topic=topics("telemetry"),
        state_topic=fresh_state_topic(topics, tag),
        setpoints_topic=topics("setpoints"),
    ).topics()
    svc = Service(topo, ServiceConfig(), clock=SystemClock(), sink=Sink(), topics=tp)
    svc.tick()  # the empty plan, as the kafka-python replica has before the clock starts
    consumer = Consumer(
        {
            "bootstrap.servers": topics.bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topics("telemetry")])
    timers = Timers() if profile else None

    def t(name: str, fn: Callable[..., _T]) -> Callable[..., _T]:
        return timers.wrap(name, fn) if timers is not None else fn

    consume = t("consume", consumer.consume)
    handle = t("handle", svc.handle)
    tick = t("tick", svc.tick)
    flush = t("flush", producer.flush)
    commit = t("commit", consumer.commit)

    def write_state() -> None:
        for evse in svc.changed_evses:
            st = svc.fleet.session_state(evse)
            send(tp.state, evse.encode(), None if st is None else state.dump_json(st))
        svc.changed_evses.clear()

    state_write = t("state_write", write_state)
    plans0 = svc.counters["plans"]
    last_tick = 0.0

    def cycle(timeout_s: float) -> None:
        nonlocal last_tick
        batch = consume(num_messages=2000, timeout=timeout_s)
        for msg in batch:
            if msg.error() is None:
                key = msg.key()
                handle(
                    Record(
                        msg.topic(),
                        key.decode() if key else None,
                        msg.value(),
                        msg.offset(),
                        msg.partition(),
                    )
                )
        now = time.monotonic()
        if now - last_tick >= 1.0:
            last_tick = now
            tick()
        state_write()
        if batch:
            flush()
            commit(asynchronous=False)

    try:
        # the assignment before the clock starts, like the kafka-python replica (whatever
        # arrives meanwhile is applied and left out of the rate: applied_before_clock)
        deadline = time.monotonic() + 60
        while not consumer.assignment():
            if time.monotonic() > deadline:
                raise SystemExit("the confluent replica got no assignment in 60 s")
            cycle(0.1)
        before = svc.counters["telemetry.applied"]
        stall = Stall(svc)
        with timed_decode(timers):
            t0 = time.perf_counter()
            while svc.counters["telemetry.applied"] < m:
                cycle(0.005)
                stall.check()
            elapsed = time.perf_counter() - t0
    finally:
        consumer.close()
        producer.flush()
    rejected = sum(v for k, v in svc.counters.items() if k.startswith("rejected"))
    res: dict[str, Any] = {
        "elapsed_s": round(elapsed, 3),
        "msgs_per_s": round((m - before) / elapsed),
        "applied_before_clock": before,
        "applied": svc.counters["telemetry.applied"],
        "rejected": rejected,
        "plans_in_window": svc.counters["plans"] - plans0,
        "committed_equals_end": committed_equals_end(topics.bootstrap, group, topics("telemetry")),
    }
    if timers is not None:
        res["profile"] = timers.report(elapsed)
    return res


# --------------------------------------------------------------------------- main


def run(bootstrap: str, m: int, evses: int, clients: list[str], crc32c: str) -> dict[str, Any]:
    fleet = Fleet(evses, min(10, max(1, evses // 20)), 10)
    topo = topology(fleet)
    topics = BenchTopics(bootstrap)
    topics.create(6)
    records = messages(fleet, m)
    size = sum(len(v) for _, v in records)
    produce_s = produce(bootstrap, topics("telemetry"), records)
    log(f"{m} records ({size / 1e6:.1f} MB) produced in {produce_s:.1f} s")
    results: dict[str, Any] = {}
    for kind in clients:
        fn = run_kafka_python if kind == "kafka-python" else run_confluent
        plain = fn(topics, topo, m, False)
        log(f"{kind}: {plain['msgs_per_s']} msgs/s")
        prof = fn(topics, topo, m, True)
        log(f"{kind} (profiled): {prof['msgs_per_s']} msgs/s")
        plain["profile"] = prof["profile"]
        plain["profile_msgs_per_s"] = prof["msgs_per_s"]
        results[kind] = plain
    first = results[clients[0]]
    return {
        "messages": m,
        "msgs_per_s": first["msgs_per_s"],
        "kafka_client": clients[0],
        "target_msgs_per_s": TARGET_MSGS_PER_S,
        "target_met": bool(first["msgs_per_s"] >= TARGET_MSGS_PER_S),
        "evses": evses,
        "session_starts": min(evses, m),
        "meter_values": m - min(evses, m),
        "mean_record_bytes": round(size / m, 1),
        "partitions": 6,
        "max_poll_records": 2000,
        "results": results,
        "kafka_python": metadata.version("kafka-python"),
        "kafka_python_crc32c": crc32c_impl(crc32c),
        "confluent_kafka": (
            metadata.version("confluent-kafka") if "confluent" in clients else None
        ),
        "machine": machine_info(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=200_000, help="M records (default 200000)")
    ap.add_argument("--evses", type=int, default=10_000, help="N EVSEs (default 10000)")
    ap.add_argument("--bootstrap", help="HOST:PORT of a running broker (default: start one)")
    ap.add_argument(
        "--kafka-client", choices=("kafka-python", "confluent", "both"), default="kafka-python"
    )
    ap.add_argument("--crc32c", choices=("auto", "python"), default="auto")
    ap.add_argument("--json", action="store_true", help="print exactly one JSON line")
    args = ap.parse_args(argv)
    if args.messages < 1 or args.evses < 20:
        ap.error("--messages must be ≥ 1 and --evses ≥ 20")
    configure_logging("console", "WARNING")  # structured logs to stderr, stdout stays JSON
    if args.crc32c == "python":
        use_pure_python_crc32c()
    clients = ["kafka-python", "confluent"] if args.kafka_client == "both" else [args.kafka_client]
    with kafka_broker(args.bootstrap) as bootstrap:
        res = run(bootstrap, args.messages, args.evses, clients, args.crc32c)
    if args.json:
        print(json.dumps(res))
    else:
        for kind, r in res["results"].items():
            print(
                f"ingest ({kind}): {res['messages']} messages in {r['elapsed_s']} s = "
                f"{r['msgs_per_s']} msgs/s (target ≥ {TARGET_MSGS_PER_S:.0f}); "
                f"profile shares {r['profile']['share']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
