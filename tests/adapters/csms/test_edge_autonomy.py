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


@given(
    st.lists(
        st.tuples(
            st.floats(0.0, 30_000.0),  # seconds to the next step
            st.booleans(),  # a batch arrives
            st.floats(-11.0, 22.0),  # its setpoint
            st.floats(0.0, 11.0),  # its failsafe
            st.lists(st.floats(1.0, 22.0), min_size=0, max_size=4),  # sessions' max kW
            st.floats(0.0, 10.0),  # reserved for idle EVSEs
        ),
        min_size=1,
        max_size=12,
    ),
    st.floats(0.0, 40.0),
)
def test_targets_never_exceed_the_site_cap_in_any_mode(steps: list, cap: float) -> None:  # type: ignore[type-arg]
    clock = ManualClock(T0)
    csac = Csac("c1", [SiteSpec(site_id="s", feeder_id="f", cap_kw=cap, station_ids=("a",))], clock)
    seq = 0
    for dt, arrives, kw, fs, maxes, reserved in steps:
        clock.advance(dt)
        evses = [f"a/{i}" for i in range(len(maxes))]
        if arrives and evses:
            seq += 1
            now = clock.now()
            csac.apply(
                SetpointBatch(
                    csms_id="c1",
                    seq=seq,
                    issued_at=now,
                    valid_until=now + timedelta(seconds=120),
                    evse_ids=evses,
                    power_kw=[kw] * len(evses),
                    failsafe_kw=[fs] * len(evses),
                )
            )
        sessions = [
            ActiveSession(evse_id=e, site_id="s", max_power_kw=m)
            for e, m in zip(evses, maxes, strict=True)
        ]
        out = csac.targets(sessions, reserved_kw={"s": reserved})
        assert sum(v for v in out.values() if v > 0) <= max(cap - reserved, 0.0) + 1e-9
        assert all(out[s.evse_id] <= s.max_power_kw + 1e-12 for s in sessions)
        if csac.mode(clock.now()) == "failsafe":
            assert all(out[e] <= csac.failsafe_kw.get(e, 4.2) + 1e-12 for e in evses)
        if csac.mode(clock.now()) != "upstream":
            assert all(v >= 0 for v in out.values())  # no export without a live lease
