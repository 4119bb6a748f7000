"""Security profiles 1–3 of the OCPP endpoint, on loopback with throwaway certificates."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from websockets.exceptions import InvalidMessage, InvalidStatus

from adapters.csms.ocpp.endpoint import OcppEndpoint, Security
from adapters.csms.ocpp.station import StationPlace
from tests.adapters.csms.stations import await_until, open_station
from tests.pki import issue, write_pem

NOW = dt.datetime.now(dt.UTC)
# TLS 1.3: the client may finish its handshake before the server checks its certificate;
# the server then drops the connection before any HTTP answer
REFUSED = (ssl.SSLError, ConnectionError, InvalidMessage)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    d = tmp_path_factory.mktemp("pki")
    out: dict[str, tuple[str, str]] = {}
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue("gridflex test CA", ca_key, None, ca_key, ca=True)
    out["ca"] = write_pem(d / "ca", ca, ca_key)
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue = issue("rogue CA", rogue_key, None, rogue_key, ca=True)
    for name, cn, issuer, ikey, ip in (
        ("server", "127.0.0.1", ca, ca_key, True),
        ("st1", "st1", ca, ca_key, False),
        ("other", "st2", ca, ca_key, False),
        ("wrong", "st1", rogue, rogue_key, False),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        out[name] = write_pem(d / name, issue(cn, key, issuer.subject, ikey, ip=ip), key)
    return out


def _endpoint(security: Security) -> OcppEndpoint:
    places = {
        s: StationPlace(station_id=s, site_id="s1", feeder_id="f1", csms_id="c1")
        for s in ("st1", "st2")
    }
    return OcppEndpoint(
        places, lambda *_: None, lambda _o: None, lambda: dt.datetime.now(dt.UTC), security=security
    )


def _client_ctx(pki: dict[str, tuple[str, str]], cert: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki["ca"][0])
    if cert is not None:
        ctx.load_cert_chain(*pki[cert])
    return ctx


async def _boots(ep: OcppEndpoint, url: str, sid: str, **kw: Any) -> None:
    st, task = await open_station(url, sid, **kw)
    await st.boot(1)
    await await_until(lambda: sid in ep.ready, 20, f"{sid} set up")
    task.cancel()


def test_profile_1_basic_auth_refuses_a_wrong_password() -> None:
    async def run() -> None:
        ep = _endpoint(Security(profile=1, passwords={"st1": "secret"}))
        port = await ep.start()
        url = f"ws://127.0.0.1:{port}/ocpp"
        await _boots(ep, url, "st1", password="secret")
        for pw in ("wrong", None):
            with pytest.raises(InvalidStatus) as info:
                await open_station(url, "st1", password=pw)
            assert info.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as unknown:
            await open_station(url, "nobody", password="secret")
        assert unknown.value.response.status_code == 404
        await ep.stop()

    asyncio.run(run())


def test_profile_2_tls_with_basic_auth(pki: dict[str, tuple[str, str]]) -> None:
    async def run() -> None:
        cert, key = pki["server"]
        ep = _endpoint(Security(profile=2, passwords={"st1": "pw"}, certfile=cert, keyfile=key))
        port = await ep.start()
        url = f"wss://127.0.0.1:{port}/ocpp"
        await _boots(ep, url, "st1", password="pw", ssl_ctx=_client_ctx(pki, None))
        with pytest.raises(InvalidStatus):
            await open_station(url, "st1", password="nope", ssl_ctx=_client_ctx(pki, None))
        await ep.stop()

    asyncio.run(run())


def test_profile_3_mutual_tls_refuses_a_wrong_certificate(pki: dict[str, tuple[str, str]]) -> None:
    async def run() -> None:
        cert, key = pki["server"]
        ep = _endpoint(Security(profile=3, certfile=cert, keyfile=key, cafile=pki["ca"][0]))
        port = await ep.start()
        url = f"wss://127.0.0.1:{port}/ocpp"
        await _boots(ep, url, "st1", ssl_ctx=_client_ctx(pki, "st1"))
        good = ep.links["st1"]
        # a certificate from another CA: the TLS handshake fails, no handler ever runs
        with pytest.raises(REFUSED):
            await open_station(url, "st1", ssl_ctx=_client_ctx(pki, "wrong"))
        # no client certificate at all
        with pytest.raises(REFUSED):
            await open_station(url, "st1", ssl_ctx=_client_ctx(pki, None))
        # a valid certificate of another station
        with pytest.raises(InvalidStatus) as info:
            await open_station(url, "st1", ssl_ctx=_client_ctx(pki, "other"))
        assert info.value.response.status_code == 403
        assert set(ep.links) == {"st1"} and ep.links["st1"] is good  # none got through
        await ep.stop()

    asyncio.run(run())
