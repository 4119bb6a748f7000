"""Setpoints a car can follow (issue 11): 0 or ≥ the minimum, caps and phase caps held,
fair rotation and minimum on/off times in the fast loop."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from aggregator.dispatch import Dispatcher, limit_excess_kw
from aggregator.followable import Caps3, fits, group_cumsum

TOL = 1e-6
THREE = (1 / 3, 1 / 3, 1 / 3)


@st.composite
def ac_frames(draw: st.DrawFn) -> dict[str, object]:
    n = draw(st.integers(1, 50))
    n_sites = draw(st.integers(1, 5))
    n_feeders = draw(st.integers(1, min(3, n_sites)))
    pos = st.floats(0, 30, allow_nan=False)
    hi = draw(arrays(np.float64, n, elements=pos))
    v2g = draw(arrays(np.bool_, n))
    lo = np.where(v2g, -draw(arrays(np.float64, n, elements=pos)), 0.0)
    base = draw(arrays(np.float64, n, elements=st.floats(-30, 30, allow_nan=False)))
    # single-phase (known or unknown phase) or three-phase cars, 6 A at 230 V
    kind = draw(arrays(np.intp, n, elements=st.integers(0, 4)))
    table = np.array([THREE, (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 1)], dtype=np.float64)
    phase_w = table[kind]
    min_kw = np.where(kind == 0, 4.14, 1.38)
    min_kw = np.where(draw(arrays(np.bool_, n)), 0.0, min_kw)  # some DC / continuous
    cap = st.floats(0, 200, allow_nan=False)
    phase_caps = draw(
        st.one_of(
            st.none(),
            arrays(np.float64, (n_sites, 3), elements=st.floats(0, 60, allow_nan=False)),
        )
    )
    return dict(
        base_kw=base,
        lo_kw=lo,
        hi_kw=hi,
        slot_site=draw(arrays(np.intp, n, elements=st.integers(0, n_sites - 1))),
        site_feeder=draw(arrays(np.intp, n_sites, elements=st.integers(0, n_feeders - 1))),
        site_cap_kw=draw(arrays(np.float64, n_sites, elements=cap)),
        site_export_kw=draw(arrays(np.float64, n_sites, elements=cap)),
        feeder_cap_kw=draw(arrays(np.float64, n_feeders, elements=cap)),
        fleet_cap_kw=draw(st.one_of(cap, st.just(float("inf")))),
        min_kw=min_kw,
        phase_w=phase_w,
        site_phase_cap_kw=phase_caps,
    )


def _followable(p: np.ndarray, min_kw: np.ndarray) -> bool:
    return bool(np.all((p <= TOL) | (p >= min_kw - TOL)))


@settings(max_examples=120, deadline=None)
@given(ac_frames(), st.lists(st.floats(-300, 300, allow_nan=False), min_size=1, max_size=6))
def test_setpoints_followable_and_every_cap_held(
    frame: dict[str, object], devs: list[float]
) -> None:
    d = Dispatcher(min_on_s=30.0, min_off_s=30.0)
    f = d.prepare(**frame)  # type: ignore[arg-type]
    min_kw = np.asarray(frame["min_kw"])
    for k, dev in enumerate(devs):
        p = d.dispatch(dev, now_s=1000.0 + 10.0 * k)
        assert _followable(p, min_kw)
        assert limit_excess_kw(p, f) <= TOL  # kW caps and every phase cap
        assert np.all(p >= f.lo_kw - TOL)
        # a car is never above its continuous upper bound, unless rounded up to its minimum
        assert np.all((p <= f.hi_kw + TOL) | (np.abs(p - min_kw) <= TOL))


def test_unknown_phase_counts_on_every_phase() -> None:
    # two single-phase 7.4 kW cars, phases unknown, 10 kW per phase at the site
    d = Dispatcher()
    d.prepare(
        base_kw=np.array([7.4, 7.4]),
        lo_kw=np.zeros(2),
        hi_kw=np.array([7.4, 7.4]),
        slot_site=np.zeros(2, dtype=np.intp),
        site_feeder=np.zeros(1, dtype=np.intp),
        site_cap_kw=np.array([100.0]),
        site_export_kw=np.array([100.0]),
        feeder_cap_kw=np.array([100.0]),
        fleet_cap_kw=100.0,
        min_kw=np.array([1.38, 1.38]),
        phase_w=np.ones((2, 3)),
        site_phase_cap_kw=np.array([[10.0, 10.0, 10.0]]),
    )
    p = d.dispatch(0.0)
    assert p.sum() <= 10.0 + TOL  # on a known phase each they could take 14.8 kW
    known = d.prepare(
        base_kw=np.array([7.4, 7.4]),
        lo_kw=np.zeros(2),
        hi_kw=np.array([7.4, 7.4]),
        slot_site=np.zeros(2, dtype=np.intp),
        site_feeder=np.zeros(1, dtype=np.intp),
        site_cap_kw=np.array([100.0]),
        site_export_kw=np.array([100.0]),
        feeder_cap_kw=np.array([100.0]),
        fleet_cap_kw=100.0,
        min_kw=np.array([1.38, 1.38]),
        phase_w=np.array([[1.0, 0, 0], [0, 1.0, 0]]),
        site_phase_cap_kw=np.array([[10.0, 10.0, 10.0]]),
    )
    assert np.allclose(d.dispatch(0.0, known), [7.4, 7.4])


def _site_of_cars(n: int, cap_kw: float, base_kw: float) -> tuple[Dispatcher, object]:
    d = Dispatcher(min_on_s=60.0, min_off_s=60.0)
    f = d.prepare(
        base_kw=np.full(n, base_kw),
        lo_kw=np.zeros(n),
        hi_kw=np.full(n, 11.0),
        slot_site=np.zeros(n, dtype=np.intp),
        site_feeder=np.zeros(1, dtype=np.intp),
        site_cap_kw=np.array([cap_kw]),
        site_export_kw=np.array([cap_kw]),
        feeder_cap_kw=np.array([1000.0]),
        fleet_cap_kw=1000.0,
        min_kw=np.full(n, 4.14),
    )
    return d, f


def test_time_sharing_rotates_fairly_and_keeps_the_site_total() -> None:
    # 6 cars share 12.5 kW: continuous 2.08 kW each, below the 4.14 kW minimum
    d, _ = _site_of_cars(6, 12.5, 12.5 / 6)
    on_time = np.zeros(6)
    for k in range(60):
        p = d.dispatch(0.0, now_s=10.0 * k)
        assert np.all((p == 0) | (p >= 4.14 - TOL)) and p.sum() <= 12.5 + TOL
        assert (p > 0).sum() == 3  # 3 × 4.14 = 12.42 kW of 12.5: the budget is used
        on_time += p > 0
    # every car got its turn, and about the same share of time
    assert on_time.min() >= 0.8 * on_time.max()


def test_minimum_on_and_off_times_hold_unless_a_cap_needs_it() -> None:
    d, f = _site_of_cars(6, 12.5, 12.5 / 6)
    state = []
    for k in range(30):
        state.append(d.dispatch(0.0, now_s=10.0 * k) > 0)
    s = np.array(state)  # ticks × cars
    for car in range(6):
        col = s[:, car].astype(int)
        changes = np.flatnonzero(np.diff(col)) + 1
        runs = np.diff(np.r_[0, changes, col.size])[1:-1]  # inner runs only
        assert np.all(runs >= 6)  # 60 s at 10 s ticks
    # a cap wins over the minimum on-time: the DSO drops the site to 5 kW
    tight = d.prepare(
        base_kw=f.base_kw,  # type: ignore[attr-defined]
        lo_kw=np.zeros(6),
        hi_kw=np.full(6, 11.0),
        slot_site=np.zeros(6, dtype=np.intp),
        site_feeder=np.zeros(1, dtype=np.intp),
        site_cap_kw=np.array([5.0]),
        site_export_kw=np.array([5.0]),
        feeder_cap_kw=np.array([1000.0]),
        fleet_cap_kw=1000.0,
        min_kw=np.full(6, 4.14),
    )
    p = d.dispatch(0.0, tight, now_s=300.0)
    assert p.sum() <= 5.0 and (p > 0).sum() <= 1


def test_group_cumsum_and_fits_against_a_loop() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        c = int(rng.integers(1, 30))
        site = rng.integers(0, 4, c).astype(np.intp)
        feeder = (site // 2).astype(np.intp)
        inc = rng.uniform(1, 5, c)
        prio = rng.uniform(0, 1, c)
        room = Caps3(rng.uniform(0, 15, 4), rng.uniform(0, 25, 2), float(rng.uniform(0, 40)))
        order = np.argsort(-prio, kind="stable")
        cs = group_cumsum(site, inc, order.astype(np.intp))
        ok = fits(inc, prio, site, feeder, room)
        used_site, used_feeder, used_fleet = np.zeros(4), np.zeros(2), 0.0
        seen = np.zeros(4)
        for i in order:
            seen[site[i]] += inc[i]
            assert abs(cs[i] - seen[site[i]]) < 1e-9
            if ok[i]:
                used_site[site[i]] += inc[i]
                used_feeder[feeder[i]] += inc[i]
                used_fleet += inc[i]
        assert np.all(used_site <= room.site_kw + 1e-9)
        assert np.all(used_feeder <= room.feeder_kw + 1e-9)
        assert used_fleet <= room.fleet_kw + 1e-9


def test_fleet_keeps_each_sessions_minimum_and_phases() -> None:
    from datetime import UTC, datetime, timedelta

    from aggregator.fleet import FleetState
    from aggregator.messages import SessionStarted
    from aggregator.topology import Feeder, Site, Topology

    topo = Topology(
        feeders=(Feeder("f", 100.0),),
        sites=(Site("s", "f", 50.0, voltage_v=220.0, phase_limits_a=(32.0, 32.0, 16.0)),),
    )
    assert topo.validate() == []
    assert np.allclose(topo.site_phase_cap_kw, [[7.04, 7.04, 3.52]])  # type: ignore[arg-type]
    fleet = FleetState(topo)
    t = datetime(2026, 1, 1, tzinfo=UTC)

    def start(evse: str, **kw: object) -> None:
        msg = SessionStarted(
            ts=t,
            feeder_id="f",
            site_id="s",
            evse_id=evse,
            csms_id="c",
            session_id=evse,
            departure=t + timedelta(hours=2),
            energy_requested_kwh=10.0,
            max_power_kw=11.0,
            **kw,  # type: ignore[arg-type]
        )
        assert fleet.apply(msg).outcome.value == "applied"

    start("three")
    start("one_known", phases=1, phase="L2", min_current_a=8.0)
    start("one_unknown", phases=1)
    assert np.allclose(fleet.min_charge_kw[:3], [3 * 6 * 0.22, 8 * 0.22, 6 * 0.22])
    assert np.allclose(fleet.phase_w[:3], [[1 / 3] * 3, [0, 1, 0], [1, 1, 1]])
    bad = Topology(
        feeders=(Feeder("f", 1.0),),
        sites=(Site("s", "f", 1.0, voltage_v=0.0, phase_limits_a=(1.0, 0.0, 1.0)),),
    )
    assert {i.code for i in bad.validate()} == {"voltage", "phase_limits"}
