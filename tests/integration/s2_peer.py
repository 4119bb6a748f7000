"""Helpers for the S2 integration tests: an async wait with a deadline, RMs on loopback."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from adapters.csms.s2.simrm import SimPebcControl, SimRm
from aggregator.pebc import PowerRange

_T = TypeVar("_T")


async def until(cond: Callable[[], _T], timeout_s: float, what: str) -> _T:
    """Poll ``cond`` on the loop until truthy (returned) or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}: {value!r}")
        await asyncio.sleep(0.01)


def ev(
    *,
    upper_kw: tuple[float, float] = (0.0, 11.0),
    lower_kw: tuple[float, float] = (0.0, 0.0),
    energy_kwh: float = 20.0,
    hours: float = 4.0,
    reject: bool = False,
) -> SimPebcControl:
    """An EV's PEBC behaviour: ranges (kW), ``energy_kwh`` needed within ``hours``."""
    return SimPebcControl(
        PowerRange(*upper_kw),
        PowerRange(*lower_kw),
        energy_kwh,
        energy_kwh * 1.5,
        datetime.now(UTC) + timedelta(hours=hours),
        reject=reject,
    )


def rm(
    port: int,
    control: SimPebcControl,
    *,
    name: str | None = None,
    token: str | None = None,
    rid: uuid.UUID | None = None,
) -> SimRm:
    return SimRm(f"ws://127.0.0.1:{port}", rid or uuid.uuid4(), control, token, name)
