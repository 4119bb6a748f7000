"""The Helm chart (helm/gridflex): it lints, renders and validates offline, its probes,
resources, PodDisruptionBudget and NetworkPolicy are there and point at what the service
really serves, its values schema refuses bad values, and the configuration it renders is
one ``gridflex serve`` loads and answers the chart's probes with.

Validation is offline: ``kubecheck`` (scripts/helm/kubecheck) decodes each manifest
strictly into the Kubernetes API's own Go types and adds cross-object checks; the tests
below first show that it does fail on the mistakes it claims to catch.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import wait_until
from tests.deploy.conftest import EDGE_EXAMPLE, EDGE_PROFILE, HelmTools

TOKEN_SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
FULL = [  # every optional part switched on
    "--set", "serviceMonitor.enabled=true",
    "--set", "api.tls.enabled=true",
    "--set", "api.tls.mutual=true",
    "--set", "api.tls.cert=CERT", "--set", "api.tls.key=KEY", "--set", "api.tls.clientCA=CA",
    "--set", "history.token=user:password",
    "--set", "settings.history.url=http://influxdb:8086",
    "--set", f"api.tokens[0].sha256={TOKEN_SHA}", "--set", "api.tokens[0].dso=dso-a",
    "--set", "api.tokens[0].areas={f1}", "--set", "api.tokens[0].scopes={limits:write}",
]  # fmt: skip
PROFILES = {
    "default": [],
    "edge": ["-f", str(EDGE_PROFILE), "-f", str(EDGE_EXAMPLE)],
    "full": FULL,
    "no-persistence": ["--set", "persistence.enabled=false", "--set", "audit.enabled=false"],
}


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"{len(found)} {kind}s rendered"
    return found[0]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# ------------------------------------------------------------------------- lint, render


@pytest.mark.parametrize("profile", ["default", "edge"])
def test_helm_lint_strict_passes(helm_tools: HelmTools, profile: str) -> None:
    from tests.deploy.conftest import CHART

    out = helm_tools.run("lint", "--strict", str(CHART), *PROFILES[profile])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_rendered_manifest_validates_offline(helm_tools: HelmTools, profile: str) -> None:
    rendered = helm_tools.template(*PROFILES[profile])
    assert rendered.returncode == 0, rendered.stderr
    checked = helm_tools.validate(rendered.stdout)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    n_docs = len([d for d in yaml.safe_load_all(rendered.stdout) if d])
    oks = [line for line in checked.stdout.splitlines() if line.startswith("ok ")]
    assert len(oks) == n_docs  # every document was decoded and checked, none passed over


def test_the_validator_fails_on_the_mistakes_it_claims_to_catch(helm_tools: HelmTools) -> None:
    good = helm_tools.template().stdout
    mistakes = {  # a typo in a field, a probe on a port that does not exist, a wrong type
        "failureThreshold: 3": ("failureThreshhold: 3", 'unknown field "spec.template.spec.'),
        "path: /livez, port: http": ("path: /livez, port: htp", 'port "htp" is not a port'),
        "replicas: 3": ('replicas: "three"', "replicas"),
        "maxUnavailable: 1": ("maxUnavailable: 0", "blocks every voluntary eviction"),
        "secretKeyRef: {name: gridflex, key: api-tokens.json}": (
            "secretKeyRef: {name: gridflex, key: tokens.json}",
            'key "tokens.json"',
        ),
    }
    for before, (after, message) in mistakes.items():
        assert before in good, before
        bad = helm_tools.validate(good.replace(before, after, 1))
        assert bad.returncode == 1, (after, bad.stdout)
        assert message in bad.stdout, (after, bad.stdout)
    # a selector that no longer selects the pods it protects
    pdb_sel = "  maxUnavailable: 1\n  selector:\n    matchLabels:\n"
    pdb_sel += "      app.kubernetes.io/name: gridflex"
    assert pdb_sel in good
    bad = helm_tools.validate(good.replace(pdb_sel, pdb_sel + "x"))
    assert bad.returncode == 1
    assert "selects no rendered workload" in bad.stdout


# --------------------------------------------------------------------- what is rendered


def test_probes_ports_resources_pdb_and_networkpolicy(helm_tools: HelmTools) -> None:
    docs = helm_tools.render()
    sts = one(docs, "StatefulSet")
    pod = sts["spec"]["template"]
    (ctr,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
    assert ctr["args"][:2] == ["serve", "--config"]
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        assert ctr[probe]["httpGet"] == {"path": path, "port": "http"}
    assert ctr["startupProbe"]["httpGet"]["path"] == "/livez"
    # the settings file the service reads listens where the probes knock
    settings = yaml.safe_load(one(docs, "ConfigMap")["data"]["settings.yaml"])
    assert settings["http_port"] == ports["http"]
    assert settings["http_host"] == "0.0.0.0"
    assert settings["api"]["port"] == ports["api"]
    assert set(ctr["resources"]) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(ctr["resources"]["requests"])
    assert ctr["securityContext"]["readOnlyRootFilesystem"] is True

    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"])
    netpol = one(docs, "NetworkPolicy")
    assert selects(netpol["spec"]["podSelector"]["matchLabels"], pod["metadata"]["labels"])
    ingress_ports = {p["port"] for rule in netpol["spec"]["ingress"] for p in rule["ports"]}
    assert ingress_ports == {"http", "api"}
    assert set(netpol["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    # the audit chain lives on a volume per replica
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert settings["audit_log"].startswith("/var/lib/gridflex/")
    assert not by_kind(docs, "ServiceMonitor")  # optional, off by default


def test_secrets_hold_token_hashes_and_certificates(helm_tools: HelmTools) -> None:
    import base64
    import json

    docs = helm_tools.render(*FULL)
    secrets = {s["metadata"]["name"]: s for s in by_kind(docs, "Secret")}
    own = secrets["gridflex"]
    tokens = json.loads(base64.b64decode(own["data"]["api-tokens.json"]))
    assert tokens == [
        {"sha256": TOKEN_SHA, "dso": "dso-a", "areas": ["f1"], "scopes": ["limits:write"]}
    ]
    assert base64.b64decode(own["data"]["history-token"]) == b"user:password"
    tls = secrets["gridflex-tls"]
    assert tls["type"] == "kubernetes.io/tls"
    assert set(tls["data"]) == {"tls.crt", "tls.key", "ca.crt"}
    settings = yaml.safe_load(one(docs, "ConfigMap")["data"]["settings.yaml"])
    assert settings["api"]["client_ca"] == "/etc/gridflex/tls/ca.crt"
    monitor = one(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_edge_profile_runs_gridflex_edge_with_its_buffer_volume(helm_tools: HelmTools) -> None:
    docs = helm_tools.render(*PROFILES["edge"])
    sts = one(docs, "StatefulSet")
    (ctr,) = sts["spec"]["template"]["spec"]["containers"]
    assert ctr["args"][0] == "edge"
    assert sts["spec"]["replicas"] == 1
    assert {p["name"] for p in ctr["ports"]} == {"ocpp", "http"}
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        assert ctr[probe]["httpGet"] == {"path": path, "port": "http"}
    assert ctr["startupProbe"]["httpGet"]["path"] == "/livez"
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    edge_yaml = one(docs, "ConfigMap")["data"]["edge.yaml"]
    assert yaml.safe_load(edge_yaml)["state_dir"].startswith("/var/lib/gridflex/")
    ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
    assert yaml.safe_load(edge_yaml)["http_port"] == ports["http"]
    assert "example-only-change-me" not in edge_yaml  # passwords live in the Secret
    services = {x["metadata"]["name"]: x for x in by_kind(docs, "Service")}
    assert services["gridflex"]["spec"]["type"] == "LoadBalancer"  # stations are outside


def test_edge_needs_a_site_and_one_replica(helm_tools: HelmTools) -> None:
    alone = helm_tools.template("-f", str(EDGE_PROFILE))
    assert alone.returncode != 0 and "edge.settings.csms_id" in alone.stderr
    two = helm_tools.template(*PROFILES["edge"], "--set", "replicas=2")
    assert two.returncode != 0 and "replicas" in two.stderr
    owned = helm_tools.template(*PROFILES["edge"], "--set", "edge.settings.ocpp.port=1")
    assert owned.returncode != 0 and "ocpp" in owned.stderr
    monitored = helm_tools.template(*PROFILES["edge"], "--set", "serviceMonitor.enabled=true")
    assert monitored.returncode != 0 and "PodMonitor" in monitored.stderr


# ------------------------------------------------------------------------- the schema


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "replicas=0"], "replicas"),
        (["--set", "mode=cloud"], "mode"),
        (["--set", "resources.requests.cpu=lots"], "cpu"),
        (["--set", "replica=3"], "replica"),  # a typo is refused, not ignored
        (["--set", "http.port=70000"], "port"),
        (["--set", "api.tokens[0].sha256=abc", "--set", "api.tokens[0].dso=d"], "sha256"),
        (["--set", "settings.http_port=9"], "settings"),  # owned by the chart
        ([*PROFILES["edge"], "--set", "edge.settings.http_port=9"], "settings"),  # the chart's
        (["--set", "settings.kafka=null"], "replicas"),  # embedded bus, 3 replicas
        (["--set", "history.token=t"], "settings.history.url"),
        (["--set", "settings.history.url=u", "--set", "settings.history.token=t"], "history"),
    ],
)
def test_values_schema_rejects_bad_values(
    helm_tools: HelmTools, args: list[str], message: str
) -> None:
    out = helm_tools.template(*args)
    assert out.returncode != 0, f"{args} rendered"
    assert message in out.stderr, out.stderr


# ------------------------------------------------------------ the service takes the chart


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pod_files(docs: list[dict[str, Any]], tmp_path: Path) -> Path:
    """The ConfigMap's files as the pod would see them, with /etc and /var moved under
    ``tmp_path``; returns the settings file."""
    data = one(docs, "ConfigMap")["data"]
    config = tmp_path / "config"
    config.mkdir()
    for name, text in data.items():
        text = text.replace("/etc/gridflex/config/", f"{config}/")
        text = text.replace("/var/lib/gridflex/", f"{tmp_path}/")
        (config / name).write_text(text, encoding="utf-8")
    return config / "settings.yaml"


def _secret_env(docs: list[dict[str, Any]], name: str) -> dict[str, str]:
    import base64

    (ctr,) = one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    secrets = {s["metadata"]["name"]: s for s in by_kind(docs, "Secret")}
    env = {}
    for e in ctr["env"]:
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            env[e["name"]] = base64.b64decode(secrets[ref["name"]]["data"][ref["key"]]).decode()
        elif "value" in e:
            env[e["name"]] = e["value"].replace("$(POD_NAME)", name)
    return env


def test_rendered_settings_load_in_the_service(
    helm_tools: HelmTools, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adapters.serve.settings import load_settings, load_topology

    docs = helm_tools.render(*FULL)
    settings_file = _pod_files(docs, tmp_path)
    for key, value in _secret_env(docs, "gridflex-1").items():
        monkeypatch.setenv(key, value)
    settings = load_settings(settings_file)
    assert settings.kafka is not None
    assert settings.kafka.bootstrap == "kafka:9092"
    assert settings.kafka.client_id == "gridflex-1"  # the env var merged into the file's
    assert settings.api is not None
    assert settings.api.tokens[0]["sha256"] == TOKEN_SHA
    assert settings.api.client_ca is not None
    assert settings.history is not None
    assert settings.history.token == "user:password"  # from the Secret, not the ConfigMap
    assert load_topology(settings.topology).feeders[0].feeder_id == "f1"


def test_rendered_edge_settings_load_in_the_edge(
    helm_tools: HelmTools, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adapters.csms.edge.settings import load_edge_settings

    docs = helm_tools.render(*PROFILES["edge"])
    config = _pod_files(docs, tmp_path).parent
    for key, value in _secret_env(docs, "gridflex-0").items():
        monkeypatch.setenv(key, value)
    settings = load_edge_settings(config / "edge.yaml")
    assert settings.csms_id == "csms-a"
    assert settings.ocpp.host == "0.0.0.0" and settings.ocpp.port == 9000
    assert [s.id for s in settings.stations] == ["cs-1", "cs-2"]  # from the Secret
    assert settings.stations[0].password is not None
    assert settings.stations[0].password.get_secret_value() == "example-only-change-me"


@pytest.mark.slow
def test_serve_answers_the_charts_probes(helm_tools: HelmTools, tmp_path: Path) -> None:
    """``gridflex serve`` with the embedded bus (one replica, no Kafka), configured by the
    rendered ConfigMap and Secret, answers the StatefulSet's probe paths on its named port."""
    http_port, api_port = _free_port(), _free_port()
    docs = helm_tools.render(
        "--set", "replicas=1", "--set", "settings.kafka=null",
        "--set", f"http.port={http_port}", "--set", f"api.port={api_port}",
    )  # fmt: skip
    settings_file = _pod_files(docs, tmp_path)
    (ctr,) = one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
    env = {**os.environ, **_secret_env(docs, "gridflex-0")}
    env |= {"GRIDFLEX_HTTP_HOST": "127.0.0.1", "GRIDFLEX_API__HOST": "127.0.0.1"}  # loopback
    log = tmp_path / "serve.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from adapters.cli.main import main; main()",
             ctr["args"][0], "--config", str(settings_file)],
            stdout=fh, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:

        def answers(probe: str) -> bool:
            assert proc.poll() is None, log.read_text()
            get = ctr[probe]["httpGet"]
            url = f"http://127.0.0.1:{ports[get['port']]}{get['path']}"
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bool(resp.status == 200)

        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            wait_until(lambda p=probe: answers(p), 120, f"{probe} answered 200",
                       detail=log.read_text)  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()


