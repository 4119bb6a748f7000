"""The independent checker itself: it must catch what it is there to catch (no Kafka)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.integration.checker import Batch, CapModel, Limit, check_batches

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
MODEL = CapModel(
    site_feeder={"s1": "f1", "s2": "f1"},
    site_cap_kw={"s1": 40.0, "s2": 40.0},
    feeder_cap_kw={"f1": 60.0},
    evse_site={"a": "s1", "b": "s1", "c": "s2"},
    evse_max_kw={"a": 22.0, "b": 22.0, "c": 22.0},
)


def s(x: float) -> datetime:
    return T0 + timedelta(seconds=x)


def batch(
    at: float, seq: int, evses: dict[str, tuple[float, float]], valid_s: float, csms: str = "c1"
) -> Batch:
    return Batch(
        received_at=s(at),
        csms_id=csms,
        seq=seq,
        issued_at=s(at),
        valid_until=s(at + valid_s),
        evse_ids=tuple(evses),
        power_kw=tuple(p for p, _ in evses.values()),
        failsafe_kw=tuple(f for _, f in evses.values()),
    )


def test_batches_within_every_cap_pass() -> None:
    b = batch(0, 1, {"a": (20, 4.2), "b": (20, 4.2), "c": (20, 4.2)}, 120)
    report = check_batches([b], MODEL, [], s(0), s(10))
    assert report.ok, report.summary()
    assert report.peak_kw["feeder:f1"] == 60.0
    assert report.instants >= 101  # the 100 ms grid


def test_a_lease_issued_before_a_window_that_stays_in_force_is_a_breach() -> None:
    b = batch(0, 1, {"a": (20, 4.2), "b": (20, 4.2), "c": (20, 4.2)}, 120)
    cut = Limit(
        event_id="w", target_type="feeder", target_id="f1", start=s(5), end=s(60), limit_kw=30
    )
    report = check_batches([b], MODEL, [cut], s(0), s(10))
    first = report.breaches[0]
    assert (first.t, first.scope, first.target_id, first.kind) == (
        s(5),
        "feeder",
        "f1",
        "setpoints",
    )
    assert (first.sum_kw, first.cap_kw) == (60.0, 30.0)
    # a batch clipped to the window's start, then a compliant one 100 ms in: no breach
    clipped = batch(0, 1, {"a": (20, 4.2), "b": (20, 4.2), "c": (20, 4.2)}, 5)
    fresh = batch(5.1, 2, {"a": (10, 4.2), "b": (10, 4.2), "c": (10, 4.2)}, 120)
    assert check_batches([clipped, fresh], MODEL, [cut], s(0), s(10)).ok


def test_failsafe_values_count_after_the_lease_and_at_all_times() -> None:
    b = batch(0, 1, {"a": (10, 22), "b": (10, 22)}, 2)  # failsafe 44 > site cap 40
    report = check_batches([b], MODEL, [], s(0), s(4))
    kinds = {(x.kind, x.t >= s(2)) for x in report.breaches if x.scope == "site"}
    assert ("failsafe", False) in kinds  # the failsafe sum is checked while the lease holds
    assert ("setpoints", True) in kinds  # and is what is in force once it lapsed


def test_stale_seq_is_dropped_and_unnamed_evses_keep_their_lease() -> None:
    first = batch(0, 5, {"a": (20, 0), "b": (20, 0)}, 60)
    stale = batch(1, 4, {"a": (40, 0)}, 60)  # a CSMS drops it
    only_a = batch(2, 6, {"a": (20, 0)}, 60)  # b's lease from seq 5 is still in force
    c = batch(3, 1, {"c": (30, 0)}, 60, csms="c2")
    report = check_batches([first, stale, only_a, c], MODEL, [], s(0), s(5))
    assert report.stale_dropped == 1
    assert {(x.scope, x.target_id) for x in report.breaches} == {("feeder", "f1")}
    assert min(x.t for x in report.breaches) == s(3)
    assert report.breaches[0].sum_kw == 70.0


def test_cancelled_and_replaced_limits_and_unknown_evses() -> None:
    b = batch(0, 1, {"a": (20, 0), "c": (20, 0), "zz": (1, 0)}, 60)
    cut = Limit(
        event_id="w",
        target_type="feeder",
        target_id="f1",
        start=s(0),
        end=s(60),
        limit_kw=10,
        cancelled_at=s(1),
    )
    report = check_batches([b], MODEL, [cut], s(0), s(3))
    assert {x.t for x in report.breaches} <= {s(0) + timedelta(seconds=0.1 * i) for i in range(10)}
    assert report.unknown_evses == ("zz",) and not report.ok
    replaced = Limit(
        event_id="w", target_type="feeder", target_id="f1", start=s(0), end=s(60), limit_kw=50
    )
    assert not check_batches([b], MODEL, [cut, replaced], s(0), s(3)).breaches


def test_setpoints_outside_an_evse_range_are_reported() -> None:
    b = batch(0, 1, {"a": (30, 0)}, 60)  # a's max is 22 kW
    report = check_batches([b], MODEL, [], s(0), s(1))
    assert report.out_of_range and not report.ok
