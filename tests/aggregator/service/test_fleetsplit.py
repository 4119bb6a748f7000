"""Fleet shares: Σ shares ≤ cap for every split, and no phase of a re-split exceeds it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.service.config import ReserveSchedule, ServiceConfig
from aggregator.service.fleetsplit import (
    default_shares,
    demand_shares,
    parse_share_event_id,
    reserve_fraction,
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


# --- the fleet's reserve, split among replicas ------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    ratings=st.lists(st.floats(1.0, 1000.0), min_size=1, max_size=8),
    owner=st.lists(st.integers(0, 2), min_size=8, max_size=8),
    unbounded=st.booleans(),
)
def test_the_replicas_parts_of_the_reserve_sum_to_the_award(
    ratings: list[float], owner: list[int], unbounded: bool
) -> None:
    by_feeder = {f"f{i}": r for i, r in enumerate(ratings)}
    if unbounded:
        by_feeder["f0"] = math.inf  # then by feeder count
    parts = [
        reserve_fraction(by_feeder, [f for i, f in enumerate(by_feeder) if owner[i] == k])
        for k in range(3)
    ]
    assert sum(parts) == pytest.approx(1.0)
    assert all(0.0 <= p <= 1.0 for p in parts)
    config = ServiceConfig(
        reserve_kw=120.0,
        reserve_schedule=ReserveSchedule(
            np.array([0.0]),
            np.array([3600.0]),
            np.array([200.0]),
            np.array([80.0]),
            50.0,
            np.array([40.0]),
        ),
    )
    held = [config.reserve_share(p) for p in parts]
    assert sum(c.reserve_kw for c in held) == pytest.approx(120.0)
    assert sum(c.reserve.at(10.0)[0] for c in held) == pytest.approx(200.0)
    assert sum(c.reserve.at(10.0)[1] for c in held) == pytest.approx(80.0)
    assert sum(c.reserve.at(7200.0)[0] for c in held) == pytest.approx(50.0)
    assert sum(c.reserve.band(10.0, fcr=True)[0] for c in held) == pytest.approx(40.0)
    for c in held:
        assert c.reserve.validate() == []


def test_a_replica_owning_half_the_rating_holds_half_the_reserve() -> None:
    assert reserve_fraction({"a": 300.0, "b": 100.0, "c": 200.0}, ["a"]) == 0.5
    assert reserve_fraction({"a": 300.0, "b": math.inf}, ["b"]) == 0.5  # by count
    assert reserve_fraction({"a": 300.0}, []) == 0.0
    assert reserve_fraction({}, ["a"]) == 0.0
    config = ServiceConfig(reserve_kw=60.0)
    assert config.reserve_share(1.0) is config
    assert config.reserve_share(0.25).reserve_kw == 15.0
