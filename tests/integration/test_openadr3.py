"""The OpenADR 3.1 VEN against a real VTN (openleadr-vtn + PostgreSQL on 127.0.0.1).

The VTN comes from the ``openleadr_vtn`` session fixture (``scripts/openleadr-vtn.sh``: built
with cargo, its own OAuth 2.0 token endpoint). The test plays the DSO's business logic with
the VTN's admin client: it creates the VEN's user and credentials, the VEN object with its
targets, a program and events. The VEN (:class:`adapters.openadr3.OpenAdr3Ven`) feeds a real
:class:`~adapters.dso.intake.LimitIntake` whose ``publish`` queues the grid signals for the
test thread, which hands them to a real single-threaded Service — as ``gridflex serve`` does.

Done when: an IMPORT_CAPACITY_LIMIT for feeder f1 reaches the service by push (websocket)
and by poll, the published setpoints of f1 stay under it over the event's whole window,
the VTN holds the VEN's USAGE / BASELINE / regulation report, a deleted event withdraws the
limit; the safe-mode cap is applied while the network to the VTN is down and withdrawn when
it answers again; wrong client secrets, unknown clients and forged tokens are refused and
publish nothing; the webhook callback takes only notifications with its bearer token.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.openadr3 import (
    AuthRefused,
    OpenAdr3Config,
    OpenAdr3Target,
    OpenAdr3Ven,
    Readings,
    TokenSource,
    VtnClient,
    VtnError,
)
from adapters.openadr3.push import NOTIFY_PATH
from aggregator.messages import DsoLimitCancel, DsoLimitMessage
from tests.conftest import OpenAdr3Vtn, wait_until
from tests.integration.dso_fleet import DsoRig as Rig
from tests.integration.streaming import TOPOLOGY, free_port

pytestmark = pytest.mark.slow

LIMIT_KW = 12.0
SAFE_KW = 8.0
WINDOW = timedelta(minutes=10)
F1 = OpenAdr3Target(type="feeder", id="f1")
VEN_SCOPES = [
    "read_targets",
    "read_ven_objects",
    "write_reports_ven",
    "write_subscriptions_ven",
    "write_vens_ven",
]


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------- the DSO's business logic


class Dso:
    """The VTN's admin (business logic) client."""

    def __init__(self, vtn: OpenAdr3Vtn) -> None:
        self.vtn = vtn
        self.http = httpx.Client(timeout=10)
        tokens = TokenSource(self.http, vtn.token_url, vtn.admin_client_id, vtn.admin_client_secret)
        self.api = VtnClient(self.http, vtn.url, tokens)

    def ven_client(self, name: str, targets: list[str]) -> tuple[str, str, str]:
        """A VEN user with a credential, and its VEN object: (user id, client id, secret)."""
        user = self.api.post(
            "/users", {"reference": name, "description": "gridflex VEN", "scope": VEN_SCOPES}
        )
        client_id, secret = f"{name}-client", secrets.token_urlsafe(16)
        self.api.post(f"/users/{user['id']}", {"client_id": client_id, "client_secret": secret})
        self.api.post(
            "/vens",
            {
                "objectType": "BL_VEN_REQUEST",
                "clientID": client_id,
                "venName": name,
                "targets": targets,
            },
        )
        return str(user["id"]), client_id, secret

    def program(self, name: str) -> str:
        return str(self.api.post("/programs", {"objectType": "PROGRAM", "programName": name})["id"])

    def event(
        self, program_id: str, start: datetime, kw: float, target: str, name: str = "congestion"
    ) -> str:
        body = {
            "objectType": "EVENT",
            "programID": program_id,
            "eventName": name,
            "priority": 1,
            "targets": [target],
            "payloadDescriptors": [
                {
                    "objectType": "EVENT_PAYLOAD_DESCRIPTOR",
                    "payloadType": "IMPORT_CAPACITY_LIMIT",
                    "units": "KW",
                }
            ],
            "intervalPeriod": {"start": iso(start), "duration": "PT10M"},
            "intervals": [
                {"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [kw]}]}
            ],
        }
        return str(self.api.post("/events", body)["id"])

    def withdraw(self, event_id: str) -> None:
        """Delete an event, and first the reports that refer to it (the VTN keeps an event
        while reports refer to it; a VEN may file one more in between: try again)."""

        def deleted() -> bool:
            for rep in self.api.get("/reports", eventID=event_id) or []:
                self.api.delete(f"/reports/{rep['id']}")
            try:
                self.api.delete(f"/events/{event_id}")
            except VtnError as exc:
                if exc.status != 409:
                    raise
                return False
            return True

        wait_until(deleted, 20, f"event {event_id} deleted")


# ----------------------------------------------------------------- the service around


def make_rig() -> Rig:
    now = datetime.now(UTC)
    rig = Rig.charging(now)
    assert rig.dispatch(now)["f1"] > 3 * LIMIT_KW  # unconstrained, f1 would draw far more
    return rig


@pytest.fixture
def running() -> Iterator[list[Callable[[], None]]]:
    stops: list[Callable[[], None]] = []
    yield stops
    for stop in reversed(stops):
        stop()


@pytest.fixture(scope="module")
def dso(openleadr_vtn: OpenAdr3Vtn) -> Dso:
    return Dso(openleadr_vtn)


def ven_config(
    vtn: OpenAdr3Vtn, client_id: str, secret: str, name: str, **kw: Any
) -> OpenAdr3Config:
    values: dict[str, Any] = {
        "vtn_url": vtn.url,
        "client_id": client_id,
        "client_secret": secret,
        "ven_name": name,
        "program_names": (f"{name}-program",),
        "poll_interval_s": 1.0,
        "report_interval_s": 1.0,
        "safe_mode_after_s": 2.0,
        "targets": {"feeder-f1": F1},
    }
    values.update(kw)
    return OpenAdr3Config.model_validate(values)


def start(
    cfg: OpenAdr3Config, rig: Rig, running: list[Callable[[], None]], **kw: Any
) -> OpenAdr3Ven:
    ven = OpenAdr3Ven(cfg, rig.intake.relay, **kw)
    ven.start()
    running.append(ven.stop)
    return ven


# -------------------------------------------------------------------------------- tests


def test_limit_by_push_and_poll_reaches_the_setpoints_reports_and_withdrawal(
    dso: Dso, openleadr_vtn: OpenAdr3Vtn, running: list[Callable[[], None]]
) -> None:
    _, client_id, secret = dso.ven_client("ven-a", ["feeder-f1"])
    program = dso.program("ven-a-program")
    rig = make_rig()
    readings = Readings(usage_kw=10.5, baseline_kw=11.0, up_kw=2.0, down_kw=9.0)
    # a slow poll: the event must come by the websocket push first
    cfg = ven_config(
        openleadr_vtn,
        client_id,
        secret,
        "ven-a",
        poll_interval_s=30.0,
        safe_mode_after_s=120.0,
        subscription="websocket",
    )
    ven = start(cfg, rig, running, readings=lambda target: readings)
    assert ven.wait_connected(20), ven.status()
    assert ven.status().ven_id is not None
    wait_until(
        lambda: ven.status().push_ready, 20, "the VTN's websocket", detail=lambda: str(ven.status())
    )

    begin = datetime.now(UTC)
    event_id = dso.event(program, begin, LIMIT_KW, "feeder-f1")
    msg = rig.next_signal(timeout_s=10)  # pushed: far sooner than the 30 s poll
    assert isinstance(msg, DsoLimitMessage)
    assert ven.status().notifications >= 1
    (lim,) = rig.service.limits.limits
    assert (lim.target_type, lim.target_id, lim.source) == ("feeder", "f1", "openadr3")
    assert lim.limit_kw == pytest.approx(LIMIT_KW)
    assert abs(lim.start - begin) < timedelta(seconds=1)
    assert abs(lim.end - (begin + WINDOW)) < timedelta(seconds=1)
    assert [e.limit.event_id for e in rig.intake.book.entries()] == [lim.event_id]

    # the setpoints of f1 stay under the limit over the whole window; f2 is not held back
    steps = [begin + timedelta(seconds=30 * k) for k in range(int(WINDOW.total_seconds() / 30))]
    for at in [t for t in steps if t >= datetime.now(UTC) - timedelta(seconds=5) and t < lim.end]:
        kw = rig.dispatch(max(at, datetime.now(UTC)))
        assert kw["f1"] <= LIMIT_KW + 1e-6, (at, kw)
        assert kw["f2"] > 10.0

    # the VTN holds the VEN's report for the event: USAGE, BASELINE, regulation, in kW
    def report() -> Any:
        got = dso.api.get("/reports", eventID=event_id) or []
        return got[0] if got else None

    rep = wait_until(report, 20, "the VEN's report at the VTN", detail=lambda: str(ven.status()))
    payloads = {p["type"]: p["values"][0] for p in rep["resources"][0]["intervals"][0]["payloads"]}
    assert payloads == {
        "USAGE": 10.5,
        "BASELINE": 11.0,
        "UP_REGULATION_AVAILABLE": 2.0,
        "DOWN_REGULATION_AVAILABLE": 9.0,
    }
    assert rep["resources"][0]["resourceName"] == "feeder-f1"

    # deleting the event withdraws the limit (the VTN keeps an event while reports refer
    # to it: the DSO deletes those first; the VEN may file one more in between)
    dso.withdraw(event_id)
    cancel = rig.next_signal(timeout_s=10)
    assert isinstance(cancel, DsoLimitCancel) and cancel.event_id == lim.event_id
    assert rig.service.limits.limits == ()


class Outage:
    """A loopback TCP forwarder to the VTN that the test can cut and restore (a network
    outage between VEN and VTN, with the VTN itself running on for the other tests)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = threading.Event()
        self.up.set()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            if not self.up.is_set():
                client.close()  # the network is down: nothing gets through
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up.clear()
        for sock in self._conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._conns.clear()

    def restore(self) -> None:
        self.up.set()

    def close(self) -> None:
        self._stop.set()
        self.cut()
        self._thread.join(5)
        self._server.close()


def test_polling_alone_delivers_and_the_safe_mode_cap_holds_while_the_vtn_is_unreachable(
    dso: Dso, openleadr_vtn: OpenAdr3Vtn, running: list[Callable[[], None]]
) -> None:
    _, client_id, secret = dso.ven_client("ven-b", ["feeder-f1"])
    program = dso.program("ven-b-program")
    far = datetime.now(UTC) + timedelta(days=1)
    dso.event(program, far, SAFE_KW, "feeder-f1", name="SAFE_MODE")
    rig = make_rig()
    outage = Outage(int(openleadr_vtn.url.rsplit(":", 1)[1]))
    running.append(outage.close)
    via = f"http://127.0.0.1:{outage.port}"
    cfg = ven_config(
        openleadr_vtn,
        client_id,
        secret,
        "ven-b",
        subscription="none",
        vtn_url=via,
        token_url=f"{via}/auth/token",
    )
    ven = start(cfg, rig, running)
    assert ven.wait_connected(20), ven.status()
    wait_until(lambda: ven.status().safe_mode_caps == 1, 10, "the safe-mode cap to be known")
    assert rig.signals.empty()  # the safe-mode event is not a limit while the VTN answers

    event_id = dso.event(program, datetime.now(UTC), LIMIT_KW, "feeder-f1")
    msg = rig.next_signal(timeout_s=10)  # by poll (1 s)
    assert isinstance(msg, DsoLimitMessage) and msg.limit_kw == pytest.approx(LIMIT_KW)
    dso.withdraw(event_id)
    assert isinstance(rig.next_signal(timeout_s=10), DsoLimitCancel)

    # the network to the VTN goes down: after safe_mode_after_s (2 s) the safe-mode cap
    # applies, and the setpoints of f1 stay under it
    outage.cut()
    safe = rig.next_signal(timeout_s=20)
    assert isinstance(safe, DsoLimitMessage)
    assert (safe.target_id, safe.limit_kw) == ("f1", pytest.approx(SAFE_KW))
    status = ven.status()
    assert status.safe_mode_active and not status.connected and not status.auth_refused
    kw = rig.dispatch(datetime.now(UTC) + timedelta(seconds=1))
    assert kw["f1"] <= SAFE_KW + 1e-6, kw

    # the VTN answers again: safe mode is withdrawn
    outage.restore()
    back = rig.next_signal(timeout_s=20)
    assert isinstance(back, DsoLimitCancel) and back.event_id == safe.event_id
    assert not ven.status().safe_mode_active
    assert rig.service.limits.limits == ()


@pytest.mark.parametrize("wrong", ["secret", "client"])
def test_wrong_credentials_are_refused_and_publish_nothing(
    dso: Dso, openleadr_vtn: OpenAdr3Vtn, running: list[Callable[[], None]], wrong: str
) -> None:
    _, client_id, secret = dso.ven_client(f"ven-c-{wrong}", ["feeder-f1"])
    program = dso.program(f"ven-c-{wrong}-program")
    dso.event(program, datetime.now(UTC), LIMIT_KW, "feeder-f1")
    rig = make_rig()
    if wrong == "secret":
        cfg = ven_config(openleadr_vtn, client_id, secret + "x", f"ven-c-{wrong}")
    else:
        cfg = ven_config(openleadr_vtn, "nobody", secret, f"ven-c-{wrong}")
    ven = start(cfg, rig, running)
    status = wait_until(
        lambda: (s := ven.status()).auth_refused and s, 20, "the token request to be refused"
    )
    assert "401" in (status.last_error or "") and not status.connected
    assert status.polls == 0 and rig.signals.empty() and rig.intake.book.entries() == []
    # the token endpoint says why (RFC 6749: invalid_client), without echoing the secret
    r = httpx.post(
        openleadr_vtn.token_url,
        data={"grant_type": "client_credentials"},
        auth=(cfg.client_id, cfg.client_secret.get_secret_value()),
    )
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert secret not in r.text


def test_forged_and_missing_tokens_are_refused_by_the_vtn(
    dso: Dso, openleadr_vtn: OpenAdr3Vtn
) -> None:
    class Forged(TokenSource):
        def token(self, *, fresh: bool = False) -> str:
            return "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"

    http = httpx.Client(timeout=10)
    forged = VtnClient(http, openleadr_vtn.url, Forged(http, "http://unused", "x", "y"))
    with pytest.raises(AuthRefused):
        forged.get("/programs")
    assert http.get(f"{openleadr_vtn.url}/programs").status_code == 401
    # the admin's token works on the same endpoint
    assert isinstance(dso.api.get("/programs"), list)


def test_webhook_subscription_is_registered_and_its_callback_takes_only_its_token(
    dso: Dso, openleadr_vtn: OpenAdr3Vtn, running: list[Callable[[], None]]
) -> None:
    """openleadr-vtn 0.2.8 stores WEBHOOK subscriptions but delivers only by websocket and
    MQTT, so here the test posts the notification the VTN would send to the callback."""
    _, client_id, secret = dso.ven_client("ven-d", ["feeder-f1"])
    program = dso.program("ven-d-program")
    rig = make_rig()
    cfg = ven_config(
        openleadr_vtn,
        client_id,
        secret,
        "ven-d",
        subscription="webhook",
        poll_interval_s=30.0,
        safe_mode_after_s=120.0,
    )
    ven = start(cfg, rig, running)
    assert ven.wait_connected(20), ven.status()
    subs = dso.api.get("/subscriptions") or []
    (sub,) = [s for s in subs if s["clientName"] == "ven-d"]
    (op,) = sub["objectOperations"]
    assert op["mechanism"] == "WEBHOOK"
    assert op["callbackUrl"] == f"http://127.0.0.1:{ven.webhook_port}{NOTIFY_PATH}"

    begin = datetime.now(UTC)
    event_id = dso.event(program, begin, LIMIT_KW, "feeder-f1")
    event = dso.api.get(f"/events/{event_id}")
    note = {"id": "n-1", "operation": "CREATE", "objectType": "EVENT", "object": event}
    url = op["callbackUrl"]
    assert httpx.post(url, json=note).status_code == 401
    bad = {"Authorization": "Bearer not-the-token"}
    assert httpx.post(url, json=note, headers=bad).status_code == 401
    assert rig.signals.empty()
    good = {"Authorization": f"Bearer {op['bearerToken']}"}
    assert httpx.post(url, json={"operation": "CREATE"}, headers=good).status_code == 400
    assert httpx.post(url, json=note, headers=good).status_code == 200
    msg = rig.next_signal(timeout_s=5)
    assert isinstance(msg, DsoLimitMessage) and msg.limit_kw == pytest.approx(LIMIT_KW)


def test_gridflex_serve_runs_the_ven_when_configured(
    dso: Dso, openleadr_vtn: OpenAdr3Vtn, tmp_path: Path
) -> None:
    """Embedded ``gridflex serve`` with ``openadr3`` set: the VTN's event is a limit in the
    intake's book, listed by ``GET /v1/limits`` with source ``openadr3``; the VEN's state is
    in ``/metrics``."""
    _, client_id, secret = dso.ven_client("ven-e", ["feeder-f1"])
    program = dso.program("ven-e-program")
    topo = tmp_path / "topology.yaml"
    topo.write_text(TOPOLOGY)
    api_port, http_port, token = free_port(), free_port(), "dso-e-token"
    tokens = [
        {
            "sha256": hashlib.sha256(token.encode()).hexdigest(),
            "dso": "dso-e",
            "areas": ["*"],
            "scopes": ["limits:read"],
        }
    ]
    env = dict(os.environ)
    env.update(
        GRIDFLEX_TOPOLOGY=str(topo),
        GRIDFLEX_HTTP_PORT=str(http_port),
        GRIDFLEX_LOG_FORMAT="json",
        GRIDFLEX_API__PORT=str(api_port),
        GRIDFLEX_API__TOKENS=json.dumps(tokens),
        GRIDFLEX_OPENADR3__VTN_URL=openleadr_vtn.url,
        GRIDFLEX_OPENADR3__CLIENT_ID=client_id,
        GRIDFLEX_OPENADR3__CLIENT_SECRET=secret,
        GRIDFLEX_OPENADR3__VEN_NAME="ven-e",
        GRIDFLEX_OPENADR3__PROGRAM_NAMES='["ven-e-program"]',
        GRIDFLEX_OPENADR3__POLL_INTERVAL_S="1",
        GRIDFLEX_OPENADR3__SAFE_MODE_AFTER_S="10",
        GRIDFLEX_OPENADR3__TARGETS=json.dumps({"feeder-f1": {"type": "feeder", "id": "f1"}}),
    )
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from adapters.cli.main import main; main()", "serve"],
            env=env,
            stdout=out,
            stderr=out,
        )
    try:
        auth = {"Authorization": f"Bearer {token}"}

        def listed() -> list[tuple[str, str, float]]:
            assert proc.poll() is None, log.read_text()[-3000:]
            got = httpx.get(f"http://127.0.0.1:{api_port}/v1/limits", headers=auth).json()
            return [(x["source"], x["target_id"], x["limit_kw"]) for x in got]

        wait_until(
            lambda: listed() == [], 60, "serve's API", detail=lambda: log.read_text()[-3000:]
        )
        dso.event(program, datetime.now(UTC), LIMIT_KW, "feeder-f1")
        wait_until(
            lambda: listed() == [("openadr3", "f1", LIMIT_KW)],
            30,
            "the OpenADR 3 limit in serve's book",
            detail=lambda: log.read_text()[-3000:],
        )
        metrics = httpx.get(f"http://127.0.0.1:{http_port}/metrics").text
        for line in ("gridflex_openadr3_connected 1.0", "gridflex_openadr3_events 1.0"):
            assert line in metrics.splitlines(), metrics[-2000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-3000:]
