"""``gridflex market bid --method cvar``: the CVaR LP's volumes, JSON only on stdout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from adapters.cli.main import app

RURAL = Path(__file__).parents[2] / "data" / "scenarios" / "rural" / "scenario.yaml"


def _bid(hist: Path, out: Path, method: str) -> list[dict[str, object]]:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from adapters.cli.main import main; main()",
            "market",
            "bid",
            str(RURAL),
            "--day",
            "2026-01-14",
            "--history",
            str(hist),
            "--copies",
            "3",
            "--scenarios",
            "200",
            "--product",
            "both",
            "--method",
            method,
            "--now",
            "2026-01-13T06:00:00Z",
            "--out",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    docs: list[dict[str, object]] = json.loads(proc.stdout)  # the solver banner is not here
    return docs


def test_cvar_bids_are_sized_by_the_lp_and_never_above_the_quantile(tmp_path: Path) -> None:
    hist = tmp_path / "history.csv"
    r = CliRunner().invoke(
        app,
        [
            *("market", "history", str(hist), "--scenario", str(RURAL), "--copies", "3"),
            *("--evses", "10", "--weeks", "8", "--until", "2026-01-13"),
        ],
    )
    assert r.exit_code == 0, r.output
    quantile = _bid(hist, tmp_path / "q", "quantile")
    cvar = _bid(hist, tmp_path / "c", "cvar")
    assert [d["sizing"] for d in quantile] == ["quantile", "quantile"]
    assert [d["sizing"] for d in cvar] == ["cvar", "cvar"]
    lower = False
    for q, c in zip(quantile, cvar, strict=True):
        assert isinstance(q["firm_mw"], dict) and isinstance(c["firm_mw"], dict)
        for name, volumes in q["firm_mw"].items():
            for vq, vc in zip(volumes, c["firm_mw"][name], strict=True):
                assert vc <= vq + 1e-3
                lower |= vc < vq - 1e-3
    assert lower  # the tail has spread: the CVaR volume is lower in some block
    doc = json.loads((tmp_path / "c" / "bid-afrr-2026-01-14.json").read_text())
    assert doc["sizing"] == "cvar"
