"""The InfluxDB history sink: round trip through a service into a real InfluxDB and back
(Flux, influxdb-client), drop-oldest with a counter when the database is down, and the
queue's bounds as a property."""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from influxdb_client import InfluxDBClient
from prometheus_client import CollectorRegistry, generate_latest

from adapters.ops.history import HistorySettings, InfluxHistory, points_of
from adapters.ops.history_points import Sample, dataclass_points, register_event
from aggregator.interfaces import ManualClock, Record, Topics
from aggregator.messages import (
    AfrrRequest,
    DsoLimitMessage,
    FrequencySample,
    MeterValue,
    SessionStarted,
    SetpointBatch,
    encode,
)
from aggregator.service.events import BatchesPublished, PoolSampled
from aggregator.service.replica import Service, ServiceConfig
from aggregator.topology import Feeder, Site, Topology
from markets.activation import ReserveActivation
from tests.aggregator.service.conftest import ListSink
from tests.conftest import wait_until

T0 = datetime(2026, 1, 14, 17, 0, tzinfo=UTC)
TOPICS = Topics()
TOPO = Topology(
    feeders=(Feeder("f1", 60.0), Feeder("f2", 80.0)),
    sites=(
        Site("s1", "f1", 40.0, csms_id="cs-a"),
        Site("s2", "f1", 30.0, csms_id="cs-b"),
        Site("s3", "f2", 50.0, csms_id="cs-b"),
    ),
)
FEEDER = {"s1": "f1", "s2": "f1", "s3": "f2"}


def started(i: int, site: str, t: datetime) -> Record:
    msg = SessionStarted(
        ts=t,
        feeder_id=FEEDER[site],
        site_id=site,
        evse_id=f"e{i}",
        csms_id="cs-a" if site == "s1" else "cs-b",
        session_id=f"sess{i}",
        departure=t + timedelta(hours=6),
        energy_requested_kwh=30.0,
        max_power_kw=11.0,
    )
    return Record(TOPICS.telemetry, FEEDER[site], encode(msg))


def metered(i: int, site: str, t: datetime, kw: float) -> Record:
    mv = MeterValue(
        ts=t, feeder_id=FEEDER[site], evse_id=f"e{i}", session_id=f"sess{i}", energy_kwh=1.0,
        power_kw=kw,
    )  # fmt: skip
    return Record(TOPICS.telemetry, FEEDER[site], encode(mv))


def feeder_limit(kw: float, t: datetime) -> Record:
    msg = DsoLimitMessage(
        ts=t, event_id="ev1", target_type="feeder", target_id="f1", start=t,
        end=t + timedelta(hours=2), limit_kw=kw,
    )  # fmt: skip
    return Record(TOPICS.grid_signals, "f1", encode(msg))


def freq(t: datetime, hz: float) -> Record:
    return Record(TOPICS.frequency, None, encode(FrequencySample(ts=t, hz=hz)))


def service(history: InfluxHistory, sink: ListSink, clock: ManualClock) -> Service:
    return Service(
        TOPO,
        ServiceConfig(reserve_kw=5.0),
        clock=clock,
        sink=history.tee(sink),
        events=history,
        activation=ReserveActivation(),
    )


