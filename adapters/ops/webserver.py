"""Serving an HTTP app (FastAPI/ASGI) with uvicorn in a background thread, optional
(mutual) TLS: one door for every HTTP endpoint gridflex runs beside its loop (the DSO REST
API, the OSCP flexibility provider).

Mutual TLS is the server's business: :func:`serve_api` runs uvicorn with ``client_ca`` as
the trusted CA for client certificates (``CERT_REQUIRED``); a client without one is refused
in the handshake.
"""

from __future__ import annotations

import ssl
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from aggregator.errors import ConfigError, Issue, TransientIO

__all__ = ["api_port", "serve_api", "stop_api"]


def serve_api(
    app: Any,
    host: str,
    port: int,
    *,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    client_ca: Path | None = None,
    start_timeout_s: float = 10.0,
) -> tuple[uvicorn.Server, threading.Thread]:
    """Run ``app`` with uvicorn in a daemon thread; returns when it listens.

    With ``certfile``/``keyfile`` it serves HTTPS; with ``client_ca`` too, clients must
    present a certificate signed by that CA (mutual TLS; refused in the handshake
    otherwise). ``port=0`` picks a free port (:func:`api_port`). Stop with :func:`stop_api`.
    """
    issues: list[Issue] = []
    if (certfile is None) != (keyfile is None):
        issues.append(Issue("tls", "certfile and keyfile go together"))
    if client_ca is not None and certfile is None:
        issues.append(Issue("tls.client_ca", "mutual TLS needs certfile and keyfile"))
    if issues:
        raise ConfigError(issues)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        ssl_ca_certs=client_ca,
        ssl_cert_reqs=ssl.CERT_REQUIRED if client_ca is not None else ssl.CERT_NONE,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="gridflex-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise TransientIO(f"the API server did not start on {host}:{port}")
        time.sleep(0.01)
    return server, thread


def api_port(server: uvicorn.Server) -> int:
    """The port a started server listens on (useful after ``port=0``)."""
    sockname = server.servers[0].sockets[0].getsockname()
    return int(sockname[1])


def stop_api(server: uvicorn.Server, thread: threading.Thread, timeout_s: float = 10.0) -> None:
    """Ask the server to finish its requests and stop; wait for its thread."""
    server.should_exit = True
    thread.join(timeout_s)
