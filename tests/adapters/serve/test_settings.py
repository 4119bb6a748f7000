"""Settings of ``gridflex serve``: environment (``GRIDFLEX_``, ``__`` nesting), YAML file
under the environment, every problem reported as a ConfigError issue; topology files."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from adapters.serve.settings import KafkaSettings, ServeSettings, load_settings, load_topology
from aggregator.errors import ConfigError, InvalidInput
from aggregator.service.replica import ServiceConfig

TOPOLOGY = """
feeders:
  - {id: f1, limit_kw: 600, name: north}
  - {id: f2, limit_kw: 400}
sites:
  - {id: s1, feeder: f1, connection_limit_kw: 150, csms: csms-a}
  - {id: s2, feeder: f1, connection_limit_kw: 50, bus: "bus 7"}
  - {id: s3, feeder: f2, connection_limit_kw: 75, csms: csms-b}
fleet_limit_kw: 900
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GRIDFLEX_ variable of the caller's shell leaks into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("GRIDFLEX_"):
            monkeypatch.delenv(name)


def fields(exc: pytest.ExceptionInfo[ConfigError]) -> set[str]:
    return {i.field for i in exc.value.issues}


# ------------------------------------------------------------------------ environment


def test_environment_with_prefix_and_nested_sections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDFLEX_TOPOLOGY", "/etc/gridflex/topology.yaml")
    monkeypatch.setenv("GRIDFLEX_KAFKA__BOOTSTRAP", "127.0.0.1:9092")
    monkeypatch.setenv("GRIDFLEX_KAFKA__GROUP_ID", "replicas")
    monkeypatch.setenv("GRIDFLEX_KAFKA__TELEMETRY_TOPIC", "t.telemetry")
    monkeypatch.setenv("GRIDFLEX_KAFKA__MAX_POLL_RECORDS", "500")
    monkeypatch.setenv("GRIDFLEX_SERVICE__RESERVE_KW", "500")
    monkeypatch.setenv("GRIDFLEX_SERVICE__SOLVER", "CLARABEL")
    monkeypatch.setenv("GRIDFLEX_HTTP_PORT", "8081")
    monkeypatch.setenv("GRIDFLEX_HTTP_HOST", "0.0.0.0")
    monkeypatch.setenv("GRIDFLEX_LOG_FORMAT", "console")
    monkeypatch.setenv("GRIDFLEX_TICK_S", "0.5")

    s = load_settings()

    assert s.topology == Path("/etc/gridflex/topology.yaml")
    assert s.kafka is not None
    assert s.kafka.bootstrap == "127.0.0.1:9092"
    assert s.kafka.group_id == "replicas"
    assert s.kafka.max_poll_records == 500
    assert s.kafka.client_id == "gridflex"  # defaults of the section stay
    topics = s.kafka.topics()
    assert topics.telemetry == "t.telemetry"
    assert topics.setpoints == "gridflex.setpoints"
    assert (s.http_host, s.http_port, s.log_format, s.tick_s) == ("0.0.0.0", 8081, "console", 0.5)
    config = s.service.config()
    assert isinstance(config, ServiceConfig)
    assert config.reserve_kw == 500.0
    assert config.solver == "CLARABEL"
    assert config.plan_step_s == ServiceConfig().plan_step_s


def test_without_bootstrap_the_service_runs_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDFLEX_TOPOLOGY", "topo.yaml")
    s = load_settings()
    assert s.kafka is None
    assert (s.http_host, s.http_port, s.log_format, s.log_level) == (
        "127.0.0.1",
        8080,
        "json",
        "INFO",
    )
    assert s.service.config() == ServiceConfig()


def test_lowercase_variables_are_read_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("gridflex_topology", "topo.yaml")
    monkeypatch.setenv("gridflex_kafka__bootstrap", "h:1")
    s = load_settings()
    assert s.kafka is not None and s.kafka.bootstrap == "h:1"


def test_every_problem_in_the_environment_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDFLEX_KAFKA__BOOTSTRAP", "127.0.0.1:9092")
    monkeypatch.setenv("GRIDFLEX_KAFKA__SESSION_TIMEOUT_MS", "10")
    monkeypatch.setenv("GRIDFLEX_KAFKA__BOGUS", "1")
    monkeypatch.setenv("GRIDFLEX_SERVICE__RESERVE_KW", "lots")
    monkeypatch.setenv("GRIDFLEX_HTTP_PORT", "70000")
    monkeypatch.setenv("GRIDFLEX_LOG_FORMAT", "xml")
    monkeypatch.setenv("GRIDFLEX_TICK_S", "0")

    with pytest.raises(ConfigError) as exc:
        load_settings()

    assert fields(exc) == {
        "topology",  # required and missing
        "kafka.session_timeout_ms",
        "kafka.bogus",
        "service.reserve_kw",
        "http_port",
        "log_format",
        "tick_s",
    }
    assert isinstance(exc.value, InvalidInput)  # the CLI reports it like any bad input
    text = str(exc.value)
    assert "http_port" in text and "65535" in text


