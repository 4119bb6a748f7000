"""Fleet caps across replicas: default shares on assignment, the splitter's decisions."""

from __future__ import annotations

import dataclasses
import math
from datetime import timedelta

from adapters.ops.metrics import Metrics
from adapters.stream.fake import FakeTransport
from adapters.stream.fleet import SplitterState, demand_report, static_share_limits
from adapters.stream.runner import StreamRunner
from adapters.stream.topics import owned_topology
from aggregator.messages import DsoLimitCancel, DsoLimitMessage, encode
from aggregator.service.fleetsplit import SHARE_SOURCE, share_event_id
from aggregator.topology import Feeder, Site, Topology
from tests.adapters.stream.conftest import CONFIG, T0, TOPO, Cluster, cycles

FLEET = dataclasses.replace(TOPO, fleet_limit_kw=120.0)  # f1, f3: 100 kW each
THREE = Topology(
    (Feeder("a", 100.0), Feeder("b", 100.0), Feeder("c", 200.0)),
    (Site("sa", "a", 100.0), Site("sb", "b", 100.0), Site("sc", "c", 200.0)),
    fleet_limit_kw=200.0,
)


def fleet_replica(cluster: Cluster) -> StreamRunner:
    k = cluster.kafka
    transport = FakeTransport(
        cluster.broker, group_id=k.group_id, frequency_topic=k.frequency_topic
    )
    return StreamRunner(
        FLEET,
        CONFIG,
        k,
        clock=cluster.clock,
        metrics=Metrics(),
        make_service=cluster.make_service(),
        transport=transport,
    )


def feeder_caps(r: StreamRunner) -> dict[str, float]:
    svc = r.service
    assert svc is not None
    caps = svc.limits.caps_at(svc.clock.now())
    return {f.feeder_id: float(caps.feeder_kw[i]) for i, f in enumerate(svc.topology.feeders)}


def test_two_replicas_never_apply_the_whole_static_fleet_cap_each(cluster: Cluster) -> None:
    a, b = fleet_replica(cluster), fleet_replica(cluster)
    cycles(a, b)
    assert a.owned_feeders == ["f3"] and b.owned_feeders == ["f1"]
    for r in (a, b):
        assert r.service is not None and math.isinf(r.service.topology.fleet_limit_kw)
    assert feeder_caps(a) == {"f3": 60.0} and feeder_caps(b) == {"f1": 60.0}


def test_a_published_share_replaces_the_default_after_a_takeover(cluster: Cluster) -> None:
    share = DsoLimitMessage(
        ts=T0,
        event_id=share_event_id("static", "f1"),
        target_type="feeder",
        target_id="f1",
        start=T0 - timedelta(days=1),
        end=T0 + timedelta(days=1),
        limit_kw=90.0,
        source=SHARE_SOURCE,
    )
    cluster.send(cluster.topics.grid_signals, "f1", share)
    a = fleet_replica(cluster)
    cycles(a)
    assert feeder_caps(a) == {"f1": 90.0, "f3": 60.0}


def test_the_replica_reports_its_feeders_demand_on_the_control_topic(cluster: Cluster) -> None:
    cluster.start(1, "s1", max_kw=22.0)
    a = fleet_replica(cluster)
    cycles(a)
    reports = [m for m in cluster.broker.topics[cluster.kafka.fleet_control()][0]]
    assert reports, "no report"
    st = SplitterState(FLEET, floor_frac=0.2, stale_s=60)
    st.on_report(reports[-1].value)
    assert {f: kw for f, (_, kw) in st.demand.items()} == {"f1": 22.0, "f3": 0.0}


def test_static_shares_follow_the_ratings_and_none_without_a_cap() -> None:
    got = {m.target_id: m.limit_kw for m in static_share_limits(THREE, ["a", "c"], T0)}
    assert got == {"a": 50.0, "c": 100.0}
    assert static_share_limits(TOPO, ["f1"], T0) == []


def _echo(st: SplitterState, msgs: list[DsoLimitMessage], offset: int) -> int:
    """The splitter's own records read back from the topic (one partition here)."""
    for m in msgs:
        st.on_grid_signal(0, offset, encode(m))
        offset += 1
    return offset


def test_splitter_moves_the_cap_to_demand_decreases_before_increases() -> None:
    st = SplitterState(THREE, floor_frac=0.2, stale_s=60)
    st.on_report(demand_report({"a": 0.0, "b": 100.0, "c": 0.0}, "r1", T0))
    dec, inc = st.plan(T0)
    # floors (20 % of 50/50/100), b's demand above its floor, the spare 70 kW by rating
    assert {m.target_id: m.limit_kw for m in dec} == {"a": 27.5, "c": 55.0}
    assert {m.target_id for m in inc} == {"b"}  # only once the decreases are applied
    _echo(st, dec, 0)
    dec2, inc2 = st.plan(T0)
    assert dec2 == [] and {m.target_id: m.limit_kw for m in inc2} == {"b": 117.5}
    assert sum(st.current(st.windows(T0)[0]).values()) <= 200.0


def test_a_dso_fleet_limit_is_split_at_once_and_its_shares_cancelled_with_it() -> None:
    st = SplitterState(THREE, floor_frac=0.2, stale_s=60)
    lim = DsoLimitMessage(
        ts=T0,
        event_id="dso-1",
        target_type="fleet",
        target_id="fleet",
        start=T0 + timedelta(seconds=10),
        end=T0 + timedelta(hours=1),
        limit_kw=80.0,
    )
    st.on_grid_signal(1, 0, encode(lim))
    dec, _ = st.plan(T0)
    window = {m.target_id: m.limit_kw for m in dec if m.event_id.startswith("fleetshare:dso-1")}
    assert window == {"a": 20.0, "b": 20.0, "c": 40.0}  # by rating: nobody reported
    assert all(m.start == lim.start and m.end == lim.end for m in dec)
    _echo(st, dec, 0)
    st.on_grid_signal(1, 1, encode(DsoLimitCancel(ts=T0, event_id="dso-1")))
    cancels = st.orphans(T0)
    assert {c.event_id for c in cancels} == {share_event_id("dso-1", f) for f in "abc"}


def test_each_replica_holds_its_feeders_part_of_the_fleet_reserve() -> None:
    """The reserve a replica's service holds is the fleet's award times its feeders' part
    of the rating: two replicas owning one feeder each hold half each, one owning both
    holds it all."""
    runner, _ = Cluster().replica()
    runner.config = dataclasses.replace(runner.config, reserve_kw=100.0)
    first, second = (
        runner.config_for(owned_topology(TOPO, 6, owned)) for owned in ({0, 1, 2}, {3, 4, 5})
    )
    assert (first.reserve_kw, second.reserve_kw) == (50.0, 50.0)  # f3 / f1, equal ratings
    assert runner.config_for(owned_topology(TOPO, 6, set(range(6)))).reserve_kw == 100.0
