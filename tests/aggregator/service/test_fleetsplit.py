"""Fleet shares: Σ shares ≤ cap for every split, and no phase of a re-split exceeds it."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from aggregator.service.fleetsplit import (
    default_shares,
    demand_shares,
    parse_share_event_id,
    share_event_id,
    transition,
)

ratings = st.dictionaries(
    st.sampled_from([f"f{i}" for i in range(12)]),
    st.floats(1.0, 5000.0),
    min_size=1,
)
caps = st.floats(0.0, 20000.0)


def test_default_split_is_proportional_to_rating() -> None:
    got = default_shares({"a": 100.0, "b": 300.0}, 200.0)
    assert got == {"a": 50.0, "b": 150.0}


def test_infinite_cap_gives_infinite_shares() -> None:
    assert default_shares({"a": 1.0}, math.inf) == {"a": math.inf}


def test_demand_split_gives_the_busy_feeder_what_the_idle_one_does_not_use() -> None:
    got = demand_shares(200.0, {"a": 0.0, "b": 500.0}, {"a": 100.0, "b": 300.0}, floor_frac=0.2)
    assert got["a"] == 10.0  # its floor: 20 % of its default 50 kW
    assert got["b"] == 190.0
    assert math.fsum(got.values()) <= 200.0


def test_a_feeder_without_a_report_asks_for_its_default_share() -> None:
    got = demand_shares(200.0, {"b": 500.0}, {"a": 100.0, "b": 100.0}, floor_frac=0.2)
    assert got == {"a": 100.0, "b": 100.0}


def test_decreases_first_then_increases() -> None:
    t = transition({"a": 50.0, "b": 150.0}, {"a": 10.0, "b": 190.0})
    assert dict(t.decreases) == {"a": 10.0}
    assert dict(t.increases) == {"b": 190.0}
    first = transition({}, {"a": 5.0})
    assert dict(first.decreases) == {"a": 5.0} and not first.increases


def test_share_event_ids_round_trip() -> None:
    assert parse_share_event_id(share_event_id("ev:1", "f1")) == ("ev:1", "f1")
    assert parse_share_event_id("window-f1") is None


@given(ratings, caps)
def test_default_split_never_exceeds_the_cap(r: dict[str, float], cap: float) -> None:
    s = default_shares(r, cap)
    assert set(s) == set(r)
    assert math.fsum(s.values()) <= cap + 1e-9
    assert all(v >= -1e-3 for v in s.values())


@given(ratings, caps, st.data(), st.floats(0.0, 1.0))
def test_demand_split_never_exceeds_the_cap(
    r: dict[str, float], cap: float, data: st.DataObject, frac: float
) -> None:
    demand = data.draw(st.dictionaries(st.sampled_from(sorted(r)), st.floats(0.0, 1e4)))
    s = demand_shares(cap, demand, r, floor_frac=frac)
    assert set(s) == set(r)
    assert math.fsum(s.values()) <= cap + 1e-9
    assert all(v >= -1e-3 for v in s.values())


@given(ratings, caps, st.data())
def test_no_phase_of_a_resplit_exceeds_the_cap(
    r: dict[str, float], cap: float, data: st.DataObject
) -> None:
    """Any subset of a phase applied, in any order: Σ of what is in force ≤ cap."""
    d1 = data.draw(st.dictionaries(st.sampled_from(sorted(r)), st.floats(0.0, 1e4)))
    d2 = data.draw(st.dictionaries(st.sampled_from(sorted(r)), st.floats(0.0, 1e4)))
    old = demand_shares(cap, d1, r)
    new = demand_shares(cap, d2, r)
    t = transition(old, new)
    applied_dec = data.draw(st.sets(st.sampled_from(sorted(r))))
    during_dec = {f: t.decreases[f] if f in applied_dec and f in t.decreases else old[f] for f in r}
    assert math.fsum(during_dec.values()) <= cap + 1e-9
    after_dec = {f: t.decreases.get(f, old[f]) for f in r}
    applied_inc = data.draw(st.sets(st.sampled_from(sorted(r))))
    during_inc = {
        f: t.increases[f] if f in applied_inc and f in t.increases else after_dec[f] for f in r
    }
    assert math.fsum(during_inc.values()) <= cap + 1e-9
    final = {**after_dec, **t.increases}
    assert all(abs(final[f] - new[f]) <= 1.5e-3 for f in r)  # changes ≤ 1 W skipped
