"""The OpenADR VEN against a real openleadr VTN on 127.0.0.1, wired to a real Service.

The VTN (openleadr's ``OpenADRServer``) runs in this process on its own asyncio thread;
the VEN (:class:`adapters.openadr.OpenAdrVen`) runs on its own thread too and hands its
messages to the test thread through a queue, as ``gridflex serve`` must (the service is
single-threaded). Certificates for mutual TLS are made here with ``cryptography``.

Done when: a LOAD_DISPATCH limit for feeder f1 reaches the service within one poll
interval (plus a plan), the published setpoints of f1 stay under it over the event's
whole window, the VTN sees optIn and receives TELEMETRY_USAGE in W — over plain HTTP and
over mutual TLS with XML signatures; a VTN with a certificate from another CA, or one
whose signing certificate does not have the configured fingerprint, is refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from openleadr import OpenADRServer, objects  # type: ignore[import-untyped, unused-ignore]
from openleadr.utils import (  # type: ignore[import-untyped, unused-ignore]
    certificate_fingerprint,
)

from adapters.openadr import OpenAdrConfig, OpenAdrTarget, OpenAdrVen
from adapters.stream.inprocess import RecordingSink
from aggregator.interfaces import ManualClock
from aggregator.messages import DsoLimitCancel, DsoLimitMessage
from aggregator.service.replica import Service
from tests.integration.dso_fleet import TOPO, charging_fleet

pytestmark = pytest.mark.slow

POLL_S = 1.0
VEN_ID, REG_ID, VTN_ID = "ven-1", "reg-1", "VTN-TEST"  # an all-lowercase vtnID is refused
LIMIT_KW = 12.0
WINDOW = timedelta(minutes=10)
F1 = OpenAdrTarget(type="feeder", id="f1", capacity_kw=60.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(check: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


# ------------------------------------------------------------------------ certificates


@dataclass(frozen=True)
class Pki:
    ca: Path
    vtn_cert: Path
    vtn_key: Path
    ven_cert: Path
    ven_key: Path
    rogue_ca: Path
    rogue_vtn_cert: Path  # signed by rogue_ca
    rogue_vtn_key: Path
    other_vtn_cert: Path  # signed by ca, but not the certificate the VEN was told about

    def fingerprint(self, cert: Path) -> str:
        fp: str = certificate_fingerprint(cert.read_text())
        return fp


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write(path: Path, cert: x509.Certificate, key: rsa.RSAPrivateKey | None = None) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )


def _cert(
    name: str,
    key: rsa.RSAPrivateKey,
    issuer: tuple[x509.Certificate, rsa.RSAPrivateKey] | None,
    *,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name = subject if issuer is None else issuer[0].subject
    signing_key = key if issuer is None else issuer[1]
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if issuer is None:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        b = b.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), True
        )
    else:
        b = b.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        b = b.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()), False
        )
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), False)
        if server:
            alt = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            b = b.add_extension(x509.SubjectAlternativeName(alt), False)
    return b.sign(signing_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key, rogue_key = _key(), _key()
    ca = _cert("gridflex test CA", ca_key, None)
    rogue = _cert("rogue CA", rogue_key, None)
    _write(d / "ca.pem", ca)
    _write(d / "rogue-ca.pem", rogue)
    for name, issuer, server in [
        ("vtn", (ca, ca_key), True),
        ("ven", (ca, ca_key), False),
        ("rogue-vtn", (rogue, rogue_key), True),
        ("other-vtn", (ca, ca_key), True),
    ]:
        key = _key()
        _write(d / f"{name}.pem", _cert(name, key, issuer, server=server), key)
    return Pki(
        ca=d / "ca.pem",
        vtn_cert=d / "vtn.pem",
        vtn_key=d / "vtn.key",
        ven_cert=d / "ven.pem",
        ven_key=d / "ven.key",
        rogue_ca=d / "rogue-ca.pem",
        rogue_vtn_cert=d / "rogue-vtn.pem",
        rogue_vtn_key=d / "rogue-vtn.key",
        other_vtn_cert=d / "other-vtn.pem",
    )


# ------------------------------------------------------------------------------ the VTN


@dataclass
class Vtn:
    """An openleadr VTN on its own loop, recording registrations, opts and reports."""

    loop: asyncio.AbstractEventLoop
    port: int
    tls: tuple[Path, Path, Path] | None = None  # cert, key (TLS and signing), client CA
    ven_fingerprint: str | None = None
    registrations: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[str] = field(default_factory=list)  # polls answered, events added (in order)
    opts: list[tuple[str, str]] = field(default_factory=list)
    reports: list[tuple[str, float]] = field(default_factory=list)
    server: Any = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}/OpenADR2/Simple/2.0b"

    def _build(self) -> Any:
        cert, key, ca = self.tls if self.tls else (None, None, None)
        server = OpenADRServer(
            vtn_id=VTN_ID,
            http_port=self.port,
            http_host="127.0.0.1",
            requested_poll_freq=timedelta(seconds=10),  # the VEN's poll_interval_s wins
            # openleadr keeps these on a class shared by every server: always set them
            ven_lookup=self._ven_lookup,
            verify_message_signatures=self.tls is not None,
            cert=str(cert) if cert else None,
            key=str(key) if key else None,
            http_cert=str(cert) if cert else None,
            http_key=str(key) if key else None,
            http_ca_file=str(ca) if ca else None,
            show_fingerprint=False,
        )
        server.add_handler("on_create_party_registration", self._register)
        server.add_handler("on_register_report", self._register_report)
        poll_service = server.services["poll_service"]
        answer_poll = poll_service.handlers["oadrPoll"]

        async def poll(payload: dict[str, Any]) -> tuple[str, Any]:
            response_type, response = await answer_poll(payload)
            self.timeline.append(f"poll→{response_type}")
            return response_type, response

        poll_service.handlers["oadrPoll"] = poll
        return server

    def _ven_lookup(self, ven_id: str) -> dict[str, Any] | None:
        if ven_id != VEN_ID:
            return None
        return {
            "ven_id": VEN_ID,
            "ven_name": "gridflex",
            "fingerprint": self.ven_fingerprint,
            "registration_id": REG_ID,
        }

    def _register(self, payload: dict[str, Any]) -> tuple[str, str] | bool:
        self.registrations.append(payload)
        if self.tls and payload.get("fingerprint") != self.ven_fingerprint:
            return False
        return VEN_ID, REG_ID

    def _register_report(
        self,
        ven_id: str,
        resource_id: str,
        measurement: str,
        unit: str,
        scale: str,
        min_sampling_interval: timedelta,
        max_sampling_interval: timedelta,
    ) -> tuple[Callable[[list[tuple[datetime, float]]], None], timedelta]:
        assert (measurement, unit, scale) == ("RealPower", "W", "none")

        def receive(values: list[tuple[datetime, float]]) -> None:
            self.reports += [(resource_id, v) for _, v in values]

        return receive, min_sampling_interval

    def _on(self, fn: Callable[[], Any]) -> Any:
        async def run() -> Any:
            result = fn()
            return await result if asyncio.iscoroutine(result) else result

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def start(self) -> None:
        self.server = self._on(self._build)
        self._on(self.server.run)

    def stop(self) -> None:
        if self.server is not None:
            self._on(self.server.stop)

    def load_dispatch(self, event_id: str, start: datetime, kw: float, resource: str) -> None:
        """A LOAD_DISPATCH setpoint of ``kw`` (sent as powerReal with siScaleCode k)."""
        measurement = objects.Measurement(
            name="powerReal",
            description="RealPower",
            unit="W",
            scale="k",
            power_attributes=objects.PowerAttributes(hertz=50, voltage=230, ac=True),
        )
        ev = objects.Event(
            event_descriptor=objects.EventDescriptor(
                event_id=event_id,
                modification_number=0,
                market_context="oadr://dso.example",
                event_status="far",
            ),
            event_signals=[
                objects.EventSignal(
                    intervals=[objects.Interval(dtstart=start, duration=WINDOW, signal_payload=kw)],
                    signal_name="LOAD_DISPATCH",
                    signal_type="setpoint",
                    signal_id=f"{event_id}-signal",
                    measurement=measurement,
                )
            ],
            targets=[objects.Target(resource_id=resource)],
        )

        def opt(ven_id: str, event_id: str, opt_type: str) -> None:
            self.opts.append((event_id, opt_type))

        def add() -> None:
            self.server.add_raw_event(ven_id=VEN_ID, event=ev, callback=opt)
            self.timeline.append(f"added {event_id}")

        self._on(add)

    def polls_until_delivered(self, event_id: str) -> int:
        """How many polls the VEN made from adding ``event_id`` up to its delivery."""
        after = self.timeline[self.timeline.index(f"added {event_id}") + 1 :]
        polls = [t for t in after if t.startswith("poll→")]
        return polls.index("poll→oadrDistributeEvent") + 1

    def cancel(self, event_id: str) -> None:
        self._on(lambda: self.server.cancel_event(VEN_ID, event_id))


@pytest.fixture
def vtn_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="vtn", daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


@pytest.fixture
def running() -> Iterator[list[Callable[[], None]]]:
    """Stop callbacks, run in reverse order whatever the test did."""
    stops: list[Callable[[], None]] = []
    yield stops
    for stop in reversed(stops):
        stop()
    assert [t.name for t in threading.enumerate() if t.name == "openadr-ven"] == []


# ----------------------------------------------------------------- the service around


@dataclass
class Rig:
    service: Service
    sink: RecordingSink
    clock: ManualClock
    inbox: queue.Queue[DsoLimitMessage | DsoLimitCancel]
    measured_kw: dict[str, float]

    def feeder_kw(self) -> dict[str, float]:
        """Σ of the newest setpoints per feeder (one batch per CSMS)."""
        latest = {b.csms_id: b for b in self.sink.batches}
        fleet = self.service.fleet
        out = {f.feeder_id: 0.0 for f in TOPO.feeders}
        for batch in latest.values():
            for evse, kw in zip(batch.evse_ids, batch.power_kw, strict=True):
                site = TOPO.sites[int(fleet.site[fleet.slot_of[evse]])]
                out[site.feeder_id] += kw
        return out

    def dispatch(self, at: datetime) -> dict[str, float]:
        self.clock.set(at)
        self.service.tick()
        self.service.dispatch(0.0)
        kw = self.feeder_kw()
        self.measured_kw.update(kw)  # what the VEN reports next
        return kw


def make_rig() -> Rig:
    now = datetime.now(UTC)
    svc, clock, sink = charging_fleet(now)
    rig = Rig(svc, sink, clock, queue.Queue(), {})
    before = rig.dispatch(now)
    assert before["f1"] > 3 * LIMIT_KW  # unconstrained, f1 would draw far more
    return rig


def ven_config(vtn: Vtn, **kw: Any) -> OpenAdrConfig:
    return OpenAdrConfig(
        vtn_url=vtn.url,
        ven_name="gridflex",
        poll_interval_s=POLL_S,
        report_interval_s=1.0,
        registration_retry_s=0.5,
        targets={"feeder-f1": F1},
        **kw,
    )


def start_ven(cfg: OpenAdrConfig, rig: Rig, running: list[Callable[[], None]]) -> OpenAdrVen:
    ven = OpenAdrVen(cfg, publish=rig.inbox.put, measured_kw=lambda target: rig.measured_kw[target])
    ven.start()
    running.append(ven.stop)
    return ven


def check_limit_end_to_end(vtn: Vtn, ven: OpenAdrVen, rig: Rig) -> None:
    assert ven.wait_registered(10), ven.status()
    start = datetime.now(UTC)
    vtn.load_dispatch("EV-1", start, LIMIT_KW, "feeder-f1")
    issued = time.monotonic()

    msg = rig.inbox.get(timeout=POLL_S + 5)
    received_s = time.monotonic() - issued
    assert isinstance(msg, DsoLimitMessage)
    assert rig.service.on_grid_signal(msg) is None  # accepted; re-plans at once
    reacted_s = time.monotonic() - issued
    # within one poll interval: delivered at the VEN's first poll after the VTN issued it
    # (the VEN polls every POLL_S); the wall-clock bounds leave room for a loaded machine
    assert vtn.polls_until_delivered("EV-1") == 1, vtn.timeline
    assert received_s <= POLL_S + 5.0, received_s
    assert reacted_s <= POLL_S + 5.0 + rig.service.config.plan_time_limit_s, reacted_s

    # the limit book holds the event's window, the VEN's units were converted
    (lim,) = rig.service.limits.limits
    assert (lim.target_type, lim.target_id, lim.source) == ("feeder", "f1", "openadr")
    assert lim.limit_kw == pytest.approx(LIMIT_KW)
    assert abs(lim.start - start) < timedelta(milliseconds=1)
    assert abs(lim.end - (start + WINDOW)) < timedelta(milliseconds=1)

    # setpoints of f1 stay under the limit for the whole window; f2 is not held back
    now = datetime.now(UTC)
    steps = [now + timedelta(seconds=30 * k) for k in range(int(WINDOW.total_seconds() / 30))]
    for at in [t for t in steps if t < lim.end]:
        kw = rig.dispatch(at)
        assert kw["f1"] <= LIMIT_KW + 1e-6, (at, kw)
        assert kw["f2"] > 10.0
    rig.dispatch(datetime.now(UTC))

    assert wait_for(lambda: ("EV-1", "optIn") in vtn.opts, 5), vtn.opts
    assert ven.decisions["EV-1"].opt == "optIn"
    expected_w = rig.measured_kw["f1"] * 1000.0
    assert wait_for(lambda: any(v == pytest.approx(expected_w) for _, v in vtn.reports), 5), (
        vtn.reports
    )
    assert {resource for resource, _ in vtn.reports} == {"feeder-f1"}

    # a cancellation withdraws the limit
    vtn.cancel("EV-1")
    cancel = rig.inbox.get(timeout=POLL_S + 5)
    assert isinstance(cancel, DsoLimitCancel) and cancel.event_id == msg.event_id
    assert rig.service.on_grid_signal(cancel) is None
    assert rig.service.limits.limits == ()


# -------------------------------------------------------------------------------- tests


def test_plain_http_limit_reaches_the_setpoints_opt_in_and_telemetry(
    vtn_loop: asyncio.AbstractEventLoop, running: list[Callable[[], None]]
) -> None:
    vtn = Vtn(vtn_loop, free_port())
    vtn.start()
    running.append(vtn.stop)
    rig = make_rig()
    ven = start_ven(ven_config(vtn), rig, running)
    check_limit_end_to_end(vtn, ven, rig)
    status = ven.status()
    assert status.registered and status.ven_id == VEN_ID and status.attempts == 1


def test_mutual_tls_with_xml_signatures(
    vtn_loop: asyncio.AbstractEventLoop, running: list[Callable[[], None]], pki: Pki
) -> None:
    vtn = Vtn(
        vtn_loop,
        free_port(),
        tls=(pki.vtn_cert, pki.vtn_key, pki.ca),
        ven_fingerprint=pki.fingerprint(pki.ven_cert),
    )
    vtn.start()
    running.append(vtn.stop)
    rig = make_rig()
    cfg = ven_config(
        vtn,
        cert=pki.ven_cert,
        key=pki.ven_key,
        ca=pki.ca,
        vtn_fingerprint=pki.fingerprint(pki.vtn_cert),
    )
    ven = start_ven(cfg, rig, running)
    check_limit_end_to_end(vtn, ven, rig)
    # the VTN saw the VEN's client certificate (and verified its signatures to accept it)
    assert vtn.registrations[-1]["fingerprint"] == pki.fingerprint(pki.ven_cert)


@pytest.mark.parametrize("wrong", ["vtn certificate from another CA", "vtn fingerprint"])
def test_a_vtn_with_the_wrong_certificate_is_refused(
    vtn_loop: asyncio.AbstractEventLoop,
    running: list[Callable[[], None]],
    pki: Pki,
    wrong: str,
) -> None:
    if wrong.startswith("vtn certificate"):
        tls = (pki.rogue_vtn_cert, pki.rogue_vtn_key, pki.ca)
        told_fingerprint = pki.fingerprint(pki.vtn_cert)
        expected_error = "CERTIFICATE_VERIFY_FAILED"
    else:
        tls = (pki.vtn_cert, pki.vtn_key, pki.ca)
        told_fingerprint = pki.fingerprint(pki.other_vtn_cert)
        expected_error = "fingerprint was incorrect"
    vtn = Vtn(vtn_loop, free_port(), tls=tls, ven_fingerprint=pki.fingerprint(pki.ven_cert))
    vtn.start()
    running.append(vtn.stop)
    vtn.load_dispatch("EV-X", datetime.now(UTC), LIMIT_KW, "feeder-f1")
    rig = make_rig()
    cfg = ven_config(
        vtn, cert=pki.ven_cert, key=pki.ven_key, ca=pki.ca, vtn_fingerprint=told_fingerprint
    )
    ven = start_ven(cfg, rig, running)

    assert not ven.wait_registered(POLL_S + 2.5)
    assert wait_for(lambda: ven.status().attempts >= 2, 5)  # retried, refused again
    status = ven.status()
    assert not status.registered and status.registration_id is None
    assert status.last_error is not None and expected_error in status.last_error
    assert rig.inbox.empty()  # nothing published …
    assert vtn.opts == []  # … and the VTN's event was never accepted
    assert ven.decisions == {}
