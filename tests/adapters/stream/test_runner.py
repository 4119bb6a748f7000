"""The stream runner on the fake transport: ordering, takeover, dead letters, leases."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from adapters.stream.fake import FakeTransport
from adapters.stream.gate import GatedSink
from adapters.stream.transport import Message, TopicPartition
from aggregator.messages import SetpointBatch
from tests.adapters.stream.conftest import Cluster, cycles

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_commit_happens_only_after_the_effects_are_flushed(cluster: Cluster) -> None:
    runner, t = cluster.replica()
    cycles(runner)
    for i in range(4):
        cluster.start(i, "s1" if i % 2 else "s3")
    cluster.raw(cluster.topics.telemetry, "f1", b"{not json")
    cycles(runner)
    for i in range(4):
        cluster.meter(i, "s1" if i % 2 else "s3", 1.0 + i)
    cycles(runner)
    log = [e for e in cluster.broker.log if e.client == t.client]
    commits = [i for i, e in enumerate(log) if e.kind == "commit"]
    assert commits, "the runner never committed"
    for i in commits:
        assert log[i].unflushed == 0, f"commit with unflushed records: {log[i]}"
        last_produce = max((j for j in range(i) if log[j].kind == "produce"), default=-1)
        last_flush = max((j for j in range(i) if log[j].kind == "flush"), default=-1)
        assert last_flush > last_produce, "a commit followed a produce without a flush"
    # the dead letter and the session states were in the broker before their offsets
    assert len(cluster.broker.records(cluster.topics.deadletter)) == 1
    assert {m.key for m in cluster.broker.records(cluster.topics.state)} == {
        f"e{i}".encode() for i in range(4)
    }


def test_meter_values_are_coalesced_and_commits_wait_for_their_state(cluster: Cluster) -> None:
    runner, _ = cluster.replica()
    cycles(runner)
    cluster.start(1, "s1")
    cycles(runner)
    starts = len(cluster.broker.records(cluster.topics.state))
    assert starts == 1  # a start is written at once
    for k in range(5):
        cluster.meter(1, "s1", 1.0 + k)
    cycles(runner)
    # within the 10 s interval: no write per meter value, and no commit past the first one
    assert len(cluster.broker.records(cluster.topics.state)) == 1
    tel = TopicPartition(cluster.topics.telemetry, 3)
    first_meter = 1  # offset of the first meter value in f1's partition
    assert cluster.broker.committed("g")[tel] == first_meter
    runner.close()  # shutdown writes what is pending, then commits everything
    states = cluster.broker.records(cluster.topics.state)
    assert len(states) == 2 and b'"energy_kwh":5.0' in (states[-1].value or b"")
    assert cluster.broker.committed("g")[tel] == 6


def test_sigkill_loses_no_telemetry_state_plus_replay_rebuilds_it(cluster: Cluster) -> None:
    a, ta = cluster.replica()
    cycles(a)
    for i in range(3):
        cluster.start(i, "s1")
    cycles(a)
    for i in range(3):
        cluster.meter(i, "s1", 7.0 + i)  # coalesced: not yet in the state topic
    cycles(a)
    ta.kill()
    b, _ = cluster.replica()
    cycles(b)
    assert b.service is not None
    energy = {
        e: b.service.fleet.session_state(e).energy_kwh  # type: ignore[union-attr]
        for e in ("e0", "e1", "e2")
    }
    assert energy == {"e0": 7.0, "e1": 8.0, "e2": 9.0}


def test_rebalance_moves_feeders_between_replicas(cluster: Cluster) -> None:
    a, _ = cluster.replica()
    cycles(a)
    assert sorted(a.owned_feeders) == ["f1", "f3"]
    b, _ = cluster.replica()
    cycles(a, b)
    assert a.owned_feeders == ["f3"] and b.owned_feeders == ["f1"]
    assert a.ready and b.ready
    b.close()
    cycles(a)
    assert sorted(a.owned_feeders) == ["f1", "f3"]


class SlowSignals(FakeTransport):
    """Returns grid signals one record per poll, after every telemetry record."""

    def poll(self, timeout_s: float, max_records: int) -> Sequence[Message]:
        return super().poll(timeout_s, 1)


def test_no_batch_for_a_feeder_before_its_grid_signals_are_read(cluster: Cluster) -> None:
    for i in range(6):
        cluster.start(i, "s1", max_kw=22.0)  # 132 kW wanted on f1
    for k in range(3):  # older limits first: the one in force is read last
        cluster.limit("f1", 100.0 - k, event_id=f"old-{k}")
    cluster.limit("f1", 30.0, event_id="cut")
    runner, _ = cluster.replica(SlowSignals)
    runner.tick_s = 0.0  # tick every cycle: without the gate, batches would go out early
    published_before_caught_up = 0
    for _ in range(30):
        before = len(cluster.batches())
        caught_up = runner.gate.is_open
        runner.poll_once(0.0)
        if not caught_up and runner.gate.is_open:
            break
        published_before_caught_up += len(cluster.batches()) - before
    assert runner.gate.is_open, "never caught up"
    assert published_before_caught_up == 0
    assert runner.gate.dropped > 0  # the service did try: the gate held it
    f1 = [b for b in cluster.batches() if b.csms_id == "csms-1"]
    assert f1, "caught up but published nothing at once"
    for b in f1:
        assert sum(b.power_kw) <= 30.0 + 1e-6
        assert sum(b.failsafe_kw) <= 30.0 + 1e-6


def test_bad_records_are_dead_lettered_with_reasons_and_the_stream_goes_on(
    cluster: Cluster,
) -> None:
    runner, _ = cluster.replica()
    cycles(runner)
    tel = cluster.topics.telemetry
    cluster.raw(tel, "f1", b"{this is not json")
    cluster.raw(tel, "f1", b'{"v": 1, "type": "meter_value", "evse_id": "e01"}')
    cluster.raw(cluster.topics.grid_signals, "f1", b'{"v": 1, "type": "nonsense"}')
    cluster.start(1, "s1")
    cluster.start(2, "s3")
    cycles(runner)
    dead = cluster.broker.records(cluster.topics.deadletter)
    codes = [dict(m.headers)["reason-code"] for m in dead]
    assert codes == [b"invalid", b"invalid", b"invalid"]
    assert [dict(m.headers)["source-topic"] for m in dead] == [
        tel.encode(),
        tel.encode(),
        cluster.topics.grid_signals.encode(),
    ]
    assert any(b"json" in dict(m.headers)["reason"].lower() for m in dead)
    assert runner.service is not None
    assert {"e1", "e2"} <= set(runner.service.fleet.slot_of)
    ends = {TopicPartition(tel, p): len(part) for p, part in enumerate(cluster.broker.topics[tel])}
    committed = cluster.broker.committed("g")
    assert all(committed.get(tp, 0) == n for tp, n in ends.items() if n)


def test_leases_in_force_are_seeded_after_a_takeover(cluster: Cluster) -> None:
    a, ta = cluster.replica()
    cycles(a)
    cluster.start(1, "s1")
    cluster.start(2, "s1")
    cycles(a)
    assert a.service is not None
    a.service.dispatch(0.0)  # a batch naming e1 and e2 goes out
    cycles(a)
    named = [b for b in cluster.batches() if b.csms_id == "csms-1"]
    assert named and set(named[-1].evse_ids) == {"e1", "e2"}
    cluster.advance(5)
    cluster.end(1, "s1", 3.0)  # e1 ends; its lease (120 s) is still in force
    cycles(a)
    ta.kill()
    cluster.advance(5)
    b, _ = cluster.replica()
    cycles(b)
    assert b.gate.is_open and b.service is not None
    mine = [m for m in cluster.batches() if m.csms_id == "csms-1"][len(named) :]
    assert mine, "the new owner published nothing"
    first = mine[-1]
    power = dict(zip(first.evse_ids, first.power_kw, strict=True))
    assert "e1" in power and power["e1"] == 0.0  # named at 0 kW until its old lease expires


def test_a_lapsed_lease_is_seeded_too_its_failsafe_value_still_holds(cluster: Cluster) -> None:
    a, ta = cluster.replica()
    cycles(a)
    cluster.start(1, "s1")
    cluster.start(2, "s1")
    cycles(a)
    assert a.service is not None
    a.service.dispatch(0.0)
    cycles(a)
    old = [b for b in cluster.batches() if b.csms_id == "csms-1"]
    assert old and "e1" in old[-1].evse_ids and old[-1].failsafe_kw[0] > 0
    cluster.advance(5)
    cluster.end(1, "s1", 3.0)
    cycles(a)
    ta.kill()
    cluster.advance(300)  # the old lease lapsed: e1 now holds its failsafe value at the CSMS
    b, _ = cluster.replica()
    cycles(b)
    assert b.gate.is_open and b.service is not None
    mine = [m for m in cluster.batches() if m.csms_id == "csms-1"][len(old) :]
    assert mine, "the new owner published nothing"
    assert all(m.seq > old[-1].seq for m in mine)
    first = dict(
        zip(mine[0].evse_ids, zip(mine[0].power_kw, mine[0].failsafe_kw, strict=True), strict=True)
    )
    assert first.get("e1") == (0.0, 0.0)  # named at 0 kW, failsafe 0: the old failsafe ends


def test_a_closed_gate_says_it_dropped_the_batch() -> None:
    kept: list[SetpointBatch] = []

    class Sink:
        def publish(self, batch: SetpointBatch) -> None:
            kept.append(batch)

    gate = GatedSink(Sink())
    batch = SetpointBatch.model_construct(
        csms_id="c",
        seq=1,
        issued_at=T0,
        valid_until=T0,
        source_ts=None,
        evse_ids=["e1"],
        power_kw=[5.0],
        failsafe_kw=[4.2],
    )
    assert gate.publish(batch) is False and kept == [] and gate.dropped == 1
    gate.open()
    assert gate.publish(batch) is True and kept == [batch]


def test_an_idle_replica_blocks_in_the_frequency_poll(cluster: Cluster) -> None:
    runner, t = cluster.replica(poll_timeout_s=0.15)
    seen: list[float] = []
    original = t.poll_frequency

    def spy(timeout_s: float) -> Sequence[Message]:
        seen.append(timeout_s)
        return original(timeout_s)

    t.poll_frequency = spy  # type: ignore[method-assign]
    runner.poll_once()
    runner.poll_once()
    cluster.start(1, "s1")
    runner.poll_once()  # busy: consumed a record
    runner.poll_once()  # so this one does not block
    runner.poll_once()
    assert seen == [0.15, 0.15, 0.15, 0.0, 0.15]


def test_catchup_slower_than_the_leases_publishes_failsafe_safe_batches(
    cluster: Cluster,
) -> None:
    for i in range(4):
        cluster.start(i, "s1", max_kw=22.0)
    cluster.limit("f1", 40.0)

    class Stuck(FakeTransport):
        def position(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
            return dict.fromkeys(tps, 0)  # never reaches the end offsets

    runner, _ = cluster.replica(Stuck)
    runner.tick_s = 0.0
    cycles(runner)
    assert not runner.gate.is_open and not cluster.batches()
    runner.catchup_deadline = 0.0  # the leases in force run out
    cycles(runner)
    assert runner.gate.failsafe_only and not runner.ready
    out = cluster.batches()
    assert out
    for b in out:
        assert all(p <= f + 1e-9 for p, f in zip(b.power_kw, b.failsafe_kw, strict=True))


def test_a_feeder_moved_by_a_rebalance_is_published_only_under_its_limit(
    cluster: Cluster,
) -> None:
    a, _ = cluster.replica()
    a.tick_s = 0.0
    for i in range(6):
        cluster.start(i, "s1", max_kw=22.0)  # f1 wants 132 kW
        cluster.start(10 + i, "s3", max_kw=22.0)
    cycles(a)
    cluster.limit("f1", 30.0)
    cycles(a)
    seen = len([x for x in cluster.batches() if x.csms_id == "csms-1"])
    cluster.advance(2.0)
    for i in range(6, 9):  # read by the new owner before it reaches the limit
        cluster.start(i, "s1", max_kw=22.0)
    b, tb = cluster.replica()
    b.tick_s = 0.0
    original = tb.poll  # B reads one record per poll: its catch-up spans several cycles
    tb.poll = lambda timeout_s, max_records: original(timeout_s, 1)  # type: ignore[method-assign]
    cycles(a, b, n=40)
    assert a.owned_feeders == ["f3"] and b.owned_feeders == ["f1"]
    f1 = [x for x in cluster.batches() if x.csms_id == "csms-1"][seen:]
    assert f1, "the new owner of f1 published nothing"
    for x in f1:  # every batch for f1 after the move: within the DSO limit
        assert sum(x.power_kw) <= 30.0 + 1e-6 and sum(x.failsafe_kw) <= 30.0 + 1e-6
    seqs = [x.seq for x in cluster.batches() if x.csms_id == "csms-1"]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # the CSMS drops none


def test_a_second_assignment_of_the_same_partitions_loses_no_session(cluster: Cluster) -> None:
    runner, _ = cluster.replica()
    for i in range(20):
        cluster.start(i, "s1" if i % 2 else "s3")
    for i in range(20):
        cluster.meter(i, "s1" if i % 2 else "s3", 1.0)  # coalesced: held in the writer
    cycles(runner, n=1)
    cluster.broker.rebalance("g")  # e.g. a topic's metadata changed: same partitions again
    for i in range(20):
        cluster.meter(i, "s1" if i % 2 else "s3", 2.0)
    cycles(runner)
    assert cluster.broker.records(cluster.topics.deadletter) == []
    assert runner.service is not None
    for i in range(20):
        st = runner.service.fleet.session_state(f"e{i}")
        assert st is not None and st.energy_kwh == 2.0


class AssignsTwice(FakeTransport):
    """A client that re-delivers an assignment without revoking first and keeps its
    positions (no rewind to the committed offsets)."""

    def reassign(self) -> None:
        assert self._on_assign is not None
        self._on_assign(list(self._assigned))


def test_an_assignment_without_a_revocation_loses_no_session(cluster: Cluster) -> None:
    runner, t = cluster.replica(AssignsTwice)
    for i in range(20):
        cluster.start(i, "s1" if i % 2 else "s3")
    cycles(runner, n=1)
    for i in range(20):
        cluster.meter(i, "s1" if i % 2 else "s3", 1.0)  # coalesced: held in the writer
    cycles(runner, n=1)
    assert isinstance(t, AssignsTwice)
    t.reassign()
    cycles(runner)
    assert cluster.broker.records(cluster.topics.deadletter) == []
    assert runner.service is not None
    for i in range(20):  # the held meter values were written before the rebuild
        st = runner.service.fleet.session_state(f"e{i}")
        assert st is not None and st.energy_kwh == 1.0, (i, st)