def metric(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value(name)
    assert value is not None, name
    return value


def fresh_database(url: str) -> str:
    """A database of this test's own (InfluxQL over HTTP: the v2 API cannot create one)."""
    import httpx

    name = f"t{datetime.now(UTC).strftime('%H%M%S%f')}"
    r = httpx.post(f"{url}/query", data={"q": f'CREATE DATABASE "{name}"'}, timeout=10)
    r.raise_for_status()
    return name


# ---------------------------------------------------------------------------- real server


@pytest.mark.slow
def test_history_round_trip_through_the_service(influxdb_url: str) -> None:
    bucket = fresh_database(influxdb_url)
    registry = CollectorRegistry()
    settings = HistorySettings(url=influxdb_url, bucket=bucket, flush_s=0.05, sample_s=1e-4)
    history = InfluxHistory(TOPO, settings, registry=registry).start()
    clock, sink = ManualClock(T0), ListSink()
    svc = service(history, sink, clock)
    try:
        for i, site in enumerate(["s1", "s1", "s2", "s3"]):
            assert svc.handle(started(i, site, T0)) is None
        clock.advance(60)
        for i, (site, kw) in enumerate([("s1", 7.0), ("s1", 4.0), ("s2", 9.5), ("s3", 11.0)]):
            assert svc.handle(metered(i, site, clock.now(), kw)) is None
        assert svc.handle(feeder_limit(25.0, clock.now())) is None
        svc.tick(force_replan=True)
        clock.advance(1)
        assert svc.handle(freq(clock.now(), 49.95)) is None
        sampled_at = clock.now()
        assert history.sample(svc, force=True)
        expected_sp: dict[str, float] = {}
        latest = {b.csms_id: b for b in sink.batches}
        site_of = {f"e{i}": s for i, s in enumerate(["s1", "s1", "s2", "s3"])}
        for b in latest.values():
            for e, kw in zip(b.evse_ids, b.power_kw, strict=True):
                expected_sp[site_of[e]] = expected_sp.get(site_of[e], 0.0) + kw
        wait_until(
            lambda: history.queued == 0 and history.written > 0, timeout_s=30, what="written"
        )
    finally:
        history.close()
        svc.close()
    assert history.dropped == 0 and history.up
    assert metric(registry, "gridflex_history_points_written_total") == history.written

    with InfluxDBClient(url=influxdb_url, token="", org="-") as client:
        q = client.query_api()

        def rows(measurement: str) -> list[dict[str, Any]]:
            flux = (
                f'from(bucket: "{bucket}/autogen") |> range(start: 2026-01-01T00:00:00Z) '
                f'|> filter(fn: (r) => r._measurement == "{measurement}")'
            )
            return [r.values for t in q.query(flux) for r in t.records]

        power = {(r["level"], r["id"], r["_field"]): r for r in rows("power")}
        assert power[("site", "s1", "measured_kw")]["_value"] == pytest.approx(11.0)
        assert power[("feeder", "f1", "measured_kw")]["_value"] == pytest.approx(20.5)
        assert power[("fleet", "fleet", "measured_kw")]["_value"] == pytest.approx(31.5)
        assert power[("feeder", "f1", "cap_kw")]["_value"] == pytest.approx(25.0)  # the DSO limit
        assert power[("feeder", "f2", "cap_kw")]["_value"] == pytest.approx(80.0)
        assert ("feeder", "f1", "headroom_kw") in power
        for site in ("s1", "s2", "s3"):
            got = power[("site", site, "setpoint_kw")]["_value"]
            assert got == pytest.approx(expected_sp.get(site, 0.0))
        sp_f1 = power[("feeder", "f1", "setpoint_kw")]["_value"]
        assert sp_f1 == pytest.approx(expected_sp.get("s1", 0.0) + expected_sp.get("s2", 0.0))
        assert sp_f1 <= 25.0 + 1e-6  # the limit in force holds in what was written
        assert power[("site", "s1", "measured_kw")]["_time"] == sampled_at

        plan = {r["_field"]: r for r in rows("plan")}
        assert plan["solve_s"]["_value"] >= 0.0 and plan["sessions"]["_value"] == 4
        assert plan["fallback"]["_value"] in (0, 1)
        assert rows("plan_objective")
        activation = {
            r["_field"]: r["_value"] for r in rows("activation") if r["_time"] == sampled_at
        }
        assert activation["deviation_kw"] != 0.0  # 49.95 Hz: FCR asks the fleet to move
        assert activation["batches"] == 2
        pool = {r["_field"]: r for r in rows("pool") if r["_time"] == sampled_at}
        assert pool["hz"]["_value"] == pytest.approx(49.95) and pool["hz"]["signal"] == "frequency"
        assert pool["deviation_kw"]["_value"] == pytest.approx(activation["deviation_kw"])
        assert {"reserve_kw", "baseline_kw", "setpoint_kw"} <= set(pool)
        limits = [r for r in rows("limit") if r["_field"] == "limit_kw"]
        assert [(r["action"], r["target_id"], r["_value"]) for r in limits] == [
            ("applied", "f1", 25.0)
        ]


# ---------------------------------------------------------------------------- database down


def closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return f"http://127.0.0.1:{port}"


def test_database_down_drops_oldest_with_a_counter_and_the_service_goes_on() -> None:
    registry = CollectorRegistry()
    settings = HistorySettings(
        url=closed_port_url(), queue_size=50, batch_size=10, flush_s=0.02, timeout_s=0.5
    )
    history = InfluxHistory(TOPO, settings, registry=registry).start()
    clock, sink = ManualClock(T0), ListSink()
    svc = service(history, sink, clock)
    try:
        for i, site in enumerate(["s1", "s2", "s3"]):
            svc.handle(started(i, site, T0))
        for k in range(400):  # 400 fast-loop runs, each one event, with the database down
            clock.advance(1)
            svc.handle(freq(clock.now(), 50.0))
            history.sample(svc, force=k % 10 == 0)
        assert svc.counters["dispatches"] >= 400  # the service went on
        assert len(sink.batches) >= 400 * 2
        wait_until(lambda: history.write_errors > 0, timeout_s=30, what="a failed write")
        assert history.queued <= 50
        assert history.dropped >= 400 + 40 - 50 - 10  # at most the queue and one batch held
        assert not history.up
        text = generate_latest(registry).decode()
        assert f"gridflex_history_dropped_total {float(history.dropped)}" in text
        assert metric(registry, "gridflex_history_up") == 0.0
    finally:
        history.close(timeout_s=5)
        svc.close()


class FlakyWriter:
    """Fails while ``down`` is set, else keeps what it is given."""

    def __init__(self) -> None:
        self.down = threading.Event()
        self.points: list[Any] = []

    def write(self, points: Sequence[Any]) -> None:
        if self.down.is_set():
            raise ConnectionError("down")
        self.points.extend(points)

    def close(self) -> None:
        return None


def event(k: int) -> BatchesPublished:
    return BatchesPublished(at=T0 + timedelta(seconds=k), batches=k, deviation_kw=0.0, elapsed_s=0)


def test_after_an_outage_the_newest_points_arrive_and_the_lost_ones_are_counted() -> None:
    writer = FlakyWriter()
    writer.down.set()
    settings = HistorySettings(url="http://unused", queue_size=20, batch_size=5, flush_s=0.01)
    history = InfluxHistory(TOPO, settings, writer=writer).start()
    try:
        for k in range(100):
            history.emit(event(k))
        wait_until(lambda: history.write_errors > 0, timeout_s=10, what="a failed write")
        writer.down.clear()
        wait_until(lambda: history.queued == 0 and history.up, timeout_s=30, what="drained")
    finally:
        history.close()
    got = list(writer.points)  # line protocol
    kept = [int(line.split("batches=")[1].split("i")[0]) for line in got]
    assert kept == sorted(kept) and kept[-1] == 99  # oldest dropped, newest kept, in order
    assert len(kept) + history.dropped == 100  # every event written or counted


@given(n=st.integers(0, 300), size=st.integers(1, 50))
def test_the_queue_keeps_the_newest_and_counts_every_drop(n: int, size: int) -> None:
    settings = HistorySettings(url="http://unused", queue_size=size, batch_size=size)
    history = InfluxHistory(TOPO, settings)  # not started: nothing is taken off the queue
    for k in range(n):
        history.emit(event(k))
    assert history.queued == min(n, size)
    assert history.dropped == max(0, n - size)
    lines = [points_of(e, TOPO, {})[0].to_line_protocol() for e in history._q]
    assert [int(x.split("batches=")[1].split("i")[0]) for x in lines] == list(
        range(max(0, n - size), n)
    )


@dataclass(frozen=True, kw_only=True)
class PoolSecond:  # shaped like the markets' 1 s record event
    at: datetime
    pool: str
    baseline_kw: float
    measured_kw: float
    requested_kw: float


def test_a_registered_event_type_is_written_and_a_gap_stays_a_gap() -> None:
    register_event(PoolSecond, dataclass_points("pool"))
    e = PoolSecond(
        at=T0, pool="fcr-1", baseline_kw=120.0, measured_kw=float("nan"), requested_kw=-4.5
    )
    (point,) = points_of(e, TOPO, {})
    line = point.to_line_protocol()
    assert line.startswith("pool,pool=fcr-1 ")
    assert "baseline_kw=120" in line and "requested_kw=-4.5" in line
    assert "measured_kw" not in line  # NaN is a gap: not written, never filled
    assert line.endswith(str(int(T0.timestamp() * 1e9)))


def test_a_sample_without_a_teed_sink_writes_no_setpoint_sums() -> None:
    sample = Sample(
        at=T0,
        measured_kw={"s1": 3.0, "f1": 3.0, "fleet": 3.0},
        site_cap_kw={"s1": 40.0},
        feeder_cap_kw={"f1": 60.0},
        fleet_cap_kw=float("inf"),
        headroom_kw={},
        batches=None,
        objective=None,
    )
    lines = [p.to_line_protocol() for p in points_of(sample, TOPO, {})]
    assert lines and not any("setpoint_kw" in x for x in lines)
    assert any(x.startswith("power,id=s1,level=site ") and "cap_kw=40" in x for x in lines)
    fleet = next(x for x in lines if "level=fleet" in x)
    assert "cap_kw" not in fleet  # an infinite cap is not a number InfluxDB takes


def test_close_writes_everything_queued_while_the_database_answers() -> None:
    writer = FlakyWriter()
    settings = HistorySettings(url="http://unused", queue_size=500, batch_size=7, flush_s=60)
    history = InfluxHistory(TOPO, settings, writer=writer).start()
    for k in range(300):
        history.emit(event(k))
    history.close()
    assert len(writer.points) == 300 and history.dropped == 0 and history.queued == 0


def test_the_tee_passes_every_batch_on_and_keeps_one_per_csms_per_quarter_sample() -> None:
    inner = ListSink()
    history = InfluxHistory(TOPO, HistorySettings(url="http://unused", sample_s=3600))
    tee = history.tee(inner)
    made = [
        SetpointBatch(
            csms_id=cs,
            seq=k,
            issued_at=T0,
            valid_until=T0 + timedelta(seconds=60),
            evse_ids=["e1"],
            power_kw=[float(k)],
            failsafe_kw=[0.0],
        )
        for k, cs in enumerate(["cs-a", "cs-a", "cs-b", "cs-a"])
    ]
    for b in made:
        tee.publish(b)
    assert inner.batches == made  # the inner sink gets everything
    assert history._latest == {"cs-a": made[0], "cs-b": made[2]}  # kept: first per 900 s


def test_a_pool_sample_without_a_measurement_leaves_a_gap() -> None:
    e = PoolSampled(
        at=T0,
        signal=AfrrRequest(ts=T0, setpoint_kw=-30.0),
        reserve_kw=100.0,
        baseline_kw=250.0,
        deviation_kw=-30.0,
        setpoint_kw=220.5,
    )
    (line,) = [p.to_line_protocol() for p in points_of(e, TOPO, {})]
    assert line.startswith("pool,signal=afrr ")
    assert "afrr_setpoint_kw=-30" in line and "setpoint_kw=220.5" in line
    assert "measured_kw" not in line
