"""Health and metrics over HTTP: ``/livez``, ``/readyz``, ``/metrics`` (Prometheus).

``/livez`` is 200 while the main loop has turned within ``stall_s``; ``/readyz`` is 200
when the replica has partitions assigned and its model loaded (``gridflex serve``), or the
edge serves its stations (``gridflex edge``). A small threaded server
from the standard library: these endpoints must answer even when the loop is busy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["HasRegistry", "HealthServer"]


class HasRegistry(Protocol):
    """What ``/metrics`` exposes: a Prometheus registry (``gridflex serve``'s
    :class:`~adapters.ops.metrics.Metrics`, the edge's
    :class:`~adapters.csms.edge.health.EdgeMetrics`)."""

    registry: CollectorRegistry


class HealthServer:
    """Serves the three endpoints on ``host:port`` (``port=0`` picks a free one)."""

    def __init__(
        self,
        host: str,
        port: int,
        metrics: HasRegistry,
        *,
        ready: Callable[[], bool],
        last_loop: Callable[[], float],
        stall_s: float = 10.0,
    ) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/livez":
                    alive = time.monotonic() - outer.last_loop() < outer.stall_s
                    self._reply(200 if alive else 503, b"ok\n" if alive else b"stalled\n")
                elif self.path == "/readyz":
                    ok = outer.ready()
                    self._reply(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
                elif self.path == "/metrics":
                    self._reply(200, generate_latest(outer.metrics.registry), CONTENT_TYPE_LATEST)
                else:
                    self._reply(404, b"not found\n")

            def _reply(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # access logs would drown the JSON log

        self.metrics = metrics
        self.ready = ready
        self.last_loop = last_loop
        self.stall_s = stall_s
        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
