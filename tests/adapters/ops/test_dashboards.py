"""Every Grafana panel and Prometheus alert names metrics a running service exports.

The exposition is scraped from ``gridflex serve`` (embedded, in this process) with the
history sink configured against a real InfluxDB, so the history metrics are there too;
the same run checks that the configured service writes its samples to InfluxDB."""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from influxdb_client import InfluxDBClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from adapters.csms.edge.health import EdgeMetrics
from adapters.csms.edge.runner import EdgeRunner
from adapters.csms.edge.settings import load_edge_settings
from adapters.csms.edge.upstream import EmbeddedUpstream
from adapters.serve.run import serve
from adapters.serve.settings import ServeSettings, load_settings
from adapters.stream.inprocess import InProcessBus
from aggregator.errors import ConfigError
from aggregator.interfaces import ManualClock
from tests.conftest import REPO, wait_until
from tests.integration.streaming import free_port

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
DASHBOARD = REPO / "docs" / "ops" / "grafana-dashboard.json"
ALERTS = REPO / "docs" / "ops" / "alerts.yaml"
TOPOLOGY = """
feeders:
  - {id: f1, limit_kw: 140}
  - {id: f2, limit_kw: 80}
sites:
  - {id: farm, feeder: f1, connection_limit_kw: 44, csms: c1}
  - {id: shop, feeder: f2, connection_limit_kw: 30, csms: c2}
"""
_METRIC = re.compile(r"\b(gridflex_[a-z0-9_]+)")
_SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


def exported_names(exposition: str) -> set[str]:
    """Every series name a scrape can show: families, their samples, counter ``_total``
    and histogram ``_bucket/_sum/_count`` (also for families with no sample yet)."""
    names: set[str] = set()
    for fam in text_string_to_metric_families(exposition):
        names.add(fam.name)
        names.update(s.name for s in fam.samples)
        if fam.type == "counter":
            names.add(fam.name + "_total")
        if fam.type == "histogram":
            names.update(fam.name + s for s in ("_bucket", "_sum", "_count"))
    return names


def named_metrics(expr: str) -> set[str]:
    return set(_METRIC.findall(expr))


def dashboard_exprs() -> dict[str, list[str]]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return {p["title"]: [t["expr"] for t in p["targets"]] for p in doc["panels"]}


def alert_exprs() -> dict[str, str]:
    doc = yaml.safe_load(ALERTS.read_text())
    return {r["alert"]: r["expr"] for g in doc["groups"] for r in g["rules"]}


def edge_exposition(tmp_path: Path) -> str:
    """What ``gridflex edge`` exports on /metrics (its registry, read from a runner)."""
    settings = load_edge_settings(
        None,
        csms_id="c1",
        state_dir=tmp_path / "edge",
        ocpp={"port": 0},
        sites=[{"id": "s1", "feeder": "f1", "cap_kw": 20.0, "stations": ["a1"]}],
        stations=[{"id": "a1", "password": "pw-a1"}],
    )
    runner = EdgeRunner(settings, ManualClock(T0), EmbeddedUpstream(InProcessBus(), "c1"))
    try:
        return generate_latest(EdgeMetrics(runner).registry).decode()
    finally:
        runner.buffer.close()


def test_the_dashboard_covers_what_operators_asked_for() -> None:
    exprs = dashboard_exprs()
    wanted = {
        "gridflex_power_kw",
        "gridflex_limit_kw",
        "gridflex_limit_headroom_kw",
        "gridflex_fast_loop_seconds_bucket",
        "gridflex_plan_solve_seconds_bucket",
        "gridflex_rejected_total",
        "gridflex_lease_age_seconds",
    }
    used = set().union(*(named_metrics(e) for es in exprs.values() for e in es))
    assert wanted <= used
    alerts = alert_exprs()
    for name in ("LeaseAboutToExpire", "PlanFallback", "DeadLetters", "ConsumerLag"):
        assert f"Gridflex{name}" in alerts
    for name in ("UpstreamLost", "Autonomous", "BufferFilling"):  # gridflex edge
        assert f"GridflexEdge{name}" in alerts


@pytest.mark.slow
def test_every_panel_and_alert_names_an_exported_metric(tmp_path: Path, influxdb_url: str) -> None:
    topo = tmp_path / "topology.yaml"
    topo.write_text(TOPOLOGY)
    port = free_port()
    settings = ServeSettings(
        topology=topo,
        http_port=port,
        log_format="console",
        log_level="WARNING",
        tick_s=0.05,
        history={"url": influxdb_url, "bucket": "gridflex", "flush_s": 0.1, "sample_s": 0.2},
    )
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(settings, stop), daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        scrape = wait_until(
            lambda: (
                (r := httpx.get(f"{base}/metrics", timeout=5)).status_code == 200
                and "gridflex_history_points_written_total 0.0" not in r.text
                and "gridflex_history_points_written" in r.text
                and "gridflex_power_kw{" in r.text
                and r.text
            ),
            60,
            "/metrics of the embedded service with history points written",
            interval_s=0.2,
        )
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    exported = exported_names(str(scrape)) | exported_names(edge_exposition(tmp_path))
    problems: list[str] = []
    for title, exprs in dashboard_exprs().items():
        names = set().union(*(named_metrics(e) for e in exprs))
        if not names:
            problems.append(f"panel {title!r} names no gridflex metric")
        problems += [f"panel {title!r}: {n} is not exported" for n in names - exported]
    for alert, expr in alert_exprs().items():
        names = named_metrics(expr)
        if not names:
            problems.append(f"alert {alert} names no gridflex metric")
        problems += [f"alert {alert}: {n} is not exported" for n in names - exported]
    assert not problems, "\n".join(problems)

    # the history the configured service wrote: fleet and feeder caps of the topology
    flux = (
        'from(bucket: "gridflex/autogen") |> range(start: -1h) '
        '|> filter(fn: (r) => r._measurement == "power" and r._field == "cap_kw")'
    )
    with InfluxDBClient(url=influxdb_url, token="", org="-") as client:
        caps = {
            r.values["id"]: r.get_value() for t in client.query_api().query(flux) for r in t.records
        }
    assert caps["f1"] == 140.0 and caps["f2"] == 80.0 and caps["farm"] == 44.0


def test_history_is_off_unless_configured_and_set_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topo = tmp_path / "topology.yaml"
    topo.write_text(TOPOLOGY)
    monkeypatch.setenv("GRIDFLEX_TOPOLOGY", str(topo))
    assert load_settings().history is None
    monkeypatch.setenv("GRIDFLEX_HISTORY__URL", "http://127.0.0.1:8086")
    monkeypatch.setenv("GRIDFLEX_HISTORY__QUEUE_SIZE", "500")
    history = load_settings().history
    assert history is not None
    assert (history.url, history.queue_size, history.bucket) == (
        "http://127.0.0.1:8086",
        500,
        "gridflex",
    )
    monkeypatch.setenv("GRIDFLEX_HISTORY__QUEUE_SIZE", "0")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert any("queue_size" in i.field for i in err.value.issues)
