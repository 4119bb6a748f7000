"""How the VEN applies pushed notifications (no VTN: ``publish`` is a list)."""

from __future__ import annotations

from typing import Any

from adapters.openadr3 import OpenAdr3Config, OpenAdr3Target, OpenAdr3Ven
from adapters.openadr3.wire import Notification
from aggregator.messages import DsoLimitCancel, DsoLimitMessage

CFG = OpenAdr3Config(
    vtn_url="http://127.0.0.1:1",
    client_id="ven",
    client_secret="secret",  # type: ignore[arg-type]
    ven_name="gridflex",
    program_names=("congestion",),
    targets={"feeder-f1": OpenAdr3Target(type="feeder", id="f1")},
)


def note(operation: str, program: str, modified: str, kw: float = 10.0) -> Notification:
    event: dict[str, Any] = {
        "id": "e1",
        "programID": program,
        "targets": ["feeder-f1"],
        "modificationDateTime": modified,
        "intervalPeriod": {"start": "0001-01-01T00:00:00Z", "duration": "PT1H"},
        "intervals": [{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [kw]}]}],
    }
    return Notification.model_validate(
        {"operation": operation, "objectType": "EVENT", "object": event}
    )


def test_pushed_events_of_followed_programs_apply_revise_and_withdraw() -> None:
    sent: list[DsoLimitMessage | DsoLimitCancel] = []
    ven = OpenAdr3Ven(CFG, lambda m: sent.append(m) or None)
    ven._program_ids = frozenset({"p-congestion"})  # as the last poll found them
    ven.on_notification(note("CREATE", "p-other", "2026-12-01T08:00:00Z"))
    assert sent == []  # not a followed program: left to the poll
    ven.on_notification(note("CREATE", "p-congestion", "2026-12-01T08:00:00Z"))
    (limit,) = sent
    assert isinstance(limit, DsoLimitMessage) and limit.limit_kw == 10.0
    ven.on_notification(note("UPDATE", "p-congestion", "2026-12-01T08:00:00Z"))
    assert len(sent) == 1  # same version: nothing again
    ven.on_notification(note("UPDATE", "p-congestion", "2026-12-01T08:05:00Z", kw=7.0))
    assert isinstance(sent[-1], DsoLimitMessage) and sent[-1].limit_kw == 7.0
    assert sent[-1].event_id == limit.event_id  # a revision of the same limit
    ven.on_notification(note("DELETE", "p-congestion", "2026-12-01T08:05:00Z"))
    assert isinstance(sent[-1], DsoLimitCancel) and sent[-1].event_id == limit.event_id
    assert ven.status().events == 0 and ven.status().notifications == 5
    ven.stop()


def test_a_refused_limit_is_recorded_and_tried_again() -> None:
    answers = ["bus down", None]
    sent: list[DsoLimitMessage | DsoLimitCancel] = []

    def publish(msg: DsoLimitMessage | DsoLimitCancel) -> str | None:
        sent.append(msg)
        return answers.pop(0)

    ven = OpenAdr3Ven(CFG.model_copy(update={"program_names": ()}), publish)
    ven.on_notification(note("CREATE", "any", "2026-12-01T08:00:00Z"))
    assert ven.status().rejected[0].endswith("bus down")
    ven.on_notification(note("UPDATE", "any", "2026-12-01T08:00:00Z"))  # same version
    assert len(sent) == 2 and answers == []  # tried again, and taken
    ven.on_notification(note("UPDATE", "any", "2026-12-01T08:00:00Z"))
    assert len(sent) == 2  # now remembered: not again
    ven.stop()
