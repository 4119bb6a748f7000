"""Helpers for the streaming tests: topics, replicas as real ``gridflex serve`` processes.

Waiting is always for a condition with a deadline (:func:`tests.conftest.wait_until`);
batches are read by the independent :class:`~tests.integration.checker.SetpointChecker`,
which also checks every cap over them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from aggregator.messages import (
    FrequencySample,
    MeterValue,
    SessionStarted,
    SetpointBatch,
    encode,
)
from tests.conftest import wait_until
from tests.integration.checker import Batch, CapModel, SetpointChecker

TOPOLOGY = """
feeders:
  - {id: f1, limit_kw: 60}
  - {id: f2, limit_kw: 80}
sites:
  - {id: s1, feeder: f1, connection_limit_kw: 40, csms: csms-f1}
  - {id: s2, feeder: f1, connection_limit_kw: 30, csms: csms-f1}
  - {id: s3, feeder: f2, connection_limit_kw: 50, csms: csms-f2}
"""
SITE_FEEDER = {"s1": "f1", "s2": "f1", "s3": "f2"}
SITE_CAP = {"s1": 40.0, "s2": 30.0, "s3": 50.0}
FEEDER_CAP = {"f1": 60.0, "f2": 80.0}
NAMES = ("telemetry", "grid-signals", "frequency", "setpoints", "state", "deadletter")
CLIENTS = ("confluent", "kafka-python")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Streams:
    bootstrap: str
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:8]}")

    def topic(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def create(self, partitions: int = 6) -> None:
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        topics = [NewTopic(self.topic(n), partitions, 1) for n in NAMES if n != "state"]
        topics.append(
            NewTopic(
                self.topic("state"), partitions, 1, topic_configs={"cleanup.policy": "compact"}
            )
        )
        admin.create_topics(topics)
        admin.close()

    def env(self, topology: Path, group: str, http_port: int) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "GRIDFLEX_TOPOLOGY": str(topology),
                "GRIDFLEX_KAFKA__BOOTSTRAP": self.bootstrap,
                "GRIDFLEX_KAFKA__GROUP_ID": group,
                "GRIDFLEX_KAFKA__TELEMETRY_TOPIC": self.topic("telemetry"),
                "GRIDFLEX_KAFKA__GRID_SIGNALS_TOPIC": self.topic("grid-signals"),
                "GRIDFLEX_KAFKA__FREQUENCY_TOPIC": self.topic("frequency"),
                "GRIDFLEX_KAFKA__SETPOINTS_TOPIC": self.topic("setpoints"),
                "GRIDFLEX_KAFKA__STATE_TOPIC": self.topic("state"),
                "GRIDFLEX_KAFKA__DEADLETTER_TOPIC": self.topic("deadletter"),
                "GRIDFLEX_HTTP_PORT": str(http_port),
                "GRIDFLEX_SERVICE__RESERVE_KW": "10",
                "GRIDFLEX_LOG_FORMAT": "json",
            }
        )
        return env

    def producer(self) -> KafkaProducer:
        return KafkaProducer(bootstrap_servers=self.bootstrap, acks="all")

    def consumer(self, name: str) -> KafkaConsumer:
        return KafkaConsumer(
            self.topic(name),
            bootstrap_servers=self.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )


class Replica:
    """``gridflex serve`` in a subprocess of its own (so SIGKILL is real)."""

    def __init__(
        self,
        streams: Streams,
        topology: Path,
        group: str,
        log: Path,
        extra_env: dict[str, str] | None = None,
        client: str | None = None,
    ) -> None:
        self.port = free_port()
        self.log = log
        self._fh = log.open("w")
        env = streams.env(topology, group, self.port)
        if client is not None:
            env["GRIDFLEX_KAFKA__CLIENT"] = client
        env.update(extra_env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from adapters.cli.main import main; main()", "serve"],
            env=env,
            stdout=self._fh,
            stderr=self._fh,
        )

    def get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return 0

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
            return str(r.read().decode())

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"replica exited ({self.proc.returncode}):\n{self.tail()}")
            return self.get("/readyz") == 200

        wait_until(ready, timeout_s, f"replica on :{self.port} ready", detail=self.tail)

    def counter(self, name: str, label: str = "") -> float:
        """A sample of the replica's /metrics, e.g. ``messages_in_total`` with a topic label."""
        prefix = f"gridflex_{name}{{{label}}} " if label else f"gridflex_{name} "
        try:
            text = self.metrics()
        except OSError:
            return 0.0
        for line in text.splitlines():
            if line.startswith(prefix):
                return float(line[len(prefix) :])
        return 0.0

    def consumed(self, topic: str) -> float:
        return self.counter("messages_in_total", f'topic="{topic}"')

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._fh.close()
        return int(self.proc.returncode)

    def log_events(self) -> list[dict[str, object]]:
        out = []
        for line in self.log.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


def session(i: int, site: str, t: datetime) -> SessionStarted:
    return SessionStarted(
        ts=t,
        feeder_id=SITE_FEEDER[site],
        site_id=site,
        evse_id=f"e{i:02d}",
        csms_id=f"csms-{SITE_FEEDER[site]}",
        session_id=f"sess-{i}",
        departure=t + timedelta(hours=8),
        energy_requested_kwh=40.0,
        max_power_kw=11.0,
    )


def send(producer: KafkaProducer, topic: str, key: str | None, msg: object) -> None:
    producer.send(topic, key=key.encode() if key else None, value=encode(msg))  # type: ignore[arg-type]


