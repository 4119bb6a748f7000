"""Market files: history CSV round trip, forecast and bid documents (JSON and CSV)."""

from __future__ import annotations

import csv
import itertools
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from adapters.files.history import generate_history, write_history_csv
from adapters.files.market import read_history, write_bid, write_forecast
from aggregator.errors import InvalidInput
from markets.bids import AFRR_RULES, delivery_day, make_bids
from markets.forecast import FlexForecast

DAY = delivery_day(date(2026, 1, 14))


def test_history_round_trip_and_no_overlap(tmp_path: Path) -> None:
    specs = generate_history(
        ["a", "b"], evses=30, first_day=datetime(2026, 1, 1, tzinfo=UTC), days=10, seed=4
    )
    path = tmp_path / "h.csv"
    write_history_csv(path, specs)
    h = read_history(path, ("a", "b"))
    assert h.sessions.size == len(specs)
    assert np.allclose(h.sessions.energy_kwh, [s.energy_kwh for s in specs])
    by_evse: dict[str, list[tuple[datetime, datetime]]] = {}
    for s in specs:
        by_evse.setdefault(s.evse_id, []).append((s.arrival, s.departure))
    for spans in by_evse.values():
        spans.sort()
        assert all(b[0] >= a[1] for a, b in itertools.pairwise(spans))
    with pytest.raises(InvalidInput) as err:
        read_history(path, ("a",))  # site b unknown
    assert [i.code for i in err.value.issues] == ["unknown_site"]


def test_bid_and_forecast_documents(tmp_path: Path) -> None:
    up = np.repeat(np.linspace(1500.0, 4000.0, 100)[:, None], 96, axis=1)
    fc = FlexForecast(DAY.start, 900.0, DAY.blocks, 1800.0, up * 0.3, up, up * 0.5, 12)
    made = DAY.gate(AFRR_RULES.gate_local) - timedelta(hours=2)
    doc = make_bids(fc, DAY, AFRR_RULES, created_at=made, pool_id="p")
    paths = write_bid(tmp_path, doc)
    assert [p.name for p in paths] == [
        "bid-afrr-2026-01-14.json",
        "bid-afrr-2026-01-14.csv",
        "energy-afrr-2026-01-14.csv",
    ]
    data = json.loads(paths[0].read_text())
    assert data["reservoir_s"] == 1800.0 and data["late"] is False
    assert data["baseline"]["version"] == 1 and data["baseline"]["source"] == "forecast-p50"
    with paths[1].open() as fh:
        offers = list(csv.DictReader(fh))
    assert len(offers) == len(doc.offers) > 0
    assert {o["direction"] for o in offers} == {"NEG"}  # POS (down) reaches < 1 MW
    assert all(float(o["volume_mw"]).is_integer() for o in offers)
    with paths[2].open() as fh:
        energy = list(csv.DictReader(fh))
    assert len(energy) == 96 and energy[0]["start"] == "2026-01-13T23:00:00+00:00"
    assert any("POS" in r and "no bid" in r for r in data["reasons"])
    j, c = write_forecast(tmp_path, fc, DAY)
    meta = json.loads(j.read_text())
    assert meta["past_days"] == 12 and len(meta["per_step"]["up"]["p90_mw"]) == 96
    assert c.read_text().splitlines()[0].startswith("block,start,end,baseline_mw")
