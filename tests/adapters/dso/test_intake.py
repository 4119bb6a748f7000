"""The one DSO intake: validate once (codes and ids), key by feeder, publish, audit once,
and the book of limits in force that every source feeds."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.dso.audit import AuditLog, verify
from adapters.dso.intake import (
    EVENT_ID_TAKEN,
    LimitIntake,
    LimitsInForce,
    limit_issues,
)
from aggregator.errors import InvalidInput, TransientIO
from aggregator.limits import DsoLimit, TargetType
from aggregator.messages import DsoLimitCancel, DsoLimitMessage
from aggregator.topology import Feeder, Site, Topology

T0 = datetime(2026, 1, 14, 12, tzinfo=UTC)
TOPO = Topology(
    (Feeder("f1", 600.0), Feeder("f2", 400.0)),
    (Site("s1", "f1", 150.0), Site("s2", "f2", 100.0)),
)
Sent = list[tuple[str, DsoLimitMessage | DsoLimitCancel]]


def lim(**changes: object) -> DsoLimit:
    base = DsoLimit(
        event_id="e1",
        target_type=TargetType.SITE,
        target_id="s2",
        start=T0,
        end=T0 + timedelta(hours=2),
        limit_kw=40.0,
        source="rest:dso-a",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def intake(sent: Sent, audit: AuditLog | None = None) -> LimitIntake:
    return LimitIntake(TOPO, lambda k, m: sent.append((k, m)), audit=audit, clock=lambda: T0)


def test_a_limit_is_keyed_by_feeder_published_booked_and_audited_once(tmp_path: Path) -> None:
    sent: Sent = []
    with AuditLog(tmp_path / "a.jsonl", fsync=False) as audit:
        i = intake(sent, audit)
        entry, before = i.submit(lim())
        assert before is None and entry.key == "f2" and entry.received_at == T0
        revised, before = i.submit(lim(limit_kw=30.0))
        assert before == entry and revised.limit.limit_kw == 30.0
        assert i.cancel("e1", source="rest:dso-a") == revised
        assert i.cancel("e1", source="rest:dso-a") is None  # gone: nothing published
    assert [(k, type(m).__name__) for k, m in sent] == [
        ("f2", "DsoLimitMessage"),
        ("f2", "DsoLimitMessage"),
        ("f2", "DsoLimitCancel"),
    ]
    lines = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [(e["kind"], e["source"]) for e in lines] == [
        ("limit.received", "rest:dso-a"),
        ("limit.received", "rest:dso-a"),
        ("limit.cancelled", "rest:dso-a"),
    ]
    assert verify(tmp_path / "a.jsonl") == []
    assert len(i.book) == 0


def test_fleet_and_feeder_keys() -> None:
    sent: Sent = []
    i = intake(sent)
    i.submit(lim(event_id="a", target_type=TargetType.FEEDER, target_id="f1"))
    i.submit(lim(event_id="b", target_type=TargetType.FLEET, target_id="fleet"))
    assert [k for k, _ in sent] == ["f1", "fleet"]


def test_every_problem_has_a_code_and_the_event_id() -> None:
    bad = lim(
        event_id="x/y",
        target_id="nowhere",
        end=T0 - timedelta(hours=1),
        limit_kw=float("nan"),
    )
    issues = limit_issues(bad, TOPO, T0)
    assert {(i.field, i.code) for i in issues} == {
        ("event_id", "invalid_event_id"),
        ("end", "end_before_start"),
        ("limit_kw", "not_finite"),
        ("target_id", "unknown_site"),
    }
    assert all(i.ids == ("x/y",) for i in issues)
    over = limit_issues(lim(start=T0 - timedelta(hours=3), end=T0), TOPO, T0)
    assert [i.code for i in over] == ["window_over"]
    fleet = limit_issues(lim(target_type=TargetType.FLEET, target_id="f1"), TOPO, T0)
    assert [i.code for i in fleet] == ["fleet_has_no_target"]
    far = limit_issues(lim(end=datetime(2200, 1, 1, tzinfo=UTC)), TOPO, T0)
    assert [i.code for i in far] == ["time_out_of_range"]


def test_invalid_limits_are_neither_published_nor_booked() -> None:
    sent: Sent = []
    i = intake(sent)
    with pytest.raises(InvalidInput) as err:
        i.submit(lim(target_id="nowhere"))
    assert [x.code for x in err.value.issues] == ["unknown_site"]
    assert sent == [] and len(i.book) == 0


def test_one_source_cannot_revise_or_cancel_anothers_limit() -> None:
    sent: Sent = []
    i = intake(sent)
    i.submit(lim(source="openadr"))
    with pytest.raises(InvalidInput) as err:
        i.submit(lim(source="rest:dso-a"))
    assert [x.code for x in err.value.issues] == [EVENT_ID_TAKEN]
    with pytest.raises(InvalidInput):
        i.cancel("e1", source="rest:dso-a")
    assert len(sent) == 1 and i.book.get("e1") is not None


def test_a_failed_publish_books_and_audits_nothing(tmp_path: Path) -> None:
    def down(_k: str, _m: object) -> None:
        raise ConnectionError("broker down")

    with AuditLog(tmp_path / "a.jsonl", fsync=False) as audit:
        i = LimitIntake(TOPO, down, audit=audit, clock=lambda: T0)
        with pytest.raises(TransientIO, match="broker down"):
            i.submit(lim())
    assert len(i.book) == 0 and (tmp_path / "a.jsonl").read_text() == ""


def test_the_book_is_rebuilt_from_the_published_records() -> None:
    """What replaying the grid-signals topic does after a restart."""
    sent: Sent = []
    first = intake(sent)
    first.submit(lim(event_id="keep"))
    first.submit(lim(event_id="gone"))
    first.cancel("gone", source="rest:dso-a")
    first.submit(lim(event_id="other", source="openadr"))
    restarted = LimitIntake(TOPO, lambda k, m: None, clock=lambda: T0, book=LimitsInForce())
    for key, msg in sent:
        restarted.observe(msg, key=key)
    assert [e.limit.event_id for e in restarted.book.entries(T0)] == ["keep", "other"]
    assert restarted.book.get("keep") == first.book.get("keep")
    # windows that ended meanwhile are not in force any more
    assert restarted.book.entries(T0 + timedelta(hours=3)) == []


def test_a_failing_audit_log_does_not_make_a_published_limit_look_failed(
    tmp_path: Path,
) -> None:
    sent: Sent = []
    audit = AuditLog(tmp_path / "a.jsonl", fsync=False)
    audit.close()  # every append now raises
    i = intake(sent, audit)
    entry, _ = i.submit(lim())
    assert i.book.get("e1") == entry and len(sent) == 1
    assert i.cancel("e1", source="rest:dso-a") == entry


def test_echoes_of_older_records_do_not_roll_the_book_back() -> None:
    """The follower reads back what this intake published: an echo of revision 1 arriving
    after revision 2 was accepted must not bring revision 1 back."""
    sent: Sent = []
    clock = [T0]
    i = LimitIntake(TOPO, lambda k, m: sent.append((k, m)), clock=lambda: clock[0])
    i.submit(lim(limit_kw=40.0))
    clock[0] = T0 + timedelta(seconds=1)
    i.submit(lim(limit_kw=30.0))
    for key, msg in sent:  # the echoes, in topic order
        i.observe(msg, key=key)
    entry = i.book.get("e1")
    assert entry is not None and entry.limit.limit_kw == 30.0
    clock[0] = T0 + timedelta(seconds=2)
    i.cancel("e1", source="rest:dso-a")
    i.observe(sent[1][1], key="f2")  # a late echo of revision 2 after the cancel
    assert i.book.get("e1") is None
    clock[0] = T0 + timedelta(seconds=3)
    i.submit(lim(limit_kw=20.0))  # the same id posted anew after its cancellation
    entry = i.book.get("e1")
    assert entry is not None and entry.limit.limit_kw == 20.0
