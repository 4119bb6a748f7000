"""Push channels of the OpenADR 3 VEN: a webhook callback server and a websocket listener.

Both hand every :class:`~adapters.openadr3.wire.Notification` they receive to one callback
(``on_notification``) on their own thread; the VEN applies it and wakes its poll loop, so a
push only ever makes the VEN faster — polling goes on beside it, and a lost push is made
good by the next poll.

* :class:`WebhookServer` — the ``callbackUrl`` of a ``WEBHOOK`` subscription: a
  ``ThreadingHTTPServer`` on the configured (loopback by default) host and port, ``POST
  /openadr3/notify`` only, which must carry ``Authorization: Bearer <the subscription's
  bearerToken>`` (compared in constant time; else ``401``) and a JSON notification (else
  ``400``). ``200`` once handed on.
* :class:`WebsocketListener` — the VTN's websocket notifier (``GET /notifiers/ws`` with
  the VEN's bearer token, openleadr-vtn's ``experimental-websockets``); reconnects with a
  backoff, a fresh token on every connect.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from pydantic import ValidationError

from adapters.openadr3.wire import Notification

__all__ = ["NOTIFY_PATH", "WebhookServer", "WebsocketListener"]

NOTIFY_PATH: Final = "/openadr3/notify"
_MAX_BODY: Final = 1 << 20
log = logging.getLogger("gridflex.openadr3")

OnNotification = Callable[[Notification], None]


class WebhookServer:
    """The webhook callback: authenticated POSTs of notifications, on its own thread."""

    def __init__(self, host: str, port: int, bearer_token: str, on: OnNotification) -> None:
        self._token = bearer_token.encode()
        self._on = on
        self.received = 0
        self.refused = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                log.debug("webhook " + format, *args)

            def _answer(self, code: int, text: str) -> None:
                body = json.dumps({"status": code, "detail": text}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                if self.path != NOTIFY_PATH:
                    self._answer(404, "not found")
                    return
                auth = self.headers.get("Authorization", "")
                given = auth[7:].encode() if auth[:7].lower() == "bearer " else b""
                if not given or not hmac.compare_digest(given, outer._token):
                    outer.refused += 1
                    self._answer(401, "bearer token required")
                    return
                size = int(self.headers.get("Content-Length") or 0)
                if not 0 < size <= _MAX_BODY:
                    self._answer(400, "a JSON body of at most 1 MiB is required")
                    return
                try:
                    note = Notification.model_validate_json(self.rfile.read(size))
                except ValidationError as exc:
                    self._answer(400, f"not a notification: {exc.error_count()} problems")
                    return
                outer.received += 1
                try:
                    outer._on(note)
                except Exception:  # the VEN logs its own failures; the VTN gets a 500
                    log.exception("webhook notification failed")
                    self._answer(500, "not applied")
                    return
                self._answer(200, "ok")

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="openadr3-webhook", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class WebsocketListener:
    """Notifications from the VTN's websocket notifier, reconnecting until stopped."""

    def __init__(
        self,
        url: str,
        token: Callable[[], str],
        on: OnNotification,
        *,
        retry_s: float = 1.0,
        max_retry_s: float = 30.0,
    ) -> None:
        self.url = url
        self._token = token
        self._on = on
        self._retry_s = retry_s
        self._max_retry_s = max_retry_s
        self._stop = threading.Event()
        self.connected = threading.Event()
        self.received = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="openadr3-ws", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        from websockets.exceptions import WebSocketException
        from websockets.sync.client import connect

        delay = self._retry_s
        while not self._stop.is_set():
            try:
                headers = {"Authorization": f"Bearer {self._token()}"}
                with connect(
                    self.url, additional_headers=headers, open_timeout=10, close_timeout=1
                ) as ws:
                    self.connected.set()
                    delay = self._retry_s
                    while not self._stop.is_set():
                        try:
                            raw = ws.recv(timeout=0.5)
                        except TimeoutError:
                            continue
                        self._take(raw)
            except (OSError, WebSocketException, TimeoutError, Exception) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("openadr3 websocket: %s", self.last_error)
            finally:
                self.connected.clear()
            self._stop.wait(delay)
            delay = min(delay * 2, self._max_retry_s)

    def _take(self, raw: str | bytes) -> None:
        try:
            note = Notification.model_validate_json(raw)
        except ValidationError:
            log.warning("openadr3 websocket: not a notification: %r", raw[:200])
            return
        self.received += 1
        self._on(note)
