"""Fleet caps across 3 replicas (issue 13 item 3): Σ over all replicas ≤ the fleet cap.

Three real ``gridflex serve`` processes in one group share six feeders; the topology has a
static fleet cap below what the fleet wants, three feeders charge hard and three idle (so
the splitter moves the cap to the busy ones, above their default share), a DSO fleet limit
is posted with its window opening a few seconds later, and the replica owning the busiest
feeder is SIGKILLed inside the window. The independent
:class:`~tests.integration.checker.SetpointChecker` replays every batch as the CSMSs would
and checks, at every 100 ms and every input change, that Σ setpoints in force and Σ
failsafe values in force over ALL CSMSs stay ≤ the fleet cap in force (static, then the DSO
window's) — and every site and feeder cap.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.dso.intake import LimitIntake
from aggregator.limits import DsoLimit, TargetType
from aggregator.messages import DsoLimitMessage
from aggregator.topology import Feeder, Site, Topology
from tests.conftest import wait_until
from tests.integration.checker import CapModel, Limit, SetpointChecker
from tests.integration.streaming import (
    Replica,
    Streams,
    answer,
    charge_every_evse,
    feeders_settled,
    now,
    owned_feeders,
    send,
    write_grid_topology,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

FEEDERS = tuple(f"f{i}" for i in range(1, 7))
BUSY = ("f1", "f2", "f3")
SITE_CAP_KW = 50.0
FEEDER_CAP_KW = 90.0
EVSE_MAX_KW = 11.0
FLEET_CAP_KW = 240.0  # default share 40 kW per feeder; the busy ones want 90 each
DSO_FLEET_KW = 150.0
SITES = {f"{f}s{k}": f for f in FEEDERS for k in range(2)}
EVSE_SITE = {f"{s}e{j}": s for s, f in SITES.items() for j in range(6 if f in BUSY else 1)}
CSMS = {f"csms-{f}" for f in FEEDERS}
MODEL = CapModel(
    site_feeder=SITES,
    site_cap_kw=dict.fromkeys(SITES, SITE_CAP_KW),
    feeder_cap_kw=dict.fromkeys(FEEDERS, FEEDER_CAP_KW),
    evse_site=EVSE_SITE,
    evse_max_kw=dict.fromkeys(EVSE_SITE, EVSE_MAX_KW),
    fleet_cap_kw=FLEET_CAP_KW,
)


def write_topology(path: Path) -> Path:
    return write_grid_topology(
        path, SITES, site_cap_kw=SITE_CAP_KW, feeder_cap_kw=FEEDER_CAP_KW, fleet_cap_kw=FLEET_CAP_KW
    )


def charge(streams: Streams) -> None:
    charge_every_evse(streams, EVSE_SITE, SITES, EVSE_MAX_KW)


def owned(replica: Replica) -> set[str]:
    return owned_feeders(replica)


def settled(live: list[Replica]) -> bool:
    return feeders_settled(live, FEEDERS)


def three_charging_replicas(
    streams: Streams,
    replicas: list[Replica],
    checker: SetpointChecker,
    tmp_path: Path,
    group: str,
    split_interval_s: float,
) -> tuple[list[Replica], datetime]:
    """Three ready replicas owning the six feeders, every EVSE charging, all CSMSs answered
    (``split_interval_s`` 0: no fleet splitter), and when the charging began."""
    topology = write_topology(tmp_path / "topology.yaml")
    env = {
        "GRIDFLEX_KAFKA__FLEET_CONTROL_TOPIC": streams.topic("fleet-control"),
        "GRIDFLEX_KAFKA__FLEET_REPORT_INTERVAL_S": "1",
        "GRIDFLEX_KAFKA__FLEET_SPLIT_INTERVAL_S": str(split_interval_s),
    }
    live = [Replica(streams, topology, group, tmp_path / f"{n}.log", extra_env=env) for n in "abc"]
    replicas += live
    for r in live:
        r.wait_ready()
    wait_until(lambda: settled(live), 90, "three replicas owning the six feeders")
    charge(streams)
    first = datetime.now(UTC)
    answer(streams, checker, CSMS, detail=lambda: live[0].tail(), timeout_s=60)
    return live, first


def fleet_limit(streams: Streams, opens_in_s: float, lasts_s: float) -> Limit:
    t = now()
    msg = DsoLimitMessage(
        ts=t,
        event_id="dso-fleet-1",
        target_type="fleet",
        target_id="fleet",
        start=t + timedelta(seconds=opens_in_s),
        end=t + timedelta(seconds=opens_in_s + lasts_s),
        limit_kw=DSO_FLEET_KW,
    )
    prod = streams.producer()
    send(prod, streams.topic("grid-signals"), "fleet", msg)
    prod.flush()
    prod.close()
    return Limit(
        event_id=msg.event_id,
        target_type="fleet",
        target_id="fleet",
        start=msg.start,
        end=msg.end,
        limit_kw=DSO_FLEET_KW,
    )


def test_three_replicas_hold_the_fleet_cap_through_a_dso_fleet_limit_and_a_sigkill(
    streams: Streams, replicas: list[Replica], checker: SetpointChecker, tmp_path: Path
) -> None:
    live, first = three_charging_replicas(streams, replicas, checker, tmp_path, "fleet", 1.0)

    def resplit() -> bool:  # the splitter moved the cap to the busy feeders
        answer(streams, checker, set())
        t = datetime.now(UTC)
        peak = checker.check(MODEL, [], t - timedelta(seconds=1), t).peak_kw
        return all(peak.get(f"feeder:{f}", 0.0) > 50.0 for f in BUSY)

    wait_until(resplit, 60, "the busy feeders above their default 40 kW share", interval_s=1.0)
    limit = fleet_limit(streams, opens_in_s=8.0, lasts_s=240.0)
    wait_until(lambda: datetime.now(UTC) >= limit.start + timedelta(seconds=2), 20, "window")
    victim = next(r for r in live if "f1" in owned(r))
    victim.kill()
    killed = datetime.now(UTC)
    live.remove(victim)

    def taken_over() -> bool:
        answer(streams, checker, set())
        recent = [b for b in checker.received() if b.received_at >= killed]
        return {b.csms_id for b in recent} >= CSMS

    wait_until(taken_over, 90, "the survivors publishing for every CSMS", interval_s=0.5)
    wait_until(lambda: settled(live), 60, "the survivors owning every feeder")
    answer(streams, checker, CSMS, hz=49.95, detail=lambda: live[0].tail())
    end = datetime.now(UTC)
    assert end < limit.end, "lengthen the window"
    report = checker.check(MODEL, [limit], first, end)
    assert report.ok, f"killed at {killed.isoformat()}\n{report.summary()}"
    inside = checker.check(MODEL, [limit], limit.start, end).peak_kw
    assert inside["fleet:fleet"] <= DSO_FLEET_KW + 1e-6, inside
    assert not checker.errors


def test_a_fleet_limit_at_short_notice_holds_from_its_start_through_the_intakes_shares(
    streams: Streams, replicas: list[Replica], checker: SetpointChecker, tmp_path: Path
) -> None:
    """No splitter at all (interval 0): a DSO fleet limit posted through the one intake
    8 s before its window opens holds across the three replicas from its first instant,
    because the intake publishes every feeder's share with it (keyed by the feeder, so
    each owner applies its share like any feeder limit). Before the window the fleet draws
    more than the limit, so the limit binds."""
    live, first = three_charging_replicas(streams, replicas, checker, tmp_path, "fleet-2", 0.0)
    prod = streams.producer()
    intake = LimitIntake(
        Topology(
            tuple(Feeder(f, FEEDER_CAP_KW) for f in FEEDERS),
            tuple(Site(s, f, SITE_CAP_KW, csms_id=f"csms-{f}") for s, f in SITES.items()),
            FLEET_CAP_KW,
        ),
        lambda key, msg: send(prod, streams.topic("grid-signals"), key, msg),
        fleet_shares=True,
    )
    t = datetime.now(UTC)
    entry, _ = intake.submit(
        DsoLimit(
            event_id="dso-fleet-now",
            target_type=TargetType.FLEET,
            target_id="fleet",
            start=t + timedelta(seconds=8),  # room for a busy machine: no splitter runs
            end=t + timedelta(seconds=240),
            limit_kw=DSO_FLEET_KW,
            source="rest:dso-a",
        )
    )
    prod.flush()
    prod.close()
    limit = Limit(
        event_id=entry.limit.event_id,
        target_type="fleet",
        target_id="fleet",
        start=entry.limit.start,
        end=entry.limit.end,
        limit_kw=DSO_FLEET_KW,
    )
    wait_until(lambda: datetime.now(UTC) >= limit.start + timedelta(seconds=5), 30, "window")
    answer(streams, checker, CSMS, hz=49.95, detail=lambda: live[0].tail())
    end = datetime.now(UTC)
    before = checker.check(MODEL, [], first, limit.start).peak_kw
    assert before["fleet:fleet"] > DSO_FLEET_KW, before  # the limit binds
    report = checker.check(MODEL, [limit], first, end)
    assert report.ok, report.summary()
    inside = checker.check(MODEL, [limit], limit.start, end).peak_kw
    assert inside["fleet:fleet"] <= DSO_FLEET_KW + 1e-6, inside
    assert not checker.errors