@pytest.mark.slow
def test_edge_answers_the_charts_probes(helm_tools: HelmTools, tmp_path: Path) -> None:
    """``gridflex edge`` (embedded upstream), configured by the rendered ConfigMap and
    Secret, answers the StatefulSet's HTTP probes and opens the OCPP port its Service
    exposes."""
    ocpp_port, http_port = _free_port(), _free_port()
    docs = helm_tools.render(
        *PROFILES["edge"], "--set", "edge.settings.kafka_bootstrap=",
        "--set", f"edge.ocppPort={ocpp_port}", "--set", f"http.port={http_port}",
    )  # fmt: skip
    config = _pod_files(docs, tmp_path).parent
    edge_yaml = config / "edge.yaml"  # listen on loopback only in a test
    edge_yaml.write_text(edge_yaml.read_text().replace("0.0.0.0", "127.0.0.1"))
    (ctr,) = one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
    env = {**os.environ, **_secret_env(docs, "gridflex-0")}
    log = tmp_path / "edge.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from adapters.cli.main import main; main()",
             ctr["args"][0], "--config", str(edge_yaml)],
            stdout=fh, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:

        def answers(probe: str) -> bool:
            assert proc.poll() is None, log.read_text()
            get = ctr[probe]["httpGet"]
            url = f"http://127.0.0.1:{ports[get['port']]}{get['path']}"
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            wait_until(lambda p=probe: answers(p), 120, f"{probe} answered 200",
                       detail=log.read_text)  # fmt: skip
        with socket.create_connection(("127.0.0.1", ports["ocpp"]), timeout=2):
            pass  # the stations' port is open too
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
    assert (tmp_path / "edge").is_dir()  # the state directory on the data volume was used
