"""Fast loop invariants: setpoints inside envelopes, no cap ever exceeded, FCR curve."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from aggregator.dispatch import Dispatcher, limit_excess_kw

TOL = 1e-6


@st.composite
def frames(draw: st.DrawFn) -> dict[str, object]:
    n = draw(st.integers(1, 60))
    n_sites = draw(st.integers(1, 6))
    n_feeders = draw(st.integers(1, min(3, n_sites)))
    pos = st.floats(0, 50, allow_nan=False)
    hi = draw(arrays(np.float64, n, elements=pos))
    v2g = draw(arrays(np.bool_, n))
    lo = np.where(v2g, -draw(arrays(np.float64, n, elements=pos)), 0.0)
    base = draw(arrays(np.float64, n, elements=st.floats(-60, 60, allow_nan=False)))
    slot_site = draw(arrays(np.intp, n, elements=st.integers(0, n_sites - 1)))
    site_feeder = draw(arrays(np.intp, n_sites, elements=st.integers(0, n_feeders - 1)))
    cap = st.floats(0, 400, allow_nan=False)
    return dict(
        base_kw=base,
        lo_kw=lo,
        hi_kw=hi,
        slot_site=slot_site,
        site_feeder=site_feeder,
        site_cap_kw=draw(arrays(np.float64, n_sites, elements=cap)),
        site_export_kw=draw(arrays(np.float64, n_sites, elements=cap)),
        feeder_cap_kw=draw(arrays(np.float64, n_feeders, elements=cap)),
        fleet_cap_kw=draw(st.one_of(cap, st.just(float("inf")))),
        site_reserve_up_kw=draw(st.one_of(st.none(), arrays(np.float64, n_sites, elements=pos))),
        site_reserve_down_kw=draw(st.one_of(st.none(), arrays(np.float64, n_sites, elements=pos))),
    )


@settings(max_examples=400, deadline=None)
@given(frames(), st.floats(-500, 500, allow_nan=False))
def test_no_cap_exceeded_and_setpoints_inside_envelope(
    frame: dict[str, object], dev: float
) -> None:
    d = Dispatcher()
    f = d.prepare(**frame)  # type: ignore[arg-type]
    p = d.dispatch(dev)
    assert np.all(p >= f.lo_kw - TOL) and np.all(p <= f.hi_kw + TOL)
    # every cap is ≥ 0 here, so every cap can be met inside the envelopes
    assert limit_excess_kw(p, f) <= TOL


@settings(max_examples=200, deadline=None)
@given(frames())
def test_negative_cap_is_met_with_v2g_when_possible(frame: dict[str, object]) -> None:
    frame["fleet_cap_kw"] = -5.0
    d = Dispatcher()
    f = d.prepare(**frame)  # type: ignore[arg-type]
    p = d.dispatch(0.0)
    assert np.all(p >= f.lo_kw - TOL) and np.all(p <= f.hi_kw + TOL)
    if f.lo_kw.sum() <= -5.0 - 1e-3 and np.all(
        f.site_export_kw
        >= -np.bincount(f.slot_site, weights=f.lo_kw, minlength=f.site_export_kw.size)
    ):
        assert p.sum() <= -5.0 + TOL


def test_activation_follows_shares_within_headroom() -> None:
    d = Dispatcher()
    n = 4
    d.prepare(
        base_kw=np.full(n, 5.0),
        lo_kw=np.zeros(n),
        hi_kw=np.full(n, 11.0),
        slot_site=np.zeros(n, dtype=np.intp),
        site_feeder=np.zeros(1, dtype=np.intp),
        site_cap_kw=np.array([1e6]),
        site_export_kw=np.array([1e6]),
        feeder_cap_kw=np.array([1e6]),
        fleet_cap_kw=float("inf"),
    )
    up = d.dispatch(8.0)
    assert up.sum() == pytest.approx(28.0)
    down = d.dispatch(-8.0)
    assert down.sum() == pytest.approx(12.0)
    full = d.dispatch(-1000.0)  # more than the headroom: clipped at the envelope
    assert np.allclose(full, 0.0)


def test_site_cap_scales_only_that_site() -> None:
    d = Dispatcher()
    f = d.prepare(
        base_kw=np.array([10.0, 10.0, 10.0]),
        lo_kw=np.zeros(3),
        hi_kw=np.full(3, 11.0),
        slot_site=np.array([0, 0, 1], dtype=np.intp),
        site_feeder=np.zeros(2, dtype=np.intp),
        site_cap_kw=np.array([10.0, 50.0]),
        site_export_kw=np.array([10.0, 50.0]),
        feeder_cap_kw=np.array([100.0]),
        fleet_cap_kw=float("inf"),
    )
    p = d.dispatch(0.0)
    assert p[:2].sum() == pytest.approx(10.0, abs=1e-5)
    assert p[2] == pytest.approx(10.0)
    assert limit_excess_kw(p, f) <= TOL
