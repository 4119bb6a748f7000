"""A true upper bound on the energy a closed-loop simulation can deliver.

The summary's ``energy_bound_kwh`` is the optimum of a **relaxation** of what any schedule
can do in :func:`aggregator.sim.simulation.run_simulation` under the same plug-in rules:

* a car draws power only at the dispatch ticks ``t_k`` with ``arrival ≤ t_k < departure``
  (the simulation's rule), between ``min(min_power, 0)`` and ``max_power``, held for one
  tick, so its step-mean power lies in ``[min_power, max_power] × plugged share``;
* its net energy never exceeds what it asked for;
* per step, the step-mean power of each site, feeder and the fleet is at most the mean,
  over the step's ticks, of the caps the DSO had announced at each tick (site connection
  limits included; site export likewise).

Everything else — grid (AC) limits, the order in which cars arrive and are learnt, the
FCR reserve, the discharge budget, rounding — is dropped, so no schedule under these rules
beats the bound; gridflex's ``delivered / bound`` is then a conservative efficiency. It is
one linear program (HiGHS via ``scipy.optimize.linprog``), solved once per simulation.

Invariants: kW and kWh; the bound is ≥ 0 and ≤ the energy requested.
"""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.optimize import linprog

from aggregator.errors import SolverFailed
from aggregator.limits import LimitBook
from aggregator.sim.scenario import Scenario

__all__ = ["energy_bound_kwh", "tick_plugged_share"]


def tick_plugged_share(scenario: Scenario) -> NDArray[np.float64]:
    """(sessions, steps): share of each plan step's ticks at which a session is plugged in
    by the simulation's rule (``arrival ≤ t_k < departure``); scenario session order."""
    tick, step = scenario.dispatch_tick_s, scenario.step_s
    start_s, end_s = scenario.start.timestamp(), scenario.end.timestamp()
    ticks = max(1, math.ceil((end_s - start_s) / tick))
    steps = max(1, math.ceil((end_s - start_s) / step))
    t = start_s + tick * np.arange(ticks)
    step_of = np.minimum(((t - start_s) // step).astype(np.intp), steps - 1)
    arr = np.array([s.arrival.timestamp() for s in scenario.sessions])
    dep = np.array([s.departure.timestamp() for s in scenario.sessions])
    out = np.zeros((len(arr), steps))
    for j in range(len(arr)):  # once per session per simulation: not a hot path
        plugged = (arr[j] <= t) & (t < dep[j])
        out[j] = np.bincount(step_of[plugged], minlength=steps)
    return out * (tick / step)


def _mean_caps(
    scenario: Scenario, steps: int
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Step means over the ticks of the caps in force, limits counted once announced."""
    topo = scenario.topology
    tick, step = scenario.dispatch_tick_s, scenario.step_s
    start_s, end_s = scenario.start.timestamp(), scenario.end.timestamp()
    ticks = max(1, math.ceil((end_s - start_s) / tick))
    site = np.zeros((topo.n_sites, steps))
    export = np.zeros((topo.n_sites, steps))
    feeder = np.zeros((topo.n_feeders, steps))
    fleet = np.zeros(steps)
    count = np.zeros(steps)
    book = LimitBook(topo)
    pending = sorted(scenario.limits, key=lambda a: a.announce_at or scenario.start)
    for k in range(ticks):
        now = datetime.fromtimestamp(start_s + k * tick, tz=scenario.start.tzinfo)
        while pending and (pending[0].announce_at or scenario.start) <= now:
            book.add(pending.pop(0).limit)
        caps = book.caps_at(now)
        si = min(int(k * tick // step), steps - 1)
        site[:, si] += caps.site_kw
        export[:, si] += caps.site_export_kw
        feeder[:, si] += caps.feeder_kw
        fleet[si] += min(float(caps.fleet_kw), 1e12)
        count[si] += 1
    n = np.maximum(count, 1)
    return site / n, export / n, feeder / n, fleet / n


def energy_bound_kwh(scenario: Scenario) -> float:
    """The optimum of the relaxation in the module doc (kWh)."""
    sessions = scenario.sessions
    if not sessions:
        return 0.0
    topo = scenario.topology
    share = tick_plugged_share(scenario)
    steps = share.shape[1]
    h = scenario.step_s / 3600.0
    j_idx, t_idx = np.nonzero(share > 0)
    n = j_idx.size
    if n == 0:
        return 0.0
    frac = share[j_idx, t_idx]
    pmax = np.array([s.max_power_kw for s in sessions])[j_idx]
    pmin = np.minimum(np.array([s.min_power_kw for s in sessions]), 0.0)[j_idx]
    want = np.array([s.energy_kwh for s in sessions])
    site = np.array([topo.site_index[s.site_id] for s in sessions], dtype=np.intp)[j_idx]
    feeder = topo.site_feeder[site]
    site_cap, export_cap, feeder_cap, fleet_cap = _mean_caps(scenario, steps)
    cols = np.arange(n)
    ones = np.ones(n)
    blocks = [
        (sp.csr_matrix((ones * h, (j_idx, cols)), shape=(len(sessions), n)), want),
        (
            sp.csr_matrix((ones, (site * steps + t_idx, cols)), shape=(topo.n_sites * steps, n)),
            site_cap.ravel(),
        ),
        (
            sp.csr_matrix((-ones, (site * steps + t_idx, cols)), shape=(topo.n_sites * steps, n)),
            export_cap.ravel(),
        ),
        (
            sp.csr_matrix(
                (ones, (feeder * steps + t_idx, cols)), shape=(topo.n_feeders * steps, n)
            ),
            feeder_cap.ravel(),
        ),
        (sp.csr_matrix((ones, (t_idx, cols)), shape=(steps, n)), fleet_cap),
    ]
    a_ub = sp.vstack([b[0] for b in blocks]).tocsr()
    b_ub = np.concatenate([np.minimum(b[1], 1e12) for b in blocks])
    res = linprog(
        -h * ones,
        A_ub=a_ub,
        b_ub=b_ub,
        bounds=np.column_stack([pmin * frac, pmax * frac]),
        method="highs",
    )
    if res.status != 0:
        raise SolverFailed(f"energy bound LP: {res.message}")
    return float(min(-res.fun, want.sum()))
