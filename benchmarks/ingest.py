"""Ingest benchmark: validated telemetry messages per second for one replica.

What is measured, on a real Kafka broker: M telemetry records (N ``session_started``,
then meter values round-robin over the N EVSEs, newer each time, all valid) are produced
to a fresh 6-partition telemetry topic *before* the clock starts. Then one replica — the
shipped :class:`adapters.stream.runner.StreamRunner`, in-process, looping ``poll_once()``
on the transport the settings select — consumes them, and the clock runs until every one
of the M records has been applied: ``msgs_per_s = M / elapsed``. The runner does what it
does in production: consume, route (``decode_telemetry``, pydantic, then apply to the
fleet), coalesced state writes (start/end at once, meter values at most once per EVSE per
``state_interval_s``), ``flush`` and only then ``commit``; the 1 s ``tick`` (which only
takes finished plans from the plan worker; ``plans_in_window`` says whether one landed).
The clock starts after the cycle in which the replica got its partitions and opened its
gate (the records of that cycle, ``applied_before_clock``, are not counted).

At the end the runner is closed as on SIGTERM (pending states written, flushed,
committed), then the run is checked: ``committed_equals_end`` (the group's committed
offsets are the telemetry topic's end offsets) and ``state_complete`` (the state topic,
read to its end, holds for every EVSE its newest energy).

Clients (``--kafka-client``): ``both`` (default) runs ``confluent`` (confluent-kafka on
librdkafka, the default transport: the figure) and then ``kafka-python`` (the baseline;
``ratio_to_baseline`` = confluent / kafka-python msgs/s) on the same records, each with
its own group and state topic; ``confluent`` or ``kafka-python`` runs one.

Each is run twice: once plain (the figure), once with timers around consume (poll),
route (decode + apply), decode, tick, state write, flush and commit (``profile``; the
timers add a little overhead of their own, so its total is slightly above the plain
run's).

The 2-core machine runs the broker (JVM) and the replica together (the producer has
finished before the clock starts); other processes competed too (``loadavg_1m``).

Usage (from the repo root)::

    python benchmarks/ingest.py --json
    python benchmarks/ingest.py --messages 20000 --evses 1000 --json   # a small run
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
from stream_latency import (
    BenchTopics,
    Fleet,
    crc32c_impl,
    kafka_broker,
    log,
    use_pure_python_crc32c,
)

import adapters.stream.router as router_module
import adapters.stream.runner as runner_module
from adapters.ops.metrics import Metrics
from adapters.serve.run import configure_logging
from adapters.stream.inprocess import SystemClock
from adapters.stream.runner import StreamRunner
from adapters.stream.settings import KafkaSettings
from aggregator.messages import MeterValue, encode
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
def timed_route(timers: Timers | None) -> Iterator[None]:
    """Time the router (decode + apply) and the decode in it, as the runner calls them."""
    if timers is None:
        yield
        return
    orig_route, orig_decode = runner_module.route, router_module.decode_telemetry
    runner_module.route = timers.wrap("handle", orig_route)  # type: ignore[assignment]
    router_module.decode_telemetry = timers.wrap("decode", orig_decode)  # type: ignore[assignment]
    try:
        yield
    finally:
        runner_module.route = orig_route  # type: ignore[assignment]
        router_module.decode_telemetry = orig_decode  # type: ignore[assignment]


def handled(svc: Service) -> int:
    """Telemetry records the service has taken (applied, duplicate or rejected)."""
    c = svc.counters
    return c["telemetry.applied"] + c["telemetry.duplicate"] + c["telemetry.rejected"]


class Stall:
    """Fails the run when nothing was applied for 30 s (a record lost or rejected)."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.applied = -1
        self.since = time.monotonic()

    def check(self) -> None:
        applied = handled(self.svc)
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


# ---------------------------------------------------------------- the shipped runner


def expected_state(records: list[tuple[bytes, bytes]]) -> dict[str, float]:
    """EVSE id → the energy of its newest record: what the state topic must end at."""
    out: dict[str, float] = {}
    for _, value in records:
        d = json.loads(value)
        out[d["evse_id"]] = float(d.get("energy_kwh", 0.0))
    return out


