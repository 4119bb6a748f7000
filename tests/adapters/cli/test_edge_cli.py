"""``gridflex edge``: settings checked at once; a real run serves OCPP and stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapters.cli.main import app
from tests.adapters.csms.stations import open_station
from tests.conftest import wait_until

CONFIG = """
csms_id: csms-a
edge_id: edge-1
state_dir: {state}
ocpp: {{host: 127.0.0.1, port: {port}, security_profile: 1}}
sites:
  - {{id: s1, feeder: f1, cap_kw: 40, stations: [cs-1]}}
stations:
  - {{id: cs-1, password: pw-1, max_power_kw: 22}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_check_prints_settings_and_bad_settings_exit_2(tmp_path: Path) -> None:
    good = tmp_path / "edge.yaml"
    good.write_text(CONFIG.format(state=tmp_path / "state", port=9000))
    r = CliRunner().invoke(app, ["edge", "--config", str(good), "--check"])
    assert r.exit_code == 0, r.output
    assert '"csms_id": "csms-a"' in r.output and "pw-1" not in r.output  # secrets masked
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "csms_id: c\nocpp: {security_profile: 1}\n"
        "sites: [{id: s, feeder: f, cap_kw: 10, stations: [a]}]\nstations: [{id: a}]\n"
    )
    r = CliRunner().invoke(app, ["edge", "--config", str(bad)])
    assert r.exit_code == 2
    assert "needs a password for a" in r.output


@pytest.mark.slow
def test_edge_serves_ocpp_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(CONFIG.format(state=tmp_path / "state", port=port))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from adapters.cli.main import main; main()",
            "edge",
            "-c",
            str(cfg),
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def boots() -> bool:
            async def go() -> None:
                st, task = await open_station(
                    f"ws://127.0.0.1:{port}/ocpp", "cs-1", password="pw-1"
                )
                await st.boot(1)
                task.cancel()

            assert proc.poll() is None, "gridflex edge exited"
            try:
                asyncio.run(go())
            except OSError:
                return False
            return True

        wait_until(boots, 60, "a station booting on gridflex edge")
        assert (tmp_path / "state" / "buffer.sqlite3").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "gridflex edge edge-1 for CSMS csms-a" in err
