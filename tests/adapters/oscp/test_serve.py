"""``gridflex serve``'s OSCP side: GRIDFLEX_OSCP__* settings, and start_oscp serving the FP
beside the intake (off by default)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from adapters.dso.intake import LimitIntake
from adapters.oscp import FP_PATH, FleetReadings
from adapters.serve.settings import load_settings
from adapters.serve.wiring import start_oscp
from tests.integration.dso_fleet import TOPO


def test_oscp_is_off_by_default_and_set_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topo = tmp_path / "t.yaml"
    topo.write_text("feeders: [{id: f1, limit_kw: 60}]\nsites: []\n")
    assert load_settings(topology=topo).oscp is None
    monkeypatch.setenv("GRIDFLEX_OSCP__REGISTRATION_TOKEN", "secret-a")
    monkeypatch.setenv("GRIDFLEX_OSCP__CP_NAME", "dso1")
    monkeypatch.setenv("GRIDFLEX_OSCP__GROUPS", '{"area-1": {"type": "feeder", "id": "f1"}}')
    cfg = load_settings(topology=topo).oscp
    assert cfg is not None and cfg.source == "oscp:dso1"
    assert (
        cfg.groups["area-1"].id == "f1" and cfg.registration_token.get_secret_value() == "secret-a"
    )


def test_start_oscp_serves_the_fp_and_refuses_an_unknown_token() -> None:
    from adapters.oscp import OscpConfig

    cfg = OscpConfig(registration_token="a", groups={})
    handle = start_oscp(cfg, LimitIntake(TOPO, lambda k, m: None), FleetReadings())
    try:
        url = f"http://127.0.0.1:{handle.port}{FP_PATH}/heartbeat"
        r = httpx.post(url, json={"offline_mode_at": "2030-01-01T00:00:00Z"}, timeout=10)
        assert r.status_code == 401
        assert handle.provider.status().counts == {"refused_token": 1}
    finally:
        handle.stop()
