"""The S2 CEM over TLS and mutual TLS (settings of the edge target), on loopback.

TLS: s2-python's RM client connects over ``wss`` and gets its session; a plain ``ws``
connection is refused. Mutual TLS: a client certificate signed by the configured CA is
let in (the CEM's Handshake arrives); a certificate from another CA, or none (s2-python's
client cannot present one), is refused at the TLS handshake.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from s2python.connection.async_.medium.s2_medium import MediumCouldNotConnectError
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake

from adapters.csms.s2 import S2Cem, S2Resource, S2Settings
from adapters.csms.s2.edge import S2EdgeSettings
from adapters.csms.s2.simrm import SimRm
from aggregator.messages import Telemetry
from tests.integration.s2_peer import ev, until
from tests.pki import issue, write_pem

pytestmark = pytest.mark.slow
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    d = tmp_path_factory.mktemp("s2pki")
    out = {}
    ca_key, other_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = issue("gridflex test CA", ca_key, None, ca_key, ca=True)
    other = issue("someone else's CA", other_key, None, other_key, ca=True)
    out["ca"] = write_pem(d / "ca", ca, ca_key)
    for stem, issuer, server in (
        ("server", (ca.subject, ca_key), True),
        ("rm", (ca.subject, ca_key), False),
        ("stranger", (other.subject, other_key), False),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = issue(stem, key, issuer[0], issuer[1], ip=server)
        out[stem] = write_pem(d / stem, cert, key)
    return out


def _cem(cfg: S2EdgeSettings, rid: uuid.UUID, got: list[Telemetry]) -> S2Cem:
    class Clock:
        def now(self) -> dt.datetime:
            return dt.datetime.now(dt.UTC)

    return S2Cem(
        S2Settings("csms-a", (S2Resource(str(rid), "evse-0", "s1", "f1"),)),
        got.append,
        Clock(),
        ssl_context=cfg.ssl_context(),
    )


def _client(pki: dict[str, tuple[str, str]], cert: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki["ca"][0])
    if cert is not None:
        ctx.load_cert_chain(*pki[cert])
    return ctx


def test_tls_lets_the_s2_python_rm_in_and_refuses_plain_ws(pki: dict[str, tuple[str, str]]) -> None:
    async def scenario() -> None:
        rid = uuid.uuid4()
        got: list[Telemetry] = []
        cert, key = pki["server"]
        cem = _cem(S2EdgeSettings(certfile=cert, keyfile=key), rid, got)
        port = await cem.start()
        with pytest.raises(MediumCouldNotConnectError):
            await SimRm(f"ws://127.0.0.1:{port}", rid, ev()).start()
        peer = SimRm(f"wss://127.0.0.1:{port}", rid, ev(), verify_certificate=False)
        await peer.start()
        await until(lambda: got, 10, "session_started over wss")
        await peer.stop()
        await cem.close()

    asyncio.run(scenario())


def test_mutual_tls_refuses_a_foreign_or_missing_client_certificate(
    pki: dict[str, tuple[str, str]],
) -> None:
    async def scenario() -> None:
        cert, key = pki["server"]
        cem = _cem(
            S2EdgeSettings(certfile=cert, keyfile=key, cafile=pki["ca"][0]), uuid.uuid4(), []
        )
        port = await cem.start()
        url = f"wss://127.0.0.1:{port}"
        async with connect(url, ssl=_client(pki, "rm")) as ws:
            hello = json.loads(await ws.recv())
            assert (hello["message_type"], hello["role"]) == ("Handshake", "CEM")
        for bad in ("stranger", None):
            # refused in the TLS handshake (TLS 1.3: seen by the client as the upgrade failing)
            with pytest.raises((ssl.SSLError, InvalidHandshake, ConnectionError)):
                async with connect(url, ssl=_client(pki, bad), open_timeout=10) as ws:
                    await ws.recv()
        with pytest.raises(MediumCouldNotConnectError):
            await SimRm(url, uuid.uuid4(), ev(), verify_certificate=False).start()
        await cem.close()

    asyncio.run(scenario())
