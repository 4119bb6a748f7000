"""Security profiles of the OCPP endpoint (OCPP 2.0.1 part 2, A00), checked before any
OCPP message is read:

====  ===========================================  ========================================
 0    none (loopback development only)             plain ws, no credentials
 1    HTTP Basic auth                              user = station id, password per station
 2    TLS (server certificate) + Basic auth        ``wss``
 3    mutual TLS                                   client certificate signed by the CA,
                                                   its CN equal to the station id
====  ===========================================  ========================================

A connection that fails is refused at the HTTP upgrade (401 wrong or missing password,
403 a certificate naming another station, 404 an unknown station) or at the TLS handshake
(profile 3, a certificate from another CA or none); nothing of it reaches a handler.
Passwords are compared in constant time.
"""

from __future__ import annotations

import base64
import hmac
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

__all__ = ["Security", "authenticate", "station_id"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Security:
    """Security profile and its material (paths to PEM files)."""

    profile: Literal[0, 1, 2, 3] = 1
    passwords: Mapping[str, str] | None = None
    certfile: str | None = None
    keyfile: str | None = None
    cafile: str | None = None

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.profile < 2:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        assert self.certfile is not None, "profiles 2 and 3 need certfile"
        ctx.load_cert_chain(self.certfile, self.keyfile)
        if self.profile == 3:
            assert self.cafile is not None, "profile 3 needs cafile"
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(self.cafile)
        return ctx


def station_id(path: str) -> str:
    """The station id of a connection: the last segment of its URL path."""
    return path.split("?")[0].rstrip("/").rsplit("/", 1)[-1]


def _basic_ok(security: Security, sid: str, headers: Headers) -> bool:
    auth = headers.get("Authorization", "")
    if not auth.startswith("Basic "):
        return False
    try:
        user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
    except ValueError:
        return False
    want = (security.passwords or {}).get(sid)
    return want is not None and user == sid and hmac.compare_digest(pw, want)


def authenticate(
    security: Security, places: Mapping[str, Any], conn: ServerConnection, request: Request
) -> Response | None:
    """``None`` to accept the upgrade, else the refusal (the websockets ``process_request``)."""
    sid = station_id(request.path)
    if sid not in places:
        return conn.respond(HTTPStatus.NOT_FOUND, "unknown station\n")
    if security.profile == 3:
        cert = conn.transport.get_extra_info("peercert") or {}
        cns = [v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"]
        if sid not in cns:
            return conn.respond(HTTPStatus.FORBIDDEN, "certificate does not name station\n")
        return None
    if security.profile in (1, 2) and not _basic_ok(security, sid, request.headers):
        resp = conn.respond(HTTPStatus.UNAUTHORIZED, "basic auth required\n")
        resp.headers["WWW-Authenticate"] = 'Basic realm="gridflex-edge"'
        return resp
    return None
