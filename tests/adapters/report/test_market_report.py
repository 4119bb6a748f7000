"""Market HTML reports: settlement and prequalification pages show the evidence, never fill
a gap, and state the band they judged by."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import numpy as np

from adapters.report.market import quarter_hour_csv, settlement_page
from markets.record import PoolRecord
from markets.settlement import AFRR_BAND, settle

T0 = datetime(2026, 1, 14, 18, 10, tzinfo=UTC)


def rec(n: int = 1200, gap: tuple[int, int] | None = None) -> PoolRecord:
    base = np.full(n, 50.0)
    r = np.where(np.arange(n) >= 60, 100.0, 0.0)
    measured = base + r * 0.9
    if gap:
        measured[gap[0] : gap[1]] = np.nan
    return PoolRecord("depot", T0, base, r, base + r, measured, np.full(n, 100.0))


def test_settlement_page_states_the_band_and_shows_the_evidence() -> None:
    record = rec(gap=(500, 530))
    s = settle(record, AFRR_BAND)
    page = settlement_page(s, record)
    assert page.startswith("<!DOCTYPE html>")
    assert "first reaction within 30 s, full within 300 s, ±5% of the reserve held" in page
    assert "gap 2026-01-14T18:18:20+00:00" in page  # the gap is named
    assert page.count("<svg") == 4  # delivered vs band, power, per quarter-hour, flags
    assert not re.search(r"\bnan\b", page, flags=re.IGNORECASE)  # a gap is never drawn
    # the gap breaks the delivered line: more than one path for that series
    assert page.count('class="series') > 12
    assert "2026-01-14 18:15" in page  # per quarter-hour rows, UTC-aligned


def test_quarter_hour_csv_matches_the_settlement() -> None:
    s = settle(rec(), AFRR_BAND)
    lines = quarter_hour_csv(s).splitlines()
    assert len(lines) == 1 + len(s.quarter_hours) == 3  # 18:10–18:15 (300 s), 18:15–18:30
    total = sum(float(x.split(",")[6]) for x in lines[1:])
    assert abs(total - s.totals()["delivered_kwh"]) < 1e-5
