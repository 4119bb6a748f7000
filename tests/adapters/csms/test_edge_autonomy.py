"""The CSAC: modes through an outage and local balancing under the site cap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.csms.edge.autonomy import ActiveSession, Csac, SiteSpec, balance
from aggregator.interfaces import ManualClock
from aggregator.messages import SetpointBatch

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


@given(
    st.dictionaries(st.text(min_size=1, max_size=4), st.floats(-20.0, 50.0), max_size=12),
    st.floats(-5.0, 200.0),
)
def test_balance_never_exceeds_cap_or_allowance_and_uses_the_cap(
    allow: dict[str, float], cap: float
) -> None:
    out = balance(allow, cap)
    assert out.keys() == allow.keys()
    pos = sum(v for v in out.values() if v > 0)
    assert pos <= max(cap, 0.0) + 1e-9
    assert all(out[k] <= allow[k] + 1e-12 for k in allow)
    assert all(out[k] == allow[k] for k in allow if allow[k] <= 0)  # V2G passes unchanged
    want = sum(v for v in allow.values() if v > 0)
    assert pos == pytest.approx(min(want, max(cap, 0.0)), abs=1e-6)  # no capacity wasted


def test_balance_is_water_filling() -> None:
    assert balance({"a": 2.0, "b": 11.0, "c": 11.0}, 20.0) == {"a": 2.0, "b": 9.0, "c": 9.0}


def _batch(seq: int, now: datetime, kw: float, fs: float) -> SetpointBatch:
    return SetpointBatch(
        csms_id="c1",
        seq=seq,
        issued_at=now,
        valid_until=now + timedelta(seconds=120),
        evse_ids=["a/1", "a/2"],
        power_kw=[kw, kw],
        failsafe_kw=[fs, fs],
    )


def test_modes_through_an_outage_and_caps_in_each() -> None:
    clock = ManualClock(T0)
    csac = Csac(
        "c1", [SiteSpec(site_id="s", feeder_id="f", cap_kw=15.0, station_ids=("a",))], clock
    )
    sessions = [ActiveSession(evse_id=f"a/{i}", site_id="s", max_power_kw=11.0) for i in (1, 2)]
    assert csac.mode(T0) == "init"
    assert csac.apply(_batch(1, T0, 10.0, 3.0)) is None
    assert csac.apply(_batch(1, T0, 10.0, 3.0)) == "stale_seq"
    assert csac.mode(T0) == "upstream"
    assert csac.targets(sessions) == {"a/1": 7.5, "a/2": 7.5}  # 2 × 10 > 15: balanced
    clock.advance(121)
    assert csac.mode(clock.now()) == "failsafe"
    assert csac.targets(sessions) == {"a/1": 3.0, "a/2": 3.0}
    assert csac.targets(sessions, reserved_kw={"s": 12.0}) == {"a/1": 1.5, "a/2": 1.5}
    clock.advance(7_200)
    assert csac.mode(clock.now()) == "autonomous"
    assert csac.targets(sessions) == {"a/1": 7.5, "a/2": 7.5}
    assert csac.station_limits({"a": ["a/1", "a/2"]}) == {"a": (15.0, 3.0)}


def test_restored_failsafe_holds_after_a_restart() -> None:
    clock = ManualClock(T0)
    csac = Csac(
        "c1", [SiteSpec(site_id="s", feeder_id="f", cap_kw=50.0, station_ids=("a",))], clock
    )
    csac.restore(_batch(4, T0 - timedelta(seconds=30), 10.0, 2.5))
    assert csac.mode(T0) == "failsafe"  # restored leases are not trusted as upstream
    sessions = [ActiveSession(evse_id="a/1", site_id="s", max_power_kw=11.0)]
    assert csac.targets(sessions) == {"a/1": 2.5}
