"""Delivery days, product blocks and gate closures of the German reserve auctions.

FCR and aFRR capacity are auctioned on regelleistung.net per delivery day in six 4-hour
products (00–04, 04–08, …, 20–24 German local time, CET/CEST); the FCR auction closes at
08:00 and the aFRR capacity auction at 09:00 on the day before delivery (D-1), local time.
A delivery day has 96 quarter-hours (92 or 100 on the days clocks change, when one block
is 3 or 5 hours long). Everything here is converted to UTC once; the core works in UTC.

Invariants: blocks tile the delivery day without gap or overlap; every block starts and
ends on a quarter-hour step of the day; ``gate < start``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

import numpy as np

from markets.forecast.flex import Blocks

__all__ = ["BLOCK_HOURS", "MARKET_TZ", "QUARTER_S", "DeliveryDay", "delivery_day"]

MARKET_TZ: Final = ZoneInfo("Europe/Berlin")
QUARTER_S: Final = 900.0
BLOCK_HOURS: Final = 4


@dataclass(frozen=True)
class DeliveryDay:
    """One delivery day in UTC: its quarter-hour grid and its 4 h blocks."""

    day: date
    start: datetime
    end: datetime
    block_starts: tuple[datetime, ...]
    block_ends: tuple[datetime, ...]

    @property
    def steps(self) -> int:
        return round((self.end - self.start).total_seconds() / QUARTER_S)

    @property
    def blocks(self) -> Blocks:
        first = [round((b - self.start).total_seconds() / QUARTER_S) for b in self.block_starts]
        last = [round((b - self.start).total_seconds() / QUARTER_S) for b in self.block_ends]
        return Blocks(np.array(first, dtype=np.intp), np.array(last, dtype=np.intp))

    def quarter(self, i: int) -> datetime:
        return self.start + timedelta(seconds=QUARTER_S * i)

    def gate(self, local_time: time) -> datetime:
        """The gate closure at ``local_time`` on D-1 (German time), in UTC."""
        d1 = self.day - timedelta(days=1)
        return datetime.combine(d1, local_time, tzinfo=MARKET_TZ).astimezone(UTC)


def delivery_day(day: date) -> DeliveryDay:
    """The delivery day ``day`` (German calendar date) with its six blocks, in UTC."""
    local = [datetime.combine(day, time(h), tzinfo=MARKET_TZ) for h in range(0, 24, BLOCK_HOURS)]
    starts = tuple(t.astimezone(UTC) for t in local)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=MARKET_TZ).astimezone(UTC)
    return DeliveryDay(day, starts[0], end, starts, (*starts[1:], end))