def test_a_kafka_section_without_bootstrap_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDFLEX_TOPOLOGY", "topo.yaml")
    monkeypatch.setenv("GRIDFLEX_KAFKA__GROUP_ID", "g")
    with pytest.raises(ConfigError) as exc:
        load_settings()
    assert fields(exc) == {"kafka.bootstrap"}


def test_service_rules_are_checked_when_the_settings_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GRIDFLEX_TOPOLOGY", "topo.yaml")
    monkeypatch.setenv("GRIDFLEX_SERVICE__RESERVE_KW", "-5")
    monkeypatch.setenv("GRIDFLEX_SERVICE__FAILSAFE_DURATION_S", "60")
    monkeypatch.setenv("GRIDFLEX_SERVICE__HORIZON_S", "60")
    with pytest.raises(ConfigError) as exc:
        load_settings()
    assert fields(exc) == {
        "service.reserve_kw",
        "service.failsafe_duration_s",
        "service.horizon_s",
    }


# ---------------------------------------------------------------------- YAML file


def test_yaml_file_with_environment_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(
        "topology: /srv/topology.yaml\n"
        "kafka:\n"
        "  bootstrap: broker:9092\n"
        "  group_id: from-file\n"
        "  state_topic: file.state\n"
        "service:\n"
        "  reserve_kw: 100\n"
        "  failsafe_kw: 3.7\n"
        "http_port: 9000\n"
        "log_level: DEBUG\n"
    )
    # the file alone
    s = load_settings(cfg)
    assert s.kafka is not None
    assert (s.kafka.bootstrap, s.kafka.group_id, s.kafka.state_topic) == (
        "broker:9092",
        "from-file",
        "file.state",
    )
    assert (s.service.reserve_kw, s.service.failsafe_kw) == (100.0, 3.7)
    assert (s.http_port, s.log_level) == (9000, "DEBUG")

    # the environment overrides single values, nested ones field by field
    monkeypatch.setenv("GRIDFLEX_KAFKA__GROUP_ID", "from-env")
    monkeypatch.setenv("GRIDFLEX_SERVICE__RESERVE_KW", "250")
    monkeypatch.setenv("GRIDFLEX_HTTP_PORT", "9100")
    s = load_settings(cfg)
    assert s.kafka is not None
    assert s.kafka.group_id == "from-env"
    assert s.kafka.bootstrap == "broker:9092"  # the rest of the file's section stays
    assert s.kafka.state_topic == "file.state"
    assert s.service.reserve_kw == 250.0
    assert s.service.failsafe_kw == 3.7
    assert s.http_port == 9100
    assert s.log_level == "DEBUG"
    assert s.topology == Path("/srv/topology.yaml")

    # explicit keyword arguments override both
    s = load_settings(cfg, http_port=0)
    assert s.http_port == 0

    # the file's values do not stick to later loads
    monkeypatch.setenv("GRIDFLEX_TOPOLOGY", "other.yaml")
    monkeypatch.setenv("GRIDFLEX_KAFKA__BOOTSTRAP", "env:9092")
    s = load_settings()
    assert s.topology == Path("other.yaml")
    assert s.kafka is not None
    assert (s.kafka.bootstrap, s.kafka.state_topic) == ("env:9092", "gridflex.state")
    assert s.service.failsafe_kw == 4.2


def test_every_problem_in_the_file_and_environment_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "serve.yaml"
    cfg.write_text("kafka: {bootstrap: b:1, max_poll_records: 0}\nhttp_port: -1\nunknown_key: 1\n")
    monkeypatch.setenv("GRIDFLEX_LOG_FORMAT", "xml")
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg)
    assert fields(exc) == {
        "topology",
        "kafka.max_poll_records",
        "http_port",
        "unknown_key",
        "log_format",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("http_port: [1\n", "cannot read"),
        ("- 1\n- 2\n", "must be a mapping"),
        ("just a string\n", "must be a mapping"),
    ],
)
def test_unusable_files_are_config_errors(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg)
    assert [i.field for i in exc.value.issues] == [str(cfg)]
    assert message in exc.value.issues[0].message


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(tmp_path / "nope.yaml")
    assert "cannot read" in exc.value.issues[0].message


def test_an_empty_file_means_environment_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "serve.yaml"
    cfg.write_text("")
    monkeypatch.setenv("GRIDFLEX_TOPOLOGY", "t.yaml")
    assert load_settings(cfg).topology == Path("t.yaml")


def test_direct_construction_keeps_pydantic_settings_precedence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GRIDFLEX_HTTP_PORT", "1234")
    s = ServeSettings(topology=Path("t.yaml"))
    assert s.http_port == 1234
    assert ServeSettings(topology=Path("t.yaml"), http_port=99).http_port == 99
    k = KafkaSettings(bootstrap="b:1")
    assert k.topics().deadletter == "gridflex.deadletter"


# ------------------------------------------------------------------------ topology


