"""The S2 edge target without sockets: settings, placement of RMs, when to re-send."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.csms.edge.autonomy import SiteSpec
from adapters.csms.edge.settings import load_edge_settings
from adapters.csms.edge.targets import EdgeContext, build_target
from adapters.csms.s2.edge import S2EdgeSettings, S2Target, _Sent
from aggregator.interfaces import ManualClock

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _target(tmp_path: Path) -> tuple[S2Target, list[Any]]:
    reports: list[Any] = []
    settings = load_edge_settings(
        None,
        csms_id="c1",
        state_dir=tmp_path,
        targets=["s2"],
        sites=[{"id": "s1", "feeder": "f1", "cap_kw": 20.0, "stations": ["ev-a", "ev-b"]}],
    )
    ctx = EdgeContext(
        settings=settings,
        sites=[SiteSpec(site_id="s1", feeder_id="f1", cap_kw=20.0, station_ids=("ev-a", "ev-b"))],
        clock=ManualClock(T0),
        emit=lambda *_: None,
        report=reports.append,
    )
    target = build_target("s2", ctx)
    assert isinstance(target, S2Target)
    return target, reports


def test_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GRIDFLEX_EDGE__S2__PORT", "9201")
    monkeypatch.setenv("GRIDFLEX_EDGE__S2__BEARER_TOKEN", "tok")
    target, _ = _target(tmp_path)
    assert (target.cem.settings.port, target.cem.settings.bearer_token) == (9201, "tok")
    assert S2EdgeSettings().deadband_kw == 0.2


def test_rms_are_placed_like_stations(tmp_path: Path) -> None:
    target, _ = _target(tmp_path)
    res = {r.resource_id: r for r in target.cem.settings.resources}
    assert res["ev-a"].evse_id == "ev-a/1" and res["ev-b"].site_id == "s1"
    assert res["ev-a"].feeder_id == "f1"
    assert target.station_of == {"ev-a/1": "ev-a", "ev-b/1": "ev-b"}


def test_resend_on_deadband_tightening_failsafe_and_refresh(tmp_path: Path) -> None:
    target, _ = _target(tmp_path)
    now = T0
    assert target._due("ev-a/1", 7.0, 4.2, now)  # never sent
    target._sent["ev-a/1"] = _Sent(7.0, 4.2, now + timedelta(seconds=450))
    assert not target._due("ev-a/1", 7.1, 4.2, now)  # inside the deadband, looser
    assert target._due("ev-a/1", 6.95, 4.2, now)  # any tightening
    assert target._due("ev-a/1", 7.5, 4.2, now)  # past the deadband
    assert target._due("ev-a/1", 7.0, 3.0, now)  # failsafe changed
    assert target._due("ev-a/1", 7.0, 4.2, now + timedelta(seconds=450))  # refresh
