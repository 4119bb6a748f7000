"""The README's streaming quick start, as written, on a fresh broker (issue 15 item 8).

``bash scripts/kafka.sh start`` on a broker of its own (no topic exists yet), then
``GRIDFLEX_TOPOLOGY=topology.yaml GRIDFLEX_KAFKA__BOOTSTRAP=... gridflex serve``: the
service must come up ready (``/readyz``) and create the topics it needs — the state topic
compacted, which the broker's auto-creation would not do — instead of dying after ~50 s on
a missing ``gridflex.frequency``; SIGTERM then stops it with exit 0.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregator.interfaces import DEFAULT_TOPICS
from tests.conftest import _free_loopback_ports, _tail, run_kafka_sh, wait_until
from tests.integration.streaming import TOPOLOGY, free_port

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
TOPICS = (
    DEFAULT_TOPICS.telemetry,
    DEFAULT_TOPICS.grid_signals,
    DEFAULT_TOPICS.frequency,
    DEFAULT_TOPICS.setpoints,
    DEFAULT_TOPICS.state,
    DEFAULT_TOPICS.deadletter,
)


@pytest.fixture
def fresh_broker() -> Iterator[str]:
    """A broker of this test's own, started as the README says (empty: no topics)."""
    port, cport = _free_loopback_ports(2)
    env = {
        **os.environ,
        "GRIDFLEX_KAFKA_PORT": str(port),
        "GRIDFLEX_KAFKA_CONTROLLER_PORT": str(cport),
        "GRIDFLEX_KAFKA_PYTHON": sys.executable,
    }
    started = run_kafka_sh(env, "start", timeout=900)
    try:
        assert started.returncode == 0, _tail(started.stderr)
        assert started.stdout.strip() == f"127.0.0.1:{port}"
        yield started.stdout.strip()
    finally:
        run_kafka_sh(env, "stop", "--purge", timeout=120)


def topic_configs(bootstrap: str) -> dict[str, dict[str, str]]:
    """Every topic's non-default-free config on ``bootstrap`` (confluent-kafka admin)."""
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [t for t in admin.list_topics(timeout=10).topics if not t.startswith("__")]
    if not names:
        return {}
    futures = admin.describe_configs([ConfigResource("topic", n) for n in names])
    return {
        res.name: {k: str(v.value) for k, v in fut.result(timeout=10).items()}
        for res, fut in futures.items()
    }


def test_readme_quick_start_on_a_fresh_broker(fresh_broker: str, tmp_path: Path) -> None:
    assert not set(TOPICS) & set(topic_configs(fresh_broker))  # fresh: none of ours yet
    (tmp_path / "topology.yaml").write_text(TOPOLOGY)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("GRIDFLEX_")}
    env.update(
        GRIDFLEX_TOPOLOGY="topology.yaml",
        GRIDFLEX_KAFKA__BOOTSTRAP=fresh_broker,
        GRIDFLEX_HTTP_PORT=str(port),  # the README's default port may be taken on CI
    )
    gridflex = shutil.which("gridflex")
    cmd = [gridflex] if gridflex else [sys.executable, "-m", "adapters.cli.main"]
    log = tmp_path / "serve.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [*cmd, "serve"], cwd=tmp_path, env=env, stdout=fh, stderr=subprocess.STDOUT
        )
    try:
        from tests.integration.test_serve_lifecycle import http_get

        def ready() -> bool:
            assert proc.poll() is None, f"serve exited {proc.returncode}:\n{log.read_text()}"
            return http_get(port, "/readyz") == 200

        wait_until(ready, 120, "gridflex serve ready on a fresh broker", detail=log.read_text)
        configs = topic_configs(fresh_broker)
        assert set(TOPICS) <= set(configs), sorted(configs)
        assert configs[DEFAULT_TOPICS.state]["cleanup.policy"] == "compact"
        for name in set(TOPICS) - {DEFAULT_TOPICS.state}:
            assert configs[name]["cleanup.policy"] == "delete", (name, configs[name])
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()