def test_topology_file(tmp_path: Path) -> None:
    p = tmp_path / "topology.yaml"
    p.write_text(TOPOLOGY)
    topo = load_topology(p)
    assert [f.feeder_id for f in topo.feeders] == ["f1", "f2"]
    assert topo.feeders[0].name == "north"
    assert [(s.site_id, s.feeder_id, s.csms_id) for s in topo.sites] == [
        ("s1", "f1", "csms-a"),
        ("s2", "f1", "csms"),  # the default CSMS
        ("s3", "f2", "csms-b"),
    ]
    assert topo.sites[1].bus == "bus 7"
    assert topo.site_limit_kw.tolist() == [150.0, 50.0, 75.0]
    assert topo.fleet_limit_kw == 900.0


def test_topology_as_json_and_without_fleet_limit(tmp_path: Path) -> None:
    p = tmp_path / "topology.json"
    p.write_text(
        '{"feeders": [{"id": "f1", "limit_kw": 10}],'
        ' "sites": [{"id": "s1", "feeder": "f1", "connection_limit_kw": 5}]}'
    )
    topo = load_topology(p)
    assert topo.n_sites == 1 and math.isinf(topo.fleet_limit_kw)


def test_topology_problems_are_listed_together(tmp_path: Path) -> None:
    p = tmp_path / "topology.yaml"
    p.write_text(
        "feeders:\n"
        "  - {id: f1, limit_kw: 600}\n"
        "  - {id: f2}\n"  # no limit
        "  - {id: f3, limit_kw: -1}\n"  # not > 0
        "  - {id: f1, limit_kw: 10}\n"  # duplicate
        "  - just-a-name\n"
        "sites:\n"
        "  - {id: s1, feeder: f1, connection_limit_kw: 150}\n"
        "  - {id: s2, feeder: f9, connection_limit_kw: 50}\n"  # unknown feeder
        "  - {id: s3, feeder: f1}\n"  # no connection limit
        "  - {id: s1, feeder: f1, connection_limit_kw: 40}\n"  # duplicate
        "  - {id: s4, feeder: f1, connection_limit_kw: lots}\n"  # not a number
        "fleet_limit_kw: plenty\n"
    )
    with pytest.raises(ConfigError) as exc:
        load_topology(p)
    found = {(i.field, i.ids) for i in exc.value.issues}
    assert found == {
        ("feeders[1]", ()),
        ("feeders[4]", ()),
        ("sites[2]", ()),
        ("sites[4]", ()),
        ("fleet_limit_kw", ()),
        ("feeders.limit_kw", ("f3",)),
        ("feeders.feeder_id", ("f1",)),
        ("sites.feeder_id", ("s2",)),
        ("sites.site_id", ("s1",)),
    }


def test_topology_sections_must_be_lists(tmp_path: Path) -> None:
    p = tmp_path / "topology.yaml"
    p.write_text("feeders: {id: f1, limit_kw: 5}\nsites: s1\n")
    with pytest.raises(ConfigError) as exc:
        load_topology(p)
    assert {"feeders", "sites"} <= {i.field for i in exc.value.issues}
    assert any(i.message == "must be a list" for i in exc.value.issues)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "must be a mapping"),
        ("- f1\n", "must be a mapping"),
        ("feeders: [\n", "cannot read"),
    ],
)
def test_unusable_topology_files(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "topology.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_topology(p)
    assert message in exc.value.issues[0].message


def test_missing_topology_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_topology(tmp_path / "nope.yaml")
    assert exc.value.issues[0].field.endswith("nope.yaml")
    assert "cannot read" in exc.value.issues[0].message


def test_empty_topology_reports_both_sections(tmp_path: Path) -> None:
    p = tmp_path / "topology.yaml"
    p.write_text("feeders: []\nsites: []\n")
    with pytest.raises(ConfigError) as exc:
        load_topology(p)
    assert fields(exc) == {"feeders", "sites"}


def test_the_energy_reservoir_rule_is_a_service_setting_and_reaches_every_plan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datetime import UTC, datetime

    from aggregator.fleet.state import FleetState
    from aggregator.limits import LimitBook
    from aggregator.service.request import plan_request
    from aggregator.topology import Feeder, Site, Topology

    monkeypatch.setenv("GRIDFLEX_TOPOLOGY", "/etc/gridflex/topology.yaml")
    assert load_settings().service.config().reservoir_s is None  # off by default
    monkeypatch.setenv("GRIDFLEX_SERVICE__RESERVOIR_S", "900")
    config = load_settings().service.config()
    assert config.reservoir_s == 900.0 and config.validate() == []
    topo = Topology((Feeder("f1", 100.0),), (Site("s1", "f1", 50.0),))
    req, _ = plan_request(
        datetime(2026, 1, 14, tzinfo=UTC),
        fleet=FleetState(topo),
        limits=LimitBook(topo),
        config=config,
        prices=None,
    )
    assert req.reservoir_s == 900.0
    bad = ServiceConfig(reservoir_s=0.0).validate()
    assert [i.field for i in bad] == ["reservoir_s"]
