"""Closed-loop simulation on in-process parts: limits hold, energy is bounded, FCR answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from adapters.stream.inprocess import InProcessBus
from aggregator.errors import InvalidInput
from aggregator.limits import DsoLimit, TargetType
from aggregator.sim.bound import energy_bound_kwh
from aggregator.sim.scenario import AnnouncedLimit, Scenario, SessionSpec, TimeSeries
from aggregator.sim.simulation import run_simulation
from aggregator.topology import Feeder, Site, Topology
from markets.activation import ReserveActivation

T0 = datetime(2026, 1, 14, 12, tzinfo=UTC)


def scenario(
    seed: int = 1,
    n: int = 24,
    reserve_kw: float = 8.0,
    announce_h: float | None = 2.0,
    limit_kw: float = 30.0,
) -> Scenario:
    rng = np.random.default_rng(seed)
    topo = Topology(
        feeders=(Feeder("f1", 80.0),),
        sites=tuple(Site(f"s{k}", "f1", 35.0, csms_id=f"cs{k % 2}") for k in range(3)),
    )
    sessions = []
    for i in range(n):
        arr = T0 + timedelta(hours=float(rng.uniform(0, 8)))
        kw = float(rng.choice([3.7, 7.4, 11.0]))
        sessions.append(
            SessionSpec(
                evse_id=f"e{i:02d}",
                site_id=f"s{i % 3}",
                arrival=arr,
                departure=arr + timedelta(hours=float(rng.uniform(1.5, 10))),
                energy_kwh=round(float(rng.uniform(3, 25)), 2),
                max_power_kw=kw,
                min_power_kw=-kw if i % 7 == 0 else 0.0,
            )
        )
    t = np.arange(0, 20 * 3600, 30.0)
    hz = 50.0 + 0.03 * np.sin(t / 900.0)
    hz[(t > 6 * 3600) & (t < 6 * 3600 + 600)] = 49.75
    limits = (
        AnnouncedLimit(
            DsoLimit(
                "evening",
                TargetType.FEEDER,
                "f1",
                T0 + timedelta(hours=5),
                T0 + timedelta(hours=8),
                limit_kw,
            ),
            None if announce_h is None else T0 + timedelta(hours=announce_h),
        ),
    )
    return Scenario(
        name="unit",
        feeder="f1",
        topology=topo,
        start=T0,
        end=T0 + timedelta(hours=20),
        step_s=900.0,
        sessions=tuple(sessions),
        limits=limits,
        frequency_hz=TimeSeries(T0.timestamp() + t, hz),
        reserve_kw=reserve_kw,
        tick_s=30.0,
    )


@pytest.mark.parametrize("seed", [1, 2])
def test_limits_hold_and_energy_is_bounded(seed: int) -> None:
    sc = scenario(seed)
    res = run_simulation(sc, InProcessBus())
    s = res.summary
    assert s["max_limit_excess_kw"] == 0.0
    assert np.all(res.session_delivered_kwh <= res.session_requested_kwh + 1e-9)
    assert s["energy_delivered_kwh"] <= s["energy_bound_kwh"] + 1e-3
    assert s["energy_delivered_kwh"] >= 0.95 * s["energy_bound_kwh"]
    assert s["rejected_messages"] == 0 and s["plan_fallbacks"] == 0
    # the curtailment window really binds: the feeder stays at or under 30 kW in it
    ticks = np.array([t.timestamp() for t in res.tick_times])
    window = (ticks >= (T0 + timedelta(hours=5)).timestamp()) & (
        ticks < (T0 + timedelta(hours=8)).timestamp()
    )
    assert res.fleet_power_kw[window].max() <= 30.0 + 1e-6
    # CSV-level data: mean setpoints never above the site caps
    assert np.all(res.site_power_max_kw <= res.site_cap_kw + 1e-6)


def test_fcr_event_is_answered() -> None:
    res = run_simulation(scenario(reserve_kw=8.0), InProcessBus(), activation=ReserveActivation())
    ticks = np.array([t.timestamp() for t in res.tick_times])
    event = (ticks > (T0 + timedelta(hours=6)).timestamp()) & (
        ticks < (T0 + timedelta(hours=6, minutes=10)).timestamp()
    )
    # 49.75 Hz is beyond full activation: the fleet is asked to shed the whole reserve
    assert np.allclose(res.fcr_requested_kw[event], -8.0)
    assert np.median(res.fcr_delivered_kw[event]) <= -4.0
    assert res.summary["fcr_activations"] > 0


def test_same_scenario_same_result() -> None:
    a = run_simulation(scenario(3), InProcessBus()).summary
    b = run_simulation(scenario(3), InProcessBus()).summary
    timing = {"plan_solve_s_median", "fast_loop_ms_p50", "fast_loop_ms_p99"}
    assert {k: v for k, v in a.items() if k not in timing} == {
        k: v for k, v in b.items() if k not in timing
    }


def test_a_tighter_limit_never_raises_the_bound() -> None:
    loose = energy_bound_kwh(scenario(limit_kw=60.0))
    tight = energy_bound_kwh(scenario(limit_kw=5.0))
    assert tight <= loose + 1e-6
    assert tight < loose  # the 5 kW limit binds in this scenario


def test_invalid_scenario_lists_every_problem() -> None:
    sc = scenario()
    bad = SessionSpec("x", "nowhere", T0, T0 - timedelta(hours=1), -1.0, 0.0)
    broken = Scenario(**{**sc.__dict__, "sessions": (*sc.sessions, bad)})
    with pytest.raises(InvalidInput) as err:
        run_simulation(broken, InProcessBus())
    fields = {i.field for i in err.value.issues}
    assert {
        "sessions.site_id",
        "sessions.departure",
        "sessions.energy_kwh",
        "sessions.max_power_kw",
    } <= fields
