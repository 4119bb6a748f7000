"""The 1 s record: one row per second, a missing second is a gap and is reported."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.errors import InvalidInput
from aggregator.messages import AfrrRequest, FrequencySample
from aggregator.service.events import PoolSampled
from markets.record import (
    PoolRecord,
    SecondRecorder,
    record_from_csv,
    record_to_csv,
    requested_kw,
)

T0 = datetime(2026, 1, 14, 17, 0, tzinfo=UTC)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def put(rec: SecondRecorder, s: float, v: float) -> None:
    rec.sample(at(s), baseline_kw=v, requested_kw=v, setpoint_kw=v, measured_kw=v, reserve_kw=v)


def test_recorder_keeps_last_sample_per_second_and_reports_gaps() -> None:
    rec = SecondRecorder("pool-1", T0, at(6))
    put(rec, 0.2, 1.0)
    put(rec, 0.7, 2.0)  # same second: the later sample wins
    put(rec, 1.0, 3.0)
    put(rec, 4.5, 4.0)  # seconds 2 and 3 and 5 have no sample
    put(rec, 6.0, 9.0)  # outside the window: dropped, not stretched in
    put(rec, -0.5, 9.0)
    r = rec.record()
    assert r.seconds == 6 and rec.dropped == 2
    np.testing.assert_array_equal(r.measured_kw, [2.0, 3.0, np.nan, np.nan, 4.0, np.nan])
    assert r.present.tolist() == [True, True, False, False, True, False]
    gaps = r.gaps()
    assert [(g.start, g.seconds) for g in gaps] == [(at(2), 2), (at(5), 1)]
    assert gaps[0].end == at(4)
    assert "2 s" in str(gaps[0])


def test_a_gap_free_record_reports_no_gap() -> None:
    rec = SecondRecorder("p", T0, at(3))
    for s in range(3):
        put(rec, s, float(s))
    assert rec.record().gaps() == []


def test_one_missing_value_makes_the_second_a_gap() -> None:
    rec = SecondRecorder("p", T0, at(2))
    put(rec, 0, 1.0)
    rec.sample(
        at(1), baseline_kw=1, requested_kw=1, setpoint_kw=1, measured_kw=math.nan, reserve_kw=1
    )
    assert [g.seconds for g in rec.record().gaps()] == [1]


def test_recorder_takes_pool_sampled_events() -> None:
    rec = SecondRecorder("p", T0, at(3))
    common = {"reserve_kw": 100.0, "baseline_kw": 40.0, "deviation_kw": 0.0, "setpoint_kw": 40.0}
    sig = FrequencySample(ts=at(0), hz=49.9)  # droop: −(0.09/0.19) of the reserve
    rec.emit(PoolSampled(at=at(0), signal=sig, measured_kw=39.0, **common))
    rec.emit(PoolSampled(at=at(1), signal=None, measured_kw=38.0, **common))  # same order
    rec.emit(PoolSampled(at=at(2), signal=None, measured_kw=None, **common))  # no measurement
    r = rec.record()
    assert r.requested_kw[0] == pytest.approx(-100 * 0.09 / 0.19)
    assert r.requested_kw[1] == r.requested_kw[0]
    assert r.measured_kw.tolist()[:2] == [39.0, 38.0]
    assert [g.start for g in r.gaps()] == [at(2)]


def test_requested_is_the_order_not_the_pools_answer() -> None:
    assert requested_kw(FrequencySample(ts=T0, hz=50.2), 100.0) == pytest.approx(100.0)
    assert requested_kw(AfrrRequest(ts=T0, setpoint_kw=-250.0), 100.0) == -250.0


def test_csv_round_trip_is_exact_and_keeps_gaps() -> None:
    rec = SecondRecorder("pool-A", T0, at(4))
    put(rec, 0, 0.1)
    put(rec, 1, 1 / 3)
    put(rec, 3, -12.345678901)
    r = rec.record()
    text = record_to_csv(r)
    assert text.splitlines()[0] == "# pool=pool-A"
    assert text.splitlines()[4] == "2026-01-14T17:00:02Z,,,,,"  # the gap is a row, empty
    back = record_from_csv(text)
    assert back.pool_id == "pool-A" and back.start == T0
    for name in ("baseline_kw", "measured_kw", "reserve_kw"):
        np.testing.assert_array_equal(back.column(name), r.column(name))
    assert back.gaps() == r.gaps()


def test_csv_missing_rows_read_as_gaps() -> None:
    text = (
        "ts,baseline_kw,requested_kw,setpoint_kw,measured_kw,reserve_kw\n"
        "2026-01-14T17:00:00Z,1,0,1,1,10\n"
        "2026-01-14T17:00:03+00:00,1,0,1,1,10\n"
    )
    r = record_from_csv(text, pool_id="x")
    assert r.seconds == 4 and [(g.start, g.seconds) for g in r.gaps()] == [(at(1), 2)]


def test_csv_problems_are_all_reported() -> None:
    text = (
        "ts,baseline_kw,requested_kw,setpoint_kw,measured_kw,reserve_kw\n"
        "2026-01-14T17:00:01Z,1,0,1,1,10\n"
        "2026-01-14T17:00:00Z,1,0,1,1,10\n"
        "yesterday,1,0,1,1,10\n"
        "2026-01-14T17:00:05Z,1,zero,1,1,10\n"
    )
    with pytest.raises(InvalidInput) as exc:
        record_from_csv(text)
    assert sorted(i.code for i in exc.value.issues) == [
        "bad_timestamp",
        "not_a_number",
        "not_increasing",
    ]
    with pytest.raises(InvalidInput) as exc:
        record_from_csv("ts,baseline_kw\n2026-01-14T17:00:00Z,1\n")
    assert exc.value.issues[0].code == "missing_columns"


def test_record_is_frozen_and_validated() -> None:
    z = np.zeros(3)
    r = PoolRecord("p", T0, z, z, z, z, z)
    assert r.validate() == []
    with pytest.raises(ValueError):
        r.measured_kw[0] = 1.0
    bad = PoolRecord("p", datetime(2026, 1, 1), z, z, z, np.zeros(2), z)  # noqa: DTZ001
    assert {i.code for i in bad.validate()} == {"not_utc", "length_mismatch"}


@settings(max_examples=80, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=200))
def test_property_gaps_are_exactly_the_unsampled_seconds(sampled: list[bool]) -> None:
    n = len(sampled)
    rec = SecondRecorder("p", T0, at(n))
    for s, ok in enumerate(sampled):
        if ok:
            put(rec, s + 0.5, float(s))
    r = rec.record()
    gaps = r.gaps()
    assert sum(g.seconds for g in gaps) == sampled.count(False)
    covered = set()
    for g in gaps:
        a = int((g.start - T0).total_seconds())
        covered.update(range(a, a + g.seconds))
    assert covered == {s for s, ok in enumerate(sampled) if not ok}
    for g, h in itertools.pairwise(gaps):
        assert h.start > g.end  # runs are maximal: two gaps never touch
