"""The built-in demo: a day of a few hundred EVs on a real SimBench LV feeder.

Feeder ``1-LV-urban6--0-sw`` (630 kVA). Its own households' load (SimBench profiles) is
subtracted from the transformer's EV-visible limit as a feeder headroom per 15 minutes,
so the fleet is planned on top of a realistic background. The DSO curtails the feeder
in the evening peak (17:00–20:00 UTC, announced at 12:00), the aggregator holds a
symmetric FCR reserve, and the frequency trace has realistic noise plus two events.

The window runs from 04:00 to 10:00 the next day (30 h) so the evening's cars leave
inside it. Sessions are drawn from published patterns (seeded, reproducible): residential evening
arrivals (~18:30 ± 1 h, leaving the next morning), workplace arrivals (~08:00 ± 45 min,
7–9 h stays) and short public stops; energies follow daily driving (median ~12 kWh);
power classes 3.7/7.4/11/22 kW; a few bidirectional (V2G) cars.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

import grid
from aggregator.limits import DsoLimit, TargetType
from aggregator.sim.scenario import AnnouncedLimit, Scenario, SessionSpec, TimeSeries
from aggregator.topology import Feeder, Topology

__all__ = ["DEMO_FEEDER", "demo_scenario", "demo_scenario_and_feeder"]

DEMO_FEEDER = "1-LV-urban6--0-sw"
DEMO_DAY = datetime(2026, 1, 14, tzinfo=UTC)
START_H = 4.0  # the demo runs from 04:00 on DEMO_DAY ...
HOURS = 30.0  # ... to 10:00 the next day, so the evening's cars leave inside the window


def _sessions(
    rng: np.random.Generator, evses: int, sites: list[str], day: datetime
) -> list[SessionSpec]:
    out: list[SessionSpec] = []
    kind = rng.choice(3, size=evses, p=[0.5, 0.3, 0.2])
    power = rng.choice([3.7, 7.4, 11.0, 22.0], size=evses, p=[0.1, 0.2, 0.6, 0.1])
    v2g = rng.random(evses) < 0.05
    site_of = rng.integers(0, len(sites), size=evses)
    for i in range(evses):
        if kind[i] == 0:  # residential: evening arrival, next-morning departure
            arr_h = float(np.clip(rng.normal(18.5, 1.0), 15.0, 22.5))
            dep_h = 24.0 + float(np.clip(rng.normal(7.0, 0.7), 5.5, 9.0))
        elif kind[i] == 1:  # workplace
            arr_h = float(np.clip(rng.normal(8.0, 0.75), 6.0, 10.5))
            dep_h = arr_h + float(rng.uniform(7.0, 9.0))
        else:  # public / short stop
            arr_h = float(rng.uniform(8.0, 20.0))
            dep_h = arr_h + float(rng.uniform(0.75, 3.0))
        stay_h = dep_h - arr_h
        energy = float(np.clip(rng.lognormal(np.log(12.0), 0.5), 3.0, 45.0))
        energy = round(min(energy, 0.9 * power[i] * stay_h), 2)
        out.append(
            SessionSpec(
                evse_id=f"evse-{i + 1:04d}",
                site_id=sites[site_of[i]],
                arrival=day + timedelta(hours=round(arr_h, 3)),
                departure=day + timedelta(hours=round(dep_h, 3)),
                energy_kwh=energy,
                max_power_kw=float(power[i]),
                min_power_kw=-float(power[i]) if v2g[i] else 0.0,
            )
        )
    return out


def _frequency(rng: np.random.Generator, day: datetime, tick_s: float) -> TimeSeries:
    n = int(HOURS * 3600 / tick_s)
    dev = np.zeros(n)
    x = 0.0
    theta, sigma = tick_s / 300.0, 0.018 * np.sqrt(2 * tick_s / 300.0)
    noise = rng.normal(0.0, 1.0, n)
    for i in range(n):  # Ornstein–Uhlenbeck: σ ≈ 18 mHz, 5 min memory (built once)
        x += -theta * x + sigma * noise[i]
        dev[i] = x
    t = START_H * 3600 + np.arange(n) * tick_s
    dip = (t >= 19.5 * 3600) & (t < 19.5 * 3600 + 600)  # an under-frequency event, 10 min
    dev[dip] -= 0.15 * np.minimum(1.0, (t[dip] - 19.5 * 3600) / 30.0)
    rise = (t >= 3 * 3600) & (t < 3 * 3600 + 900)  # an over-frequency event at night
    dev[rise] += 0.08
    return TimeSeries((day.timestamp() + t).astype(np.float64), np.round(50.0 + dev, 4))


def _prices(day: datetime) -> TimeSeries:
    hourly = [
        78,
        74,
        70,
        68,
        70,
        80,
        105,
        130,
        120,
        100,
        85,
        70,
        62,
        60,
        68,
        85,
        115,
        165,
        190,
        170,
        140,
        115,
        100,
        88,
    ]
    t = day.timestamp() + 3600.0 * np.arange(48)
    return TimeSeries(t.astype(np.float64), np.array(hourly * 2, dtype=np.float64))


def demo_scenario(
    *, evses: int = 300, seed: int = 7, tick_s: float = 10.0, reserve_kw: float = 60.0
) -> Scenario:
    """The demo scenario (see the module docstring); deterministic for a seed."""
    return demo_scenario_and_feeder(evses=evses, seed=seed, tick_s=tick_s, reserve_kw=reserve_kw)[0]


def demo_scenario_and_feeder(
    *, evses: int = 300, seed: int = 7, tick_s: float = 10.0, reserve_kw: float = 60.0
) -> tuple[Scenario, grid.FeederModel]:
    """The demo scenario and its SimBench feeder model."""
    rng = np.random.default_rng(seed)
    model = grid.load_feeder(DEMO_FEEDER)
    placements = grid.place_sites(model, 40, seed=seed, connection_limit_kw=(40.0, 120.0))
    topo = grid.to_topology(model, placements)
    sites = [p.site_id for p in placements]
    day = DEMO_DAY
    # feeder headroom for EVs: transformer limit minus the households' own load
    start = day + timedelta(hours=START_H)
    steps = [start + timedelta(minutes=15 * i) for i in range(int(HOURS * 4) + 96)]
    background = grid.background_load_kw(model, steps)
    limits = [
        AnnouncedLimit(
            DsoLimit(
                event_id=f"headroom-{i:03d}",
                target_type=TargetType.FEEDER,
                target_id=model.feeder_id,
                start=t,
                end=t + timedelta(minutes=15),
                limit_kw=round(float(model.limit_kw - background[i]), 1),
                source="grid-model",
            )
        )
        for i, t in enumerate(steps)
    ]
    limits.append(
        AnnouncedLimit(
            DsoLimit(
                event_id="dso-evening-curtailment",
                target_type=TargetType.FEEDER,
                target_id=model.feeder_id,
                start=day + timedelta(hours=17),
                end=day + timedelta(hours=20),
                limit_kw=220.0,
                priority=1,
                source="dso",
            ),
            announce_at=day + timedelta(hours=12),
        )
    )
    topo = Topology(
        feeders=(Feeder(model.feeder_id, model.limit_kw, model.source),), sites=topo.sites
    )
    scenario = Scenario(
        name="demo",
        feeder=model.feeder_id,
        topology=topo,
        start=start,
        end=start + timedelta(hours=HOURS),
        step_s=900.0,
        sessions=tuple(_sessions(rng, evses, sites, day)),
        limits=tuple(limits),
        frequency_hz=_frequency(rng, day, tick_s),
        price_eur_per_mwh=_prices(day),
        reserve_kw=reserve_kw,
        tick_s=tick_s,
    )
    return scenario, model
