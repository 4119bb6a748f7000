"""A synthetic session history for a set of sites (the demo feeder's by default).

:func:`generate_history` draws ``days`` days of charging sessions for ``evses`` EVSEs on
the given sites, seeded and reproducible, from the same published patterns as the demo
(:mod:`adapters.cli.demo`): residential (evening arrival ~18:30 ± 1 h, leaving ~07:00 the
next morning; later and longer at weekends), workplace (~08:00 ± 45 min, 7–9 h, rarely at
weekends) and public short stops (08:00–20:00, 45 min–3 h); energies follow daily driving
(lognormal, median ~12 kWh, 3–45 kWh, never more than 90 % of what the stay allows); power
classes 3.7/7.4/11/22 kW. Each EVSE keeps its site, kind and power class; each day it
has a session with a probability that depends on its kind and the weekday, independently
of other days and EVSEs. :func:`write_history_csv` writes the sessions CSV that
``gridflex market forecast --history`` reads (the scenario sessions' columns).

Times are UTC. Invariant: one EVSE's sessions never overlap.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from aggregator.sim.scenario import SessionSpec

__all__ = ["HISTORY_COLUMNS", "generate_history", "write_history_csv"]

HISTORY_COLUMNS = (
    "evse_id",
    "site_id",
    "arrival",
    "departure",
    "energy_kwh",
    "max_power_kw",
    "min_power_kw",
)
# probability of a session per day: (weekday, weekend) per kind
_P_SESSION = {0: (0.75, 0.6), 1: (0.85, 0.1), 2: (0.6, 0.5)}


def generate_history(
    site_ids: Sequence[str],
    *,
    evses: int,
    first_day: datetime,
    days: int,
    seed: int = 11,
    common_factor_sd: float = 0.0,
) -> list[SessionSpec]:
    """``days`` days of sessions from ``first_day`` (00:00 UTC) for ``evses`` EVSEs.

    ``common_factor_sd`` > 0: every day's chance of a session is multiplied, at every site
    at once, by a log-normal factor with that spread (holidays, weather) — sites then move
    together; 0 (default): sites independent, and the same sessions as before for a seed.
    """
    if first_day.tzinfo is None:
        raise ValueError("first_day must be UTC-aware")
    rng = np.random.default_rng(seed)
    kind = rng.choice(3, size=evses, p=[0.5, 0.3, 0.2])
    power = rng.choice([3.7, 7.4, 11.0, 22.0], size=evses, p=[0.1, 0.2, 0.6, 0.1])
    site_of = rng.integers(0, len(site_ids), size=evses)
    out: list[SessionSpec] = []
    for d in range(days):
        day = first_day + timedelta(days=d)
        weekend = day.weekday() >= 5
        p_today = np.array([_P_SESSION[int(k)][int(weekend)] for k in range(3)])[kind]
        if common_factor_sd > 0.0:
            p_today = np.minimum(p_today * rng.lognormal(0.0, common_factor_sd), 1.0)
        on = rng.random(evses) < p_today
        n = evses
        res_arr = np.clip(
            rng.normal(16.5 if weekend else 18.5, 2.0 if weekend else 1.0, n), 12, 22.5
        )
        res_dep = 24.0 + np.clip(rng.normal(9.0 if weekend else 7.0, 1.0, n), 5.5, 11.0)
        work_arr = np.clip(rng.normal(8.0, 0.75, n), 6.0, 10.5)
        work_dep = work_arr + rng.uniform(7.0, 9.0, n)
        pub_arr = rng.uniform(8.0, 20.0, n)
        pub_dep = pub_arr + rng.uniform(0.75, 3.0, n)
        arr_h = np.choose(kind, [res_arr, work_arr, pub_arr])
        dep_h = np.choose(kind, [res_dep, work_dep, pub_dep])
        energy = np.clip(rng.lognormal(np.log(12.0), 0.5, n), 3.0, 45.0)
        energy = np.round(np.minimum(energy, 0.9 * power * (dep_h - arr_h)), 2)
        for i in np.flatnonzero(on):
            out.append(
                SessionSpec(
                    evse_id=f"evse-{i + 1:05d}",
                    site_id=site_ids[site_of[i]],
                    arrival=day + timedelta(hours=round(float(arr_h[i]), 3)),
                    departure=day + timedelta(hours=round(float(dep_h[i]), 3)),
                    energy_kwh=float(energy[i]),
                    max_power_kw=float(power[i]),
                )
            )
    return out


def write_history_csv(path: Path, sessions: Sequence[SessionSpec]) -> None:
    """The sessions as a CSV with :data:`HISTORY_COLUMNS` (ISO 8601 UTC times)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(HISTORY_COLUMNS)
        for s in sessions:
            w.writerow(
                [
                    s.evse_id,
                    s.site_id,
                    s.arrival.isoformat(),
                    s.departure.isoformat(),
                    s.energy_kwh,
                    s.max_power_kw,
                    s.min_power_kw,
                ]
            )
