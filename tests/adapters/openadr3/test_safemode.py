"""Safe mode: the failsafe caps persist across a restart and apply while the VTN cannot be
reached (here: nothing listens on its port) — no fake server, a real refused connection."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

from adapters.openadr3 import OpenAdr3Config, OpenAdr3Target, OpenAdr3Ven
from adapters.openadr3.safemode import SAFE_MODE_HOLD, SafeMode, load_caps, save_caps
from adapters.openadr3.wire import Notification
from aggregator.messages import DsoLimitCancel, DsoLimitMessage
from tests.conftest import wait_until

F1 = OpenAdr3Target(type="feeder", id="f1")
NOW = datetime(2026, 12, 1, 8, tzinfo=UTC)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when we return: connections refused


def config(path: Path, **kw: object) -> OpenAdr3Config:
    return OpenAdr3Config.model_validate(
        {
            "vtn_url": f"http://127.0.0.1:{closed_port()}",
            "client_id": "ven",
            "client_secret": "secret",
            "ven_name": "gridflex",
            "targets": {"feeder-f1": F1},
            "safe_mode_file": path,
            **kw,
        }
    )


def safe_mode_event(kw: float) -> Notification:
    event = {
        "id": "sm",
        "programID": "p",
        "eventName": "SAFE_MODE",
        "targets": ["feeder-f1"],
        "intervalPeriod": {"start": "2026-12-02T00:00:00Z", "duration": "P1Y"},
        "intervals": [{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [kw]}]}],
    }
    return Notification.model_validate(
        {"operation": "CREATE", "objectType": "EVENT", "object": event}
    )


def test_caps_survive_a_restart_and_apply_while_the_vtn_is_unreachable(tmp_path: Path) -> None:
    path = tmp_path / "safe-mode.json"
    first = OpenAdr3Ven(config(path), lambda m: None)
    first.on_notification(safe_mode_event(8.0))
    first.stop()
    assert load_caps(path) == {F1: 8.0}

    sent: list[DsoLimitMessage | DsoLimitCancel] = []
    cfg = config(path, poll_interval_s=0.1, safe_mode_after_s=0.5)
    ven = OpenAdr3Ven(cfg, lambda m: sent.append(m) or None)
    assert ven.status().safe_mode_caps == 1  # read back before any contact
    ven.start()
    try:
        wait_until(lambda: sent, 10, "the safe-mode limit", detail=lambda: str(ven.status()))
    finally:
        ven.stop()
    (limit,) = sent
    assert isinstance(limit, DsoLimitMessage)
    assert (limit.target_type, limit.target_id, limit.limit_kw) == ("feeder", "f1", 8.0)
    status = ven.status()
    assert status.safe_mode_active and not status.connected and status.polls == 0
    assert "TransientIO" in (status.last_error or "")


def test_due_renews_at_half_hold_and_leave_cancels(tmp_path: Path) -> None:
    safe = SafeMode(config(tmp_path / "s.json", safe_mode_after_s=60.0))
    assert safe.due(NOW, offline_s=1000.0) == []  # no caps known: nothing to apply
    safe.set_caps({F1: 5.0})
    assert safe.due(NOW, offline_s=59.0) == []  # not offline long enough
    (first,) = safe.due(NOW, offline_s=60.0)
    assert (first.start, first.end, first.limit_kw) == (NOW, NOW + SAFE_MODE_HOLD, 5.0)
    assert safe.due(NOW + SAFE_MODE_HOLD / 3, offline_s=1e4) == []  # in force
    (renewed,) = safe.due(NOW + SAFE_MODE_HOLD / 2, offline_s=1e5)
    assert renewed.event_id == first.event_id and renewed.end > first.end
    (cancel,) = safe.leave(NOW + timedelta(hours=13))
    assert cancel.event_id == first.event_id and not safe.active
    assert safe.leave(NOW) == []


def test_an_unreadable_file_means_no_caps(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text("{not json")
    assert load_caps(path) == {}
    save_caps(path, {F1: 3.5})
    assert load_caps(path) == {F1: 3.5}