def state_complete(bootstrap: str, topic: str, expected: dict[str, float]) -> dict[str, Any]:
    """Read the state topic to its end: does every EVSE's latest record hold its newest
    energy? (compaction may not have run: the latest record per key wins)."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    latest: dict[str, bytes | None] = {}
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        end = c.end_offsets(tps)
        deadline = time.monotonic() + 120
        while any(c.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
            for rs in c.poll(timeout_ms=500).values():
                for r in rs:
                    latest[r.key.decode()] = r.value
    finally:
        c.close()
    got = {k: json.loads(v)["energy_kwh"] for k, v in latest.items() if v}
    wrong = [e for e, kwh in expected.items() if abs(got.get(e, -1.0) - kwh) > 1e-9]
    return {
        "state_records": sum(end.values()),
        "state_evses": len(got),
        "state_complete": not wrong,
        "state_wrong_evses": wrong[:10],
    }


def run_shipped(
    topics: BenchTopics,
    topo: Topology,
    m: int,
    client: str,
    profile: bool,
    expected: dict[str, float],
) -> dict[str, Any]:
    """The shipped :class:`StreamRunner` on ``client``, in-process, looping ``poll_once``."""
    tag = uuid.uuid4().hex[:6]
    group = f"{topics.prefix}-{client}-{tag}"
    state_topic = fresh_state_topic(topics, tag)
    settings = KafkaSettings(
        bootstrap=topics.bootstrap,
        client=client,  # type: ignore[arg-type]
        group_id=group,
        telemetry_topic=topics("telemetry"),
        grid_signals_topic=topics("grid-signals"),
        frequency_topic=topics("frequency"),
        setpoints_topic=topics("setpoints"),
        state_topic=state_topic,
        deadletter_topic=topics("deadletter"),
    )
    runner = StreamRunner(topo, ServiceConfig(), settings, clock=SystemClock(), metrics=Metrics())
    closed = False
    try:
        deadline = time.monotonic() + 120
        # the clock starts once the replica owns the partitions and its gate is open (the
        # records handled in that first cycle are left out); it does not wait for the
        # first plan: that is solved in the plan worker while the fast loop goes on
        while runner.service is None or not runner.ready:
            if time.monotonic() > deadline:
                raise SystemExit(f"the {client} replica got no assignment in 120 s")
            runner.poll_once()
        svc = runner.service
        plans0 = svc.counters["plans"]
        timers = Timers() if profile else None
        if timers is not None:
            tr = runner.transport
            tr.poll = timers.wrap("consume", tr.poll)  # type: ignore[method-assign]
            tr.commit = timers.wrap("commit", tr.commit)  # type: ignore[method-assign]
            tr.flush = timers.wrap("flush", tr.flush)  # type: ignore[method-assign]
            runner.state.write_due = timers.wrap("state_write", runner.state.write_due)  # type: ignore[method-assign]
            svc.tick = timers.wrap("tick", svc.tick)  # type: ignore[method-assign]
        before = handled(svc)
        stall = Stall(svc)
        with timed_route(timers):
            t0 = time.perf_counter()
            while handled(svc) < m:  # every record applied (or, a defect, rejected)
                runner.poll_once()
                if runner.service is not svc:
                    raise SystemExit("the replica was rebalanced during the run")
                stall.check()
            elapsed = time.perf_counter() - t0
        rejected = svc.counters["telemetry.rejected"] + svc.counters["telemetry.duplicate"]
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
        runner.close()  # SIGTERM path: pending states written, flushed, committed
        closed = True
    finally:
        if not closed:
            runner.close()
    res["committed_equals_end"] = committed_equals_end(topics.bootstrap, group, topics("telemetry"))
    res.update(state_complete(topics.bootstrap, state_topic, expected))
    return res


def run(bootstrap: str, m: int, evses: int, clients: list[str], crc32c: str) -> dict[str, Any]:
    fleet = Fleet(evses, min(10, max(1, evses // 20)), 10)
    topo = topology(fleet)
    topics = BenchTopics(bootstrap)
    topics.create(6)
    records = messages(fleet, m)
    expected = expected_state(records)
    size = sum(len(v) for _, v in records)
    produce_s = produce(bootstrap, topics("telemetry"), records)
    log(f"{m} records ({size / 1e6:.1f} MB) produced in {produce_s:.1f} s")
    results: dict[str, Any] = {}
    for kind in clients:
        plain = run_shipped(topics, topo, m, kind, False, expected)
        log(f"{kind}: {plain['msgs_per_s']} msgs/s")
        prof = run_shipped(topics, topo, m, kind, True, expected)
        log(f"{kind} (profiled): {prof['msgs_per_s']} msgs/s")
        plain["profile"] = prof["profile"]
        plain["profile_msgs_per_s"] = prof["msgs_per_s"]
        results[kind] = plain
    first = results[clients[0]]
    return {
        "messages": m,
        "msgs_per_s": first["msgs_per_s"],
        "kafka_client": clients[0],
        "committed_equals_end": first["committed_equals_end"],
        "state_complete": first["state_complete"],
        "baseline": clients[-1] if len(clients) > 1 else None,
        "ratio_to_baseline": (
            round(first["msgs_per_s"] / results[clients[-1]]["msgs_per_s"], 2)
            if len(clients) > 1
            else None
        ),
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
        "--kafka-client",
        choices=("confluent", "kafka-python", "both"),
        default="both",
        help="both (default): confluent (the figure), then kafka-python as the baseline",
    )
    ap.add_argument("--crc32c", choices=("auto", "python"), default="auto")
    ap.add_argument("--json", action="store_true", help="print exactly one JSON line")
    args = ap.parse_args(argv)
    if args.messages < 1 or args.evses < 20:
        ap.error("--messages must be ≥ 1 and --evses ≥ 20")
    configure_logging("console", "WARNING")  # structured logs to stderr, stdout stays JSON
    if args.crc32c == "python":
        use_pure_python_crc32c()
    clients = ["confluent", "kafka-python"] if args.kafka_client == "both" else [args.kafka_client]
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
    ok = all(
        r["committed_equals_end"] and r["state_complete"] and r["rejected"] == 0
        for r in res["results"].values()
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
