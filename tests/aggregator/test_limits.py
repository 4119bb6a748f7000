"""DSO limits and the LimitBook: caps are min(structural, DSO), per instant and per step."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.limits import Caps, Direction, DsoLimit, LimitBook, TargetType
from aggregator.topology import Feeder, Site, Topology

T0 = datetime(2025, 3, 1, 6, 0, tzinfo=UTC)
STEP_S = 900.0
TOPOLOGY = Topology(
    feeders=(Feeder("F1", 400.0), Feeder("F2", 250.0)),
    sites=(Site("S1", "F1", 150.0), Site("S2", "F1", 100.0), Site("S3", "F2", 50.0)),
    fleet_limit_kw=500.0,
)
SITE = np.array([150.0, 100.0, 50.0])
FEEDER = np.array([400.0, 250.0])
SETTINGS = settings(max_examples=80, deadline=None)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def limit(
    event_id: str = "E1",
    target_type: TargetType = TargetType.SITE,
    target_id: str = "S1",
    start: float = 0,
    end: float = 60,
    limit_kw: float = 80.0,
    priority: int = 0,
) -> DsoLimit:
    return DsoLimit(event_id, target_type, target_id, at(start), at(end), limit_kw, priority)


def assert_caps(
    caps: Caps,
    site: list[float] | np.ndarray,
    feeder: list[float] | np.ndarray,
    fleet: float | np.ndarray,
) -> None:
    np.testing.assert_array_equal(caps.site_kw, site)
    np.testing.assert_array_equal(caps.feeder_kw, feeder)
    np.testing.assert_array_equal(caps.fleet_kw, fleet)


# --- caps_at ---------------------------------------------------------------------------


def test_no_limits_gives_structural_caps() -> None:
    caps = LimitBook(TOPOLOGY).caps_at(at(0))
    assert_caps(caps, SITE, FEEDER, 500.0)
    np.testing.assert_array_equal(caps.site_export_kw, SITE)
    assert caps.site_kw.shape == (3,)
    assert caps.feeder_kw.shape == (2,)
    assert caps.fleet_kw.shape == ()


def test_caps_at_takes_min_of_structural_and_dso() -> None:
    book = LimitBook(
        TOPOLOGY,
        [
            limit("tight-site", TargetType.SITE, "S1", limit_kw=80.0),
            limit("loose-site", TargetType.SITE, "S3", limit_kw=70.0),  # above 50 kW connection
            limit("feeder", TargetType.FEEDER, "F2", limit_kw=30.0),
        ],
    )
    caps = book.caps_at(at(30))
    assert_caps(caps, [80.0, 100.0, 50.0], [400.0, 30.0], 500.0)
    # a DSO import limit never changes the site's export cap
    np.testing.assert_array_equal(caps.site_export_kw, SITE)


def test_overlapping_limits_on_one_target_tighter_wins_whatever_priority() -> None:
    book = LimitBook(
        TOPOLOGY,
        [
            limit("a", limit_kw=60.0, priority=0),
            limit("b", limit_kw=90.0, priority=9),
        ],
    )
    assert book.caps_at(at(10)).site_kw[0] == 60.0


def test_fleet_limit() -> None:
    book = LimitBook(TOPOLOGY, [limit("fleet", TargetType.FLEET, "", limit_kw=320.0)])
    assert_caps(book.caps_at(at(0)), SITE, FEEDER, 320.0)
    # a fleet limit above the structural fleet limit does not relax it
    book.add(limit("fleet", TargetType.FLEET, "", limit_kw=900.0))
    assert_caps(book.caps_at(at(0)), SITE, FEEDER, 500.0)


def test_caps_at_respects_window_end_exclusive() -> None:
    book = LimitBook(TOPOLOGY, [limit(start=15, end=45, limit_kw=10.0)])
    assert book.caps_at(at(14.99)).site_kw[0] == 150.0
    assert book.caps_at(at(15)).site_kw[0] == 10.0
    assert book.caps_at(at(44.99)).site_kw[0] == 10.0
    assert book.caps_at(at(45)).site_kw[0] == 150.0


def test_caps_at_does_not_mutate_topology() -> None:
    book = LimitBook(
        TOPOLOGY, [limit(limit_kw=1.0), limit("f", TargetType.FEEDER, "F1", 0, 60, 1.0)]
    )
    book.caps_at(at(0))
    np.testing.assert_array_equal(TOPOLOGY.site_limit_kw, SITE)
    np.testing.assert_array_equal(TOPOLOGY.feeder_limit_kw, FEEDER)


# --- add / cancel / expire / version ----------------------------------------------------


def test_same_event_id_replaces() -> None:
    book = LimitBook(TOPOLOGY)
    book.add(limit("E1", limit_kw=40.0))
    book.add(limit("E1", target_id="S2", limit_kw=20.0))
    assert len(book.limits) == 1
    assert_caps(book.caps_at(at(0)), [150.0, 20.0, 50.0], FEEDER, 500.0)


def test_cancel() -> None:
    book = LimitBook(TOPOLOGY, [limit("E1", limit_kw=40.0)])
    v = book.version
    assert book.cancel("E1") is True
    assert book.version == v + 1
    assert book.limits == ()
    assert book.caps_at(at(0)).site_kw[0] == 150.0
    assert book.cancel("E1") is False
    assert book.version == v + 1  # nothing changed, no new version


def test_expire_drops_only_ended_limits() -> None:
    book = LimitBook(
        TOPOLOGY,
        [limit("old", end=30), limit("edge", end=60), limit("live", start=30, end=120)],
    )
    v = book.version
    assert book.expire(at(60)) == 2  # end is exclusive: ended at 60 means gone at 60
    assert [lim.event_id for lim in book.limits] == ["live"]
    assert book.version == v + 1
    assert book.expire(at(60)) == 0
    assert book.version == v + 1


def test_version_increments_on_every_change() -> None:
    book = LimitBook(TOPOLOGY)
    assert book.version == 0
    book.add(limit("a"))
    book.add(limit("b"))
    book.add(limit("a", limit_kw=1.0))  # replacement is a change too
    assert book.version == 3
    assert LimitBook(TOPOLOGY, [limit("a"), limit("b")]).version == 2


# --- caps_for_steps ---------------------------------------------------------------------


def test_caps_for_steps_shapes_and_structural_default() -> None:
    caps = LimitBook(TOPOLOGY).caps_for_steps(T0, STEP_S, 4)
    assert caps.site_kw.shape == (3, 4)
    assert caps.feeder_kw.shape == (2, 4)
    assert caps.fleet_kw.shape == (4,)
    np.testing.assert_array_equal(caps.site_kw, np.repeat(SITE[:, None], 4, axis=1))
    np.testing.assert_array_equal(caps.site_export_kw, np.repeat(SITE[:, None], 4, axis=1))
    np.testing.assert_array_equal(caps.fleet_kw, np.full(4, 500.0))


def test_caps_for_steps_is_conservative_at_partial_steps() -> None:
    # limit from 20 to 35 min: touches step 1 [15, 30) and step 2 [30, 45) partially
    book = LimitBook(TOPOLOGY, [limit(start=20, end=35, limit_kw=40.0)])
    caps = book.caps_for_steps(T0, STEP_S, 4)
    np.testing.assert_array_equal(caps.site_kw[0], [150.0, 40.0, 40.0, 150.0])
    np.testing.assert_array_equal(caps.site_kw[1:], np.repeat(SITE[1:, None], 4, axis=1))


def test_caps_for_steps_aligned_limit_does_not_leak() -> None:
    # exactly [15, 30): step 1 only (end exclusive)
    book = LimitBook(TOPOLOGY, [limit("f", TargetType.FEEDER, "F1", 15, 30, 200.0)])
    caps = book.caps_for_steps(T0, STEP_S, 4)
    np.testing.assert_array_equal(caps.feeder_kw[0], [400.0, 200.0, 400.0, 400.0])
    np.testing.assert_array_equal(caps.feeder_kw[1], np.full(4, 250.0))


def test_caps_for_steps_ignores_limits_outside_horizon() -> None:
    book = LimitBook(
        TOPOLOGY,
        [
            limit("before", start=-60, end=0, limit_kw=1.0),
            limit("after", start=60, end=120, limit_kw=1.0),
            limit("fleet-after", TargetType.FLEET, "", 60, 90, 1.0),
        ],
    )
    caps = book.caps_for_steps(T0, STEP_S, 4)  # horizon [0, 60)
    assert_caps(
        caps,
        np.repeat(SITE[:, None], 4, axis=1),
        np.repeat(FEEDER[:, None], 4, axis=1),
        np.full(4, 500.0),
    )


def test_caps_for_steps_clips_long_limit_to_horizon() -> None:
    book = LimitBook(TOPOLOGY, [limit("fl", TargetType.FLEET, "", -600, 6000, 123.0)])
    np.testing.assert_array_equal(book.caps_for_steps(T0, STEP_S, 3).fleet_kw, [123.0] * 3)


def test_caps_for_steps_unknown_target_is_ignored() -> None:
    book = LimitBook(TOPOLOGY, [limit("x", TargetType.SITE, "nope", limit_kw=1.0)])
    caps = book.caps_for_steps(T0, STEP_S, 2)
    np.testing.assert_array_equal(caps.site_kw, np.repeat(SITE[:, None], 2, axis=1))


# --- validate ---------------------------------------------------------------------------


def test_valid_limits_have_no_issue() -> None:
    for lim in (
        limit(),
        limit("f", TargetType.FEEDER, "F2"),
        limit("fl", TargetType.FLEET, "anything"),
        limit("neg", limit_kw=-20.0),  # a negative cap (forced export) is a valid limit
    ):
        assert lim.validate(TOPOLOGY) == []


def test_validate_reports_every_problem_at_once() -> None:
    naive = datetime(2025, 3, 1, 6, 0)  # noqa: DTZ001 - naive on purpose
    bad = DsoLimit("E9", TargetType.SITE, "S9", naive, naive, math.nan)
    issues = bad.validate(TOPOLOGY)
    assert [i.field for i in issues] == ["start", "end", "limit_kw", "target_id"]
    assert all(i.ids == ("E9",) for i in issues)
    assert "S9" in issues[-1].message


def test_validate_unknown_feeder_and_end_before_start() -> None:
    bad = DsoLimit("E8", TargetType.FEEDER, "F9", at(60), at(30), math.inf)
    issues = bad.validate(TOPOLOGY)
    assert [i.field for i in issues] == ["end", "limit_kw", "target_id"]
    assert "F9" in issues[-1].message


def test_validate_end_equal_start_and_empty_event_id() -> None:
    issues = DsoLimit("", TargetType.FLEET, "", at(0), at(0), 10.0).validate()
    assert [i.field for i in issues] == ["event_id", "end"]


def test_validate_without_topology_skips_target_check() -> None:
    assert limit("x", TargetType.SITE, "S9").validate() == []
    assert [i.field for i in limit("x", TargetType.SITE, "S9").validate(TOPOLOGY)] == ["target_id"]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [(0, 15, True), (-10, 1, True), (14, 20, True), (15, 30, False), (-10, 0, False)],
)
def test_overlaps_half_open(start: float, end: float, expected: bool) -> None:
    assert limit(start=0, end=15).overlaps(at(start), at(end)) is expected


# --- property: per-step caps are conservative -------------------------------------------

_targets = st.sampled_from(
    [(TargetType.SITE, s.site_id) for s in TOPOLOGY.sites]
    + [(TargetType.FEEDER, f.feeder_id) for f in TOPOLOGY.feeders]
    + [(TargetType.FLEET, "")]
)


@st.composite
def dso_limits(draw: st.DrawFn, i: int) -> DsoLimit:
    target_type, target_id = draw(_targets)
    start = draw(st.integers(-120, 180))  # minutes; horizon below is [0, 120)
    length = draw(st.integers(1, 90))
    kw = draw(st.floats(-50.0, 600.0, allow_nan=False))
    return DsoLimit(f"E{i}", target_type, target_id, at(start), at(start + length), kw)


@st.composite
def books(draw: st.DrawFn) -> LimitBook:
    n = draw(st.integers(0, 6))
    return LimitBook(TOPOLOGY, [draw(dso_limits(i)) for i in range(n)])


STEPS = 8  # 8 × 15 min = [0, 120)


@SETTINGS
@given(book=books(), step=st.integers(0, STEPS - 1), offset=st.floats(0.0, 1.0, exclude_max=True))
def test_property_caps_for_steps_conservative(book: LimitBook, step: int, offset: float) -> None:
    plan = book.caps_for_steps(T0, STEP_S, STEPS)
    t = T0 + timedelta(seconds=(step + offset) * STEP_S)
    now = book.caps_at(t)
    assert np.all(plan.site_kw[:, step] <= now.site_kw)
    assert np.all(plan.feeder_kw[:, step] <= now.feeder_kw)
    assert plan.fleet_kw[step] <= now.fleet_kw
    # and never above the structural limits
    assert np.all(plan.site_kw <= SITE[:, None])
    assert np.all(plan.feeder_kw <= FEEDER[:, None])
    assert np.all(plan.fleet_kw <= 500.0)


@SETTINGS
@given(book=books(), step=st.integers(0, STEPS - 1))
def test_property_step_cap_is_reached_somewhere_in_the_step(book: LimitBook, step: int) -> None:
    """Conservative but not over-tight: each per-step cap equals caps_at at some limit start
    or the step start (the instants where the active set inside the step can change)."""
    plan = book.caps_for_steps(T0, STEP_S, STEPS)
    step_start = T0 + timedelta(seconds=step * STEP_S)
    step_end = step_start + timedelta(seconds=STEP_S)
    instants = [step_start] + [
        lim.start for lim in book.limits if step_start < lim.start < step_end
    ]
    snapshots = [book.caps_at(t) for t in instants]
    lowest_site = np.min([c.site_kw for c in snapshots], axis=0)
    lowest_feeder = np.min([c.feeder_kw for c in snapshots], axis=0)
    lowest_fleet = min(float(c.fleet_kw) for c in snapshots)
    np.testing.assert_array_equal(plan.site_kw[:, step], lowest_site)
    np.testing.assert_array_equal(plan.feeder_kw[:, step], lowest_feeder)
    assert plan.fleet_kw[step] == lowest_fleet


def test_next_change_and_changes_between_name_every_window_edge() -> None:
    book = LimitBook(TOPOLOGY, [limit("A", start=10, end=40), limit("B", start=30, end=90)])
    assert book.next_change(at(0)) == at(10)
    assert book.next_change(at(10)) == at(30)  # strictly after
    assert book.next_change(at(90)) is None
    assert book.changes_between(at(0), at(100)) == [at(10), at(30), at(40), at(90)]
    assert book.changes_between(at(10), at(40)) == [at(30)]  # open interval
    assert LimitBook(TOPOLOGY).next_change(at(0)) is None


@given(
    st.lists(
        st.tuples(st.integers(0, 120), st.integers(1, 60), st.floats(0.0, 200.0)),
        min_size=1,
        max_size=5,
    ),
    st.integers(0, 180),
)
@SETTINGS
def test_caps_are_constant_between_consecutive_changes(
    windows: list[tuple[int, int, float]], probe: int
) -> None:
    book = LimitBook(
        TOPOLOGY,
        [limit(f"E{i}", start=s, end=s + d, limit_kw=kw) for i, (s, d, kw) in enumerate(windows)],
    )
    t = at(probe)
    nxt = book.next_change(t)
    end = nxt if nxt is not None else at(400)
    here = book.caps_at(t)
    for frac in (0.25, 0.5, 0.999):
        later = book.caps_at(t + (end - t) * frac)
        np.testing.assert_array_equal(later.site_kw, here.site_kw)
    if nxt is not None:
        assert nxt in book.changes_between(t - timedelta(seconds=1), nxt + timedelta(seconds=1))


# --- export caps (V2G) ------------------------------------------------------------------


def test_an_export_limit_caps_the_site_export_only_and_only_in_its_window() -> None:
    book = LimitBook(TOPOLOGY)
    book.add(replace(limit("X1", limit_kw=20.0, start=10, end=40), direction=Direction.EXPORT))
    book.add(replace(limit("X2", limit_kw=60.0, start=0, end=60), direction=Direction.EXPORT))
    inside = book.caps_at(at(15))
    assert_caps(inside, SITE, FEEDER, 500.0)  # import caps untouched
    np.testing.assert_array_equal(inside.site_export_kw, [20.0, 100.0, 50.0])
    np.testing.assert_array_equal(book.caps_at(at(45)).site_export_kw, [60.0, 100.0, 50.0])
    np.testing.assert_array_equal(book.caps_at(at(60)).site_export_kw, SITE)
    steps = book.caps_for_steps(at(0), STEP_S, 4)  # 15 min steps; X1 overlaps steps 0..2
    np.testing.assert_array_equal(steps.site_export_kw[0], [20.0, 20.0, 20.0, 60.0])
    np.testing.assert_array_equal(steps.site_kw[0], [150.0] * 4)


def test_an_export_limit_must_target_a_site_and_be_non_negative() -> None:
    bad = replace(limit("X", TargetType.FEEDER, "F1", limit_kw=-1.0), direction=Direction.EXPORT)
    assert sorted(i.code for i in bad.validate(TOPOLOGY)) == [
        "export_needs_site",
        "negative_export_cap",
    ]
    assert all(i.ids == ("X",) for i in bad.validate(TOPOLOGY))
    ok = replace(limit("X", limit_kw=0.0), direction=Direction.EXPORT)
    assert ok.validate(TOPOLOGY) == []
    np.testing.assert_array_equal(LimitBook(TOPOLOGY, [ok]).caps_at(at(1)).site_export_kw[0], 0.0)
