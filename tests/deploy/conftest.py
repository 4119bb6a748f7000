"""Fixtures of the deployment tests: the pinned ``helm`` and the offline validator.

``helm_tools`` runs ``scripts/helm.sh build`` once per session: the first run builds helm
from the Go module proxy (minutes) and ``kubecheck`` (the strict-decoding validator,
scripts/helm/kubecheck); later runs find both in ``~/.cache/gridflex/helm``. A build that
fails FAILS the tests with the script's output; it never skips them.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
HELM_SH = REPO / "scripts" / "helm.sh"
CHART = REPO / "helm" / "gridflex"
EDGE_PROFILE = CHART / "profiles" / "edge.yaml"
EDGE_EXAMPLE = CHART / "profiles" / "edge-example-site.yaml"
# the Kubernetes release whose API types kubecheck decodes into (k8s.io/api v0.37)
KUBE_VERSION = "1.37.0"
BUILD_TIMEOUT_S = 1800  # first run: helm from source on a busy 2-core machine


@dataclass(frozen=True)
class HelmTools:
    helm: Path
    kubecheck: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.helm), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            check=False,
        )

    def template(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run("template", "gridflex", str(CHART), "--kube-version", KUBE_VERSION, *args)

    def render(self, *args: str) -> list[dict[str, object]]:
        """The manifests of ``helm template`` (fails the test if it does not render)."""
        out = self.template(*args)
        assert out.returncode == 0, out.stderr
        return [d for d in yaml.safe_load_all(out.stdout) if d]

    def validate(self, manifests: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.kubecheck), "-"],
            input=manifests,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture(scope="session")
def helm_tools() -> HelmTools:
    built = subprocess.run(
        [str(HELM_SH), "build"],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    if built.returncode != 0:
        pytest.fail(f"scripts/helm.sh build failed:\n{built.stderr[-4000:]}", pytrace=False)
    helm, kubecheck = built.stdout.split()
    env = dict(os.environ)
    home = Path(helm).parents[2] / "home"
    for key, sub in (("CACHE", "cache"), ("CONFIG", "config"), ("DATA", "data")):
        env[f"HELM_{key}_HOME"] = str(home / sub)
    return HelmTools(Path(helm), Path(kubecheck), env)
