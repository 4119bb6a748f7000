"""A DSO fleet limit's per-feeder shares go out with it from the intake (Kafka mode)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.dso.intake import LimitIntake
from aggregator.limits import DsoLimit, TargetType
from aggregator.messages import DsoLimitCancel, DsoLimitMessage
from aggregator.service.fleetsplit import SHARE_SOURCE, share_event_id
from aggregator.topology import Feeder, Site, Topology

T0 = datetime(2026, 1, 14, 12, tzinfo=UTC)
TOPO = Topology(
    (Feeder("f1", 600.0), Feeder("f2", 400.0)),
    (Site("s1", "f1", 150.0), Site("s2", "f2", 100.0)),
)
Sent = list[tuple[str, DsoLimitMessage | DsoLimitCancel]]


def fleet(kw: float, event_id: str = "fl1") -> DsoLimit:
    return DsoLimit(
        event_id=event_id,
        target_type=TargetType.FLEET,
        target_id="fleet",
        start=T0 + timedelta(seconds=2),
        end=T0 + timedelta(hours=2),
        limit_kw=kw,
        source="rest:dso-a",
    )


def rig(shares: bool = True) -> tuple[LimitIntake, Sent]:
    sent: Sent = []
    return LimitIntake(
        TOPO, lambda k, m: sent.append((k, m)), clock=lambda: T0, fleet_shares=shares
    ), sent


def splitter_share(feeder: str, kw: float) -> DsoLimitMessage:
    """A share of ``fl1`` as the fleet splitter publishes it (read back from the topic)."""
    return DsoLimitMessage(
        ts=T0,
        event_id=share_event_id("fl1", feeder),
        target_type="feeder",
        target_id=feeder,
        start=T0,
        end=T0 + timedelta(hours=2),
        limit_kw=kw,
        source=SHARE_SOURCE,
    )


def share_of(sent: Sent) -> dict[str, float]:
    return {
        k: m.limit_kw
        for k, m in sent
        if isinstance(m, DsoLimitMessage) and m.source == SHARE_SOURCE
    }


def test_a_fleet_limit_goes_out_with_each_feeders_share_keyed_by_the_feeder() -> None:
    intake, sent = rig()
    intake.submit(fleet(500.0))
    assert sent[0][0] == "fleet" and sent[0][1].event_id == "fl1"  # the limit first
    assert share_of(sent) == {"f1": 300.0, "f2": 200.0}  # by rating, Σ = the cap
    for key, m in sent[1:]:
        assert isinstance(m, DsoLimitMessage)
        assert (m.target_type, m.target_id, m.event_id) == (
            "feeder",
            key,
            share_event_id("fl1", key),
        )
        assert (m.start, m.end) == (T0 + timedelta(seconds=2), T0 + timedelta(hours=2))
    assert [e.limit.event_id for e in intake.book.entries()] == ["fl1"]  # shares not listed


def test_embedded_mode_and_other_targets_publish_no_shares() -> None:
    intake, sent = rig(shares=False)
    intake.submit(fleet(500.0))
    assert [k for k, _ in sent] == ["fleet"]
    intake, sent = rig()
    intake.submit(replace(fleet(50.0), target_type=TargetType.FEEDER, target_id="f1"))
    assert [k for k, _ in sent] == ["f1"]


def test_a_revision_never_raises_a_share_the_splitter_lowered_and_cancel_withdraws() -> None:
    intake, sent = rig()
    intake.submit(fleet(500.0))
    # the splitter moved the cap by demand: f1 down to 100, f2 up to 400 (read back)
    for feeder, kw in (("f1", 100.0), ("f2", 400.0)):
        intake.observe(splitter_share(feeder, kw))
    sent.clear()
    intake.submit(fleet(400.0))  # tighter: defaults 240 / 160
    assert share_of(sent) == {"f1": 100.0, "f2": 160.0}  # min(known, default): no raise
    sent.clear()
    intake.submit(fleet(900.0))  # looser: the splitter raises, acknowledged, not the intake
    assert share_of(sent) == {"f1": 100.0, "f2": 160.0}
    sent.clear()
    intake.cancel("fl1", source="rest:dso-a")
    assert sent[0] == ("fleet", sent[0][1]) and isinstance(sent[0][1], DsoLimitCancel)
    cancels = {(k, m.event_id) for k, m in sent[1:] if isinstance(m, DsoLimitCancel)}
    assert cancels == {("f1", share_event_id("fl1", "f1")), ("f2", share_event_id("fl1", "f2"))}


def test_a_long_event_id_gives_share_ids_a_record_accepts() -> None:
    intake, sent = rig()
    long_id = "dso-a:" + "x" * 120
    intake.submit(fleet(500.0, event_id=long_id))
    ids = [m.event_id for _, m in sent[1:]]
    assert len(ids) == 2 and all(len(i) <= 128 for i in ids)
    assert ids == [share_event_id(long_id, "f1"), share_event_id(long_id, "f2")]


@settings(max_examples=200, deadline=None)
@given(
    first=st.floats(0.0, 2000.0),
    moved=st.lists(st.tuples(st.sampled_from(["f1", "f2"]), st.floats(0.0, 1000.0)), max_size=4),
    revised=st.floats(0.0, 2000.0),
)
def test_every_share_published_sums_within_the_new_cap_and_never_rises(
    first: float, moved: list[tuple[str, float]], revised: float
) -> None:
    intake, sent = rig()
    intake.submit(fleet(first))
    known = share_of(sent)
    for feeder, kw in moved:  # the splitter's shares, read back
        known[feeder] = kw
        intake.observe(splitter_share(feeder, kw))
    sent.clear()
    intake.submit(fleet(revised))
    new = share_of(sent)
    assert sum(new.values()) <= revised + 1e-6
    assert all(new[f] <= known[f] + 1e-9 for f in new)