def now() -> datetime:
    return datetime.now(UTC)


def answer(
    streams: Streams,
    checker: SetpointChecker,
    csms: set[str],
    *,
    hz: float = 50.0,
    timeout_s: float = 30.0,
    detail: object = None,
) -> list[Batch]:
    """Send one frequency sample and wait until a batch per CSMS in ``csms`` answers it
    (same ``source_ts``); re-sends every 2 s (a replica drops samples while not ready)."""
    prod = streams.producer()
    state: dict[str, datetime] = {}

    def resend() -> None:
        sample = FrequencySample(ts=now(), hz=hz)
        send(prod, streams.topic("frequency"), None, sample)
        prod.flush()
        state["ts"] = sample.ts
        state["at"] = datetime.now(UTC)

    def answered() -> list[Batch] | None:
        if datetime.now(UTC) - state["at"] > timedelta(seconds=2):
            resend()
        got = [b for b in checker.received() if b.source_ts == state["ts"]]
        return got if {b.csms_id for b in got} >= csms else None

    resend()
    try:
        tail = detail if callable(detail) else None
        return wait_until(
            answered, timeout_s, f"batches of {sorted(csms)} answering a sample", detail=tail
        )
    finally:
        prod.close()


def cap_model(evses: int = 30) -> CapModel:
    """The :data:`TOPOLOGY` grid for the checker (EVSE ``eNN`` on site ``SITE_OF``)."""
    return CapModel(
        site_feeder=SITE_FEEDER,
        site_cap_kw=SITE_CAP,
        feeder_cap_kw=FEEDER_CAP,
        evse_site={e: s for e, s in SITE_OF.items() if int(e[1:]) < evses},
        evse_max_kw=dict.fromkeys(SITE_OF, 11.0),
    )


def sums(batches: list[SetpointBatch] | list[Batch]) -> tuple[dict[str, float], dict[str, float]]:
    """Site and feeder sums of the latest setpoint of every EVSE in ``batches``."""
    latest: dict[str, float] = {}
    for b in batches:
        latest.update(zip(b.evse_ids, b.power_kw, strict=True))
    site = dict.fromkeys(SITE_CAP, 0.0)
    for evse, p in latest.items():
        site[SITE_OF[evse]] += p
    feeder = dict.fromkeys(FEEDER_CAP, 0.0)
    for s, p in site.items():
        feeder[SITE_FEEDER[s]] += p
    return site, feeder


SITE_OF = {f"e{i:02d}": ("s1", "s2", "s3")[i % 3] for i in range(30)}


# ------------------------------------------------- crash tests on a grid of many feeders


def write_grid_topology(
    path: Path,
    sites: dict[str, str],
    *,
    site_cap_kw: float,
    feeder_cap_kw: float,
    fleet_cap_kw: float | None = None,
) -> Path:
    """A topology file: the feeders of ``sites`` (site → feeder, in order), each site on
    the CSMS ``csms-<feeder>``; ``fleet_cap_kw`` when the fleet has a static cap."""
    lines = [] if fleet_cap_kw is None else [f"fleet_limit_kw: {fleet_cap_kw}"]
    lines.append("feeders:")
    lines += [f"  - {{id: {f}, limit_kw: {feeder_cap_kw}}}" for f in dict.fromkeys(sites.values())]
    lines.append("sites:")
    lines += [
        f"  - {{id: {s}, feeder: {f}, connection_limit_kw: {site_cap_kw}, csms: csms-{f}}}"
        for s, f in sites.items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def charge_every_evse(
    streams: Streams, evse_site: dict[str, str], sites: dict[str, str], max_kw: float
) -> None:
    """A session on every EVSE, then a meter value at full power (the fleet charges)."""
    prod = streams.producer()
    t = now()
    for i, (evse, site) in enumerate(evse_site.items()):
        feeder = sites[site]
        started = SessionStarted(
            ts=t,
            feeder_id=feeder,
            site_id=site,
            evse_id=evse,
            csms_id=f"csms-{feeder}",
            session_id=f"sess-{i}",
            departure=t + timedelta(hours=6),
            energy_requested_kwh=60.0,
            max_power_kw=max_kw,
        )
        send(prod, streams.topic("telemetry"), feeder, started)
    for i, (evse, site) in enumerate(evse_site.items()):
        mv = MeterValue(
            ts=now(),
            feeder_id=sites[site],
            evse_id=evse,
            session_id=f"sess-{i}",
            energy_kwh=0.5,
            power_kw=max_kw,
        )
        send(prod, streams.topic("telemetry"), sites[site], mv)
    prod.flush()
    prod.close()


def owned_feeders(replica: Replica) -> set[str]:
    """The feeders of the replica's latest assignment (its ``partitions_assigned`` log)."""
    got: set[str] = set()
    for ev in replica.log_events():
        if ev.get("event") == "partitions_assigned":
            got = {str(f) for f in ev.get("feeders", [])}  # type: ignore[attr-defined]
        elif ev.get("event") == "partitions_revoked":
            got = set()
    return got


def feeders_settled(live: list[Replica], feeders: tuple[str, ...]) -> bool:
    """Every live replica ready and ``feeders`` split among them with none left over."""
    if any(r.get("/readyz") != 200 for r in live):
        return False
    sets = [owned_feeders(r) for r in live]
    return set().union(*sets) == set(feeders) and sum(len(s) for s in sets) == len(feeders)
