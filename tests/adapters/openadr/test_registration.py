"""The VEN is truthful about its registration (issue 15.5): a VTN that answers with error
statuses (e.g. 463) leaves it unregistered — in its status, its metrics and readiness —
and it retries with backoff.

The VTN here is a few lines of aiohttp on 127.0.0.1 answering openleadr-made messages,
so the error statuses are exactly what a foreign VTN sends.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from aiohttp import web
from openleadr.messaging import (  # type: ignore[import-untyped, unused-ignore]
    create_message,
    parse_message,
)
from prometheus_client import CollectorRegistry

from adapters.openadr import OpenAdrConfig, OpenAdrTarget, OpenAdrVen, export_ven_metrics
from adapters.openadr.ven import retry_delay_s
from adapters.serve.wiring import ven_ready
from tests.conftest import wait_until

CERT_ERROR = 463
SIMPLE = "simpleHttp"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(check: Callable[[], bool], timeout_s: float) -> bool:
    """``True`` once ``check`` holds; fails the test (with what it waited for) at the deadline."""
    return bool(wait_until(check, timeout_s, "the VEN's registration state"))


class FakeVtn:
    """Answers registration with ``register_status`` and every other message with
    ``other_status``; always echoes a registration id, as the VTN in the field did."""

    def __init__(self, register_status: int, other_status: int) -> None:
        self.register_status = register_status
        self.other_status = other_status
        self.port = free_port()
        self.received: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/OpenADR2/Simple/2.0b"

    def _response(self, status: int, request_id: str | None) -> dict[str, object]:
        text = "OK" if status == 200 else "CERTIFICATE ERROR"
        return {"response_code": status, "response_description": text, "request_id": request_id}

    async def handle(self, request: web.Request) -> web.Response:
        kind, payload = parse_message(await request.read())
        self.received.append(kind)
        request_id = payload.get("request_id") or "r"
        if kind in ("oadrQueryRegistration", "oadrCreatePartyRegistration"):
            status = self.register_status
            body = create_message(
                "oadrCreatedPartyRegistration",
                response=self._response(status, request_id),
                ven_id="ven-1",
                registration_id="reg-1",
                profiles=[
                    {"profile_name": "2.0b", "transports": [{"transport_name": "simpleHttp"}]}
                ],
                requested_oadr_poll_freq=timedelta(seconds=1),
                vtn_id="VTN-FAKE",
            )
        else:
            body = create_message(
                "oadrResponse",
                response=self._response(self.other_status, request_id),
                ven_id="ven-1",
            )
        return web.Response(body=body, content_type="application/xml")

    def start(self) -> None:
        self.thread.start()

        async def up() -> None:
            app = web.Application()
            app.router.add_post("/OpenADR2/Simple/2.0b/{service}", self.handle)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

        asyncio.run_coroutine_threadsafe(up(), self.loop).result(10)

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def ven_on() -> Iterator[Callable[[FakeVtn], OpenAdrVen]]:
    started: list[tuple[FakeVtn, OpenAdrVen]] = []

    def start(vtn: FakeVtn) -> OpenAdrVen:
        vtn.start()
        cfg = OpenAdrConfig(
            vtn_url=vtn.url,
            ven_name="gridflex",
            ven_id="ven-1",
            poll_interval_s=0.2,
            registration_retry_s=0.2,
            registration_backoff_max_s=0.8,
            targets={"feeder-f1": OpenAdrTarget(type="feeder", id="f1")},
        )
        ven = OpenAdrVen(cfg, lambda msg: None, measured_kw=lambda target: 0.0)
        ven.start()
        started.append((vtn, ven))
        return ven

    yield start
    for vtn, ven in started:
        ven.stop()
        vtn.stop()


def test_a_vtn_answering_every_message_with_463_leaves_the_ven_unregistered(
    ven_on: Callable[[FakeVtn], OpenAdrVen],
) -> None:
    """Regression (15.5): openleadr kept the registration id the query returned and reported
    itself registered although the VTN refused the registration with 463."""
    vtn = FakeVtn(register_status=CERT_ERROR, other_status=CERT_ERROR)
    ven = ven_on(vtn)
    registry = CollectorRegistry()
    export_ven_metrics(ven, registry)
    assert wait_for(lambda: ven.status().attempts >= 3, 15), ven.status()
    status = ven.status()
    assert not status.registered and status.registration_id is None
    assert status.failures >= 2
    assert status.last_error is not None and str(CERT_ERROR) in status.last_error
    assert not ven_ready(ven)  # /readyz says not ready
    assert registry.get_sample_value("gridflex_openadr_registered") == 0.0
    assert registry.get_sample_value("gridflex_openadr_registration_attempts") >= 3
    assert "oadrPoll" not in vtn.received  # it never acted as registered


def test_a_registration_whose_exchanges_all_fail_counts_as_lost(
    ven_on: Callable[[FakeVtn], OpenAdrVen],
) -> None:
    vtn = FakeVtn(register_status=200, other_status=CERT_ERROR)
    ven = ven_on(vtn)
    assert wait_for(lambda: "oadrPoll" in vtn.received, 10), vtn.received
    # three exchanges in a row answered 463: the registration is not kept
    assert wait_for(lambda: not ven.status().registered and ven.status().attempts >= 2, 15)
    assert ven.status().last_error is not None


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [retry_delay_s(30.0, n, 300.0) for n in (1, 2, 3, 4, 5, 6)] == [
        30.0,
        60.0,
        120.0,
        240.0,
        300.0,
        300.0,
    ]
    assert retry_delay_s(30.0, 10_000, 300.0) == 300.0
