"""Edge settings: file and environment, every problem reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.csms.edge.settings import load_edge_settings
from aggregator.errors import ConfigError

SITES = "sites:\n  - {id: s1, feeder: f1, cap_kw: 40, stations: [cs-1]}\n"


def test_environment_fills_what_the_file_leaves_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "edge.yaml"
    f.write_text(SITES + "stations: [{id: cs-1, password: pw}]\nocpp: {security_profile: 1}\n")
    monkeypatch.setenv("GRIDFLEX_EDGE__CSMS_ID", "from-env")
    monkeypatch.setenv("GRIDFLEX_EDGE__KAFKA_BOOTSTRAP", "broker:9092")
    s = load_edge_settings(f)
    assert (s.csms_id, s.kafka_bootstrap, s.ocpp.security_profile) == ("from-env", "broker:9092", 1)
    assert s.topics().setpoints == "gridflex.setpoints"


def test_problems_are_reported_as_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_edge_settings(
            None,
            csms_id="c",
            sites=[{"id": "s", "feeder": "f", "cap_kw": 1, "stations": ["a"]}],
            stations=[{"id": "a"}, {"id": "b", "password": "x"}],
        )
    assert "password for a" in str(info.value.issues[0])
    with pytest.raises(ConfigError) as info:
        load_edge_settings(
            None,
            csms_id="c",
            failsafe_duration_s=60,
            sites=[
                {"id": "s", "feeder": "f", "cap_kw": 1, "stations": ["a"]},
                {"id": "t", "feeder": "f", "cap_kw": 1, "stations": ["a"]},
            ],
        )
    fields = {i.field for i in info.value.issues}
    assert "failsafe_duration_s" in fields
    with pytest.raises(ConfigError) as info:
        load_edge_settings(
            None,
            csms_id="c",
            ocpp={"security_profile": 3, "certfile": "s.pem"},
            sites=[{"id": "s", "feeder": "f", "cap_kw": 1, "stations": []}],
        )
    assert "cafile" in str(info.value.issues[0])
    (bad := tmp_path / "bad.yaml").write_text("- not a mapping\n")
    with pytest.raises(ConfigError):
        load_edge_settings(bad)


def test_the_s2_target_reads_its_section_from_the_edge_file(tmp_path: Path) -> None:
    f = tmp_path / "edge.yaml"
    f.write_text(
        "csms_id: c1\ntargets: [ocpp, s2]\n"
        "sites: [{id: s1, feeder: f1, cap_kw: 50, stations: []}]\n"
        "s2: {port: 9123, deadband_kw: 0.5}\n",
        encoding="utf-8",
    )
    s = load_edge_settings(f)
    assert (s.s2.port, s.s2.deadband_kw) == (9123, 0.5)
    f.write_text(
        "csms_id: c1\nsites: [{id: s1, feeder: f1, cap_kw: 50, stations: []}]\n"
        "s2: {port: -1, bogus: 1}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as err:
        load_edge_settings(f)
    text = str(err.value)
    assert "port" in text and "bogus" in text
