"""gridflex vs earliest-deadline-first (EDF) on SimBench feeders, judged by pandapower.

For each feeder a heavy scenario (cars charged overnight that are still charging in the
morning ramp, when household load rises; on MV, charging hubs of MW size at the MV/LV
substations) is

* simulated closed-loop by gridflex (``run_simulation`` with a ``FeederGrid``: plans
  linearised, AC-checked, repaired, energy recovered), and
* charged by **EDF**, written here and not in the product: per 15-min step, every plugged
  car in order of departure gets as much as its power, its remaining energy and the site,
  feeder, fleet and DSO caps left allow, under the simulation's plug-in rule (a car is
  plugged at the dispatch ticks inside its stay; a car gets 0 or at least its 3 × 6 A
  minimum, as gridflex's do); then one crude grid rule — while the
  AC check of every car present at its rate (the grid view gridflex plans with) still
  finds a fleet-caused violation, scale every site *behind* the overloaded element (the
  sites the element feeds; for a voltage violation, those fed through the bus; failing
  that, all sites) by the largest common factor that passes (two batched searches of 21
  factors). EDF is checked against the same AC limits as gridflex (ratings minus the
  feeder's margin).

Both dispatched schedules (step means) are recomputed **independently** by
:func:`independent_violations`: a fresh SimBench net, the absolute profiles from
``simbench.get_absolute_values`` (not gridflex's profile code), the site powers added as
loads, ``pandapower.runpp`` per step, checked against the ratings (100 %, 0.90–1.10 pu); a
violation is fleet-caused when the value is worse than the same step without EV load
(0.1 pp, 1e-4 pu). Reported per feeder: energy, sessions short by more than 1 kWh,
gridflex / EDF energy, gridflex's upper bound and repair cost, violations of each.

    python benchmarks/edf.py --json                      # 00:00–08:00, LV and MV
    python benchmarks/edf.py --grids 1-MV-semiurb--0-sw,1-MV-urban--0-sw \
        --start-hour 4 --hours 4 --json                  # the MV morning ramp
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

try:
    import grid
except ImportError:  # run from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import networkx as nx
import numpy as np
import pandapower as pp
import pandapower.topology as top
import simbench as sb
from numpy.typing import NDArray

import grid
from adapters.stream.inprocess import InProcessBus
from aggregator.limits import LimitBook
from aggregator.sim.bound import tick_plugged_share
from aggregator.sim.scenario import Scenario, SessionSpec
from aggregator.sim.simulation import run_simulation
from aggregator.sim.vehicle import default_min_charge_kw
from aggregator.topology import Feeder, Topology
from grid.powerflow import run_timeseries

FloatArray = NDArray[np.float64]
DAY = datetime(2026, 1, 14, tzinfo=UTC)  # a winter Thursday in the SimBench profiles
SHORT_KWH = 1.0
LOADING_TOL_PCT = 0.1
VOLTAGE_TOL_PU = 1e-4


@dataclass(frozen=True)
class Spec:
    """Size of a heavy scenario on one feeder (kW, kWh per car)."""

    sites: int
    evses: int
    kw: tuple[float, ...]
    kwh: tuple[float, float]


FULL = {
    "1-LV-rural2--0-sw": Spec(8, 60, (11.0, 22.0), (25.0, 60.0)),
    "1-LV-semiurb4--0-sw": Spec(12, 120, (11.0, 22.0), (25.0, 60.0)),
    "1-LV-semiurb5--0-sw": Spec(12, 120, (11.0, 22.0), (25.0, 60.0)),
    "1-MV-semiurb--0-sw": Spec(8, 240, (150.0, 350.0), (200.0, 500.0)),
    "1-MV-urban--0-sw": Spec(8, 240, (150.0, 350.0), (200.0, 500.0)),
}
"""Benchmark sizes (the CI tests in ``tests/grid/test_grid_limits.py`` use smaller ones):
on MV, 8 charging hubs of 30 × 150–350 kW at MV/LV substations."""


def heavy_scenario(
    code: str,
    spec: Spec,
    *,
    start_hour: float = 0.0,
    hours: float = 10.0,
    seed: int = 1,
    tick_s: float = 300.0,
) -> tuple[Scenario, grid.FeederModel]:
    """Cars plugged in from the evening before or arriving in the first hours, leaving
    between 06:00 and 09:30 (the morning ramp), big energy wishes: the grid binds."""
    model = grid.load_feeder(code)
    placed = grid.place_sites(model, spec.sites, seed=seed, connection_limit_kw=(1e5, 1e5))
    topo = grid.to_topology(model, placed)
    topo = Topology((Feeder(model.feeder_id, 1e9),), topo.sites)  # the AC check judges
    rng = np.random.default_rng(seed)
    start = DAY + timedelta(hours=start_hour)
    end = start + timedelta(hours=hours)
    sessions = []
    for i in range(spec.evses):
        arrival = start + timedelta(hours=float(rng.uniform(0.0, 0.35 * hours)))
        leave_h = float(rng.uniform(6.0, 9.5))
        departure = min(DAY + timedelta(hours=leave_h), end - timedelta(minutes=15))
        if departure <= arrival + timedelta(hours=1):
            departure = arrival + timedelta(hours=1 + float(rng.uniform(0, 2)))
        departure = min(departure, end)
        kw = float(rng.choice(spec.kw))
        kwh = round(float(rng.uniform(*spec.kwh)), 2)
        sessions.append(
            SessionSpec(
                evse_id=f"e{i:05d}",
                site_id=placed[i % len(placed)].site_id,
                arrival=arrival,
                departure=departure,
                energy_kwh=kwh,
                max_power_kw=kw,
            )
        )
    scenario = Scenario(
        name=f"heavy-{code}",
        feeder=model.feeder_id,
        topology=topo,
        start=start,
        end=end,
        step_s=900.0,
        sessions=tuple(sessions),
        tick_s=tick_s,
    )
    return scenario, model


# --- EDF with one crude AC rule --------------------------------------------------------


@dataclass(frozen=True)
class EdfResult:
    site_kw: FloatArray  # (sites, steps), step means
    session_kwh: FloatArray
    requested_kwh: FloatArray
    elapsed_s: float

    @property
    def energy_kwh(self) -> float:
        return float(self.session_kwh.sum())

    @property
    def short(self) -> int:
        return int(np.sum(self.requested_kwh - self.session_kwh > SHORT_KWH))


def _graph(net: Any) -> tuple[Any, int]:
    g = top.create_nxgraph(net, respect_switches=True, include_trafos=True, multi=True)
    return g, int(net.ext_grid.bus.iloc[0])


class _Behind:
    """Which sites an element feeds (from the slack's side of the radial feeder)."""

    def __init__(self, model: grid.FeederModel, site_buses: list[int]) -> None:
        self.net = model.net
        self.graph, self.slack = _graph(model.net)
        self.site_buses = np.array(site_buses)
        self.names = {
            "line": dict(zip(_names(self.net.line, "line"), self.net.line.index, strict=True)),
            "trafo": dict(zip(_names(self.net.trafo, "trafo"), self.net.trafo.index, strict=True)),
        }
        self.bus_of = {
            name: int(i) for i, name in zip(self.net.bus.index, model.bus_names(), strict=True)
        }

    @functools.lru_cache(maxsize=4096)  # noqa: B019 (one instance per feeder)
    def mask(self, element: str) -> tuple[bool, ...]:
        kind, name = element.split(":", 1)
        if kind in ("line", "trafo"):
            idx = self.names[kind][name]
            ends = ("from_bus", "to_bus") if kind == "line" else ("hv_bus", "lv_bus")
            a, b = (int(self.net[kind].at[idx, e]) for e in ends)
            g = self.graph.copy()
            key = (kind, idx)
            for u, v, k in list(g.edges(keys=True)):
                if {u, v} == {a, b} and k == key:
                    g.remove_edge(u, v, k)
            fed = nx.node_connected_component(g, self.slack)
            return tuple(bool(b_ not in fed) for b_ in self.site_buses)
        bus = self.bus_of[name]
        g = self.graph
        paths = nx.single_source_shortest_path(g, self.slack)
        return tuple(bool(bus in paths.get(int(s), [])) for s in self.site_buses)


def _names(table: Any, prefix: str) -> list[str]:
    names = table["name"] if "name" in table.columns else [None] * len(table)
    seen: dict[str, int] = {}
    for n in names:
        if isinstance(n, str) and n:
            seen[n] = seen.get(n, 0) + 1
    return [
        n if isinstance(n, str) and n and seen[n] == 1 else f"{prefix}{i}"
        for n, i in zip(names, table.index, strict=True)
    ]


def _fleet_caused(fg: grid.FeederGrid, res: Any, k: int, bg: int) -> list[str]:
    """Elements violated in scenario ``k`` of ``res`` and worse than scenario ``bg``."""
    lim = fg.limits
    out: list[str] = []
    for table, names, limit in (
        (res.line_loading_pct, res.line_names, lim.max_line_loading_pct),
        (res.trafo_loading_pct, res.trafo_names, lim.max_trafo_loading_pct),
    ):
        over = (table[k] > limit) & ~(table[k] <= table[bg] + LOADING_TOL_PCT)
        prefix = "line" if names is res.line_names else "trafo"
        out += [f"{prefix}:{names[j]}" for j in np.flatnonzero(over)]
    vm, vbg = res.vm_pu[k], res.vm_pu[bg]
    low = (vm < lim.v_min_pu) & (vm < vbg - VOLTAGE_TOL_PU)
    high = (vm > lim.v_max_pu) & (vm > vbg + VOLTAGE_TOL_PU)
    out += [f"bus:{res.bus_names[j]}" for j in np.flatnonzero(low | high)]
    if not res.converged[k]:
        out.append("grid:not_converged")
    return out


def _step_ac(fg: grid.FeederGrid, when: datetime, p: FloatArray, behind: _Behind) -> FloatArray:
    """EDF's crude AC rule for one step: site powers ``p`` scaled until the check passes."""
    buses = sorted(set(fg.site_buses))

    def passing(candidates: list[FloatArray]) -> list[bool]:
        cols = np.array(candidates)  # (K, sites); the last scenario is the background
        extra = {b: np.zeros(len(candidates) + 1) for b in buses}
        for s, b in enumerate(fg.site_buses):
            extra[b][:-1] += cols[:, s]
        res = run_timeseries(fg.model, [when] * (len(candidates) + 1), extra)
        return [not _fleet_caused(fg, res, k, len(candidates)) for k in range(len(candidates))]

    def bad_elements(x: FloatArray) -> list[str]:
        extra = {b: np.zeros(2) for b in buses}
        for s, b in enumerate(fg.site_buses):
            extra[b][0] += x[s]
        return _fleet_caused(fg, run_timeseries(fg.model, [when, when], extra), 0, 1)

    bad = bad_elements(p)
    for _ in range(10):
        if not bad:
            break
        m = np.zeros(len(p), dtype=bool)
        for element in bad:
            if element.startswith(("line:", "trafo:", "bus:")):
                m |= np.array(behind.mask(element))
        m &= p != 0
        if not m.any() or not passing([np.where(m, 0.0, p)])[0]:
            m = p != 0  # nothing (or not enough) behind the element: every site
        coarse = np.linspace(0.0, 1.0, 21)
        ok = passing([np.where(m, p * f, p) for f in coarse])
        k = max(i for i, good in enumerate(ok) if good)
        f = float(coarse[k])
        if k < len(coarse) - 1:
            fine = np.linspace(coarse[k], coarse[k + 1], 21)
            okf = passing([np.where(m, p * x, p) for x in fine])
            f = float(fine[max(i for i, good in enumerate(okf) if good)])
        p = np.where(m, p * f, p)
        bad = bad_elements(p)
    return p


def edf(scenario: Scenario, fg: grid.FeederGrid) -> EdfResult:
    """Earliest-deadline-first with the crude AC rule (module doc); step means."""
    t0 = time.perf_counter()
    topo = scenario.topology
    step = scenario.step_s
    h = step / 3600.0
    start_s = scenario.start.timestamp()
    steps = max(1, math.ceil((scenario.end.timestamp() - start_s) / step))
    caps = LimitBook(topo, [a.limit for a in scenario.limits]).caps_for_steps(
        scenario.start, step, steps
    )
    order = sorted(range(len(scenario.sessions)), key=lambda j: scenario.sessions[j].departure)
    ss = [scenario.sessions[j] for j in order]
    share = tick_plugged_share(scenario)[order]  # the simulation's plug-in rule
    site = np.array([topo.site_index[s.site_id] for s in ss], dtype=np.intp)
    pmax = np.array([s.max_power_kw for s in ss])
    # the same cars as gridflex's: 0 or at least 3 x 6 A (a car finishing its energy may
    # take less, as it stops when full)
    pmin = default_min_charge_kw(topo.site_voltage_v[site], pmax)
    need = np.array([s.energy_kwh for s in ss])
    left = need.copy()
    feeder_of = topo.site_feeder
    behind = _Behind(fg.model, [grid.bus_index(fg.model, b) for b in fg.site_buses])
    out = np.zeros((topo.n_sites, steps))
    for t in range(steps):
        frac = share[:, t]
        site_head = caps.site_kw[:, t].copy()
        feed_head = caps.feeder_kw[:, t].copy()
        fleet_head = float(caps.fleet_kw[t])
        give = np.zeros(len(ss))  # step means
        for j in np.flatnonzero((frac > 0) & (left > 1e-9)):  # by departure
            s = site[j]
            x = min(pmax[j] * frac[j], left[j] / h, site_head[s], feed_head[feeder_of[s]])
            x = max(0.0, min(x, fleet_head))
            if x < pmin[j] * frac[j] - 1e-9 and x < left[j] / h - 1e-9:
                x = 0.0  # a setpoint the car could not follow
            give[j] = x
            site_head[s] -= x
            feed_head[feeder_of[s]] -= x
            fleet_head -= x
        # the grid sees every car present at its rate (as gridflex's grid view does)
        rate = np.divide(give, frac, out=np.zeros_like(give), where=frac > 0)
        p = np.bincount(site, weights=rate, minlength=topo.n_sites).astype(float)
        when = scenario.start + timedelta(seconds=step * t)
        fixed = _step_ac(fg, when, p, behind) if p.any() else p
        ratio = np.divide(fixed, p, out=np.ones_like(p), where=p > 1e-12)
        give *= ratio[site]
        give[(give < pmin * frac - 1e-9) & (give < left / h - 1e-9)] = 0.0
        left -= give * h
        out[:, t] = np.bincount(site, weights=give, minlength=topo.n_sites)
    got = need - left
    return EdfResult(out, got, need, time.perf_counter() - t0)


# --- independent recomputation ------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _absolute(code: str) -> tuple[Any, dict[tuple[str, str], Any]]:
    # the net as SimBench ships it (read once per process by gridflex's loader, which only
    # marks tap changers so that taps act in pandapower ≥ 3); the profiles are SimBench's
    # own absolute values, not gridflex's profile code
    net = grid.load_feeder(code).net
    return net, sb.get_absolute_values(net, profiles_instead_of_study_cases=True)


def independent_violations(
    code: str, start: datetime, step_s: float, site_bus_labels: list[str], site_kw: FloatArray
) -> dict[str, Any]:
    """Fleet-caused violations of ``site_kw`` (sites × steps) by ``pandapower.runpp`` on a
    fresh SimBench net with its absolute profiles (module doc); against the ratings."""
    base, profiles = _absolute(code)
    net = copy.deepcopy(base)
    labels = grid.load_feeder(code)
    buses = [grid.bus_index(labels, b) for b in site_bus_labels]
    first = len(net.load)
    pp.create_loads(net, buses, p_mw=0.0)
    n_prof = len(profiles[("load", "p_mw")])
    worst = {"line_pct": 0.0, "trafo_pct": 0.0, "vmin_pu": 2.0}
    found: list[tuple[int, str, float]] = []
    for t in range(site_kw.shape[1]):
        when = (start + timedelta(seconds=step_s * t)).astimezone(UTC)
        row = ((when.timetuple().tm_yday - 1) * 1440 + when.hour * 60 + when.minute) // 15
        row %= n_prof
        results = []
        for with_ev in (False, True):
            net.load.loc[: first - 1, "p_mw"] = profiles[("load", "p_mw")].iloc[row].to_numpy()
            net.load.loc[: first - 1, "q_mvar"] = profiles[("load", "q_mvar")].iloc[row].to_numpy()
            net.sgen["p_mw"] = profiles[("sgen", "p_mw")].iloc[row].to_numpy()
            ev = site_kw[:, t] / 1000.0 if with_ev else np.zeros(len(buses))
            net.load.loc[first:, "p_mw"] = ev
            net.load.loc[first:, "q_mvar"] = 0.0
            pp.runpp(net, numba=False)
            results.append(
                (
                    net.res_line.loading_percent.to_numpy(),
                    net.res_trafo.loading_percent.to_numpy(),
                    net.res_bus.vm_pu.to_numpy(),
                )
            )
        (l0, t0, v0), (l1, t1, v1) = results
        worst["line_pct"] = max(worst["line_pct"], float(np.nanmax(l1, initial=0)))
        worst["trafo_pct"] = max(worst["trafo_pct"], float(np.nanmax(t1, initial=0)))
        worst["vmin_pu"] = min(worst["vmin_pu"], float(np.nanmin(v1)))
        for j in np.flatnonzero((l1 > 100.0) & (l1 > l0 + LOADING_TOL_PCT)):
            found.append((t, f"line{j}", float(l1[j])))
        for j in np.flatnonzero((t1 > 100.0) & (t1 > t0 + LOADING_TOL_PCT)):
            found.append((t, f"trafo{j}", float(t1[j])))
        low = (v1 < 0.90) & (v1 < v0 - VOLTAGE_TOL_PU)
        high = (v1 > 1.10) & (v1 > v0 + VOLTAGE_TOL_PU)
        for j in np.flatnonzero(low | high):
            found.append((t, f"bus{j}", float(v1[j])))
    return {"violations": found, **{k: round(v, 4) for k, v in worst.items()}}


# --- the comparison ----------------------------------------------------------------------


def compare(
    code: str, spec: Spec, *, hours: float, seed: int = 1, start_hour: float = 0.0
) -> dict[str, Any]:
    scenario, model = heavy_scenario(code, spec, hours=hours, seed=seed, start_hour=start_hour)
    fg = grid.FeederGrid(model, scenario.topology)
    t0 = time.perf_counter()
    sim = run_simulation(scenario, InProcessBus(), grid=fg)
    sim_s = time.perf_counter() - t0
    ref = edf(scenario, fg)
    gf_site = sim.site_power_mean_kw.T
    buses = list(fg.site_buses)
    gf_ind = independent_violations(code, scenario.start, scenario.step_s, buses, gf_site)
    edf_ind = independent_violations(code, scenario.start, scenario.step_s, buses, ref.site_kw)
    s = sim.summary
    delivered = float(sim.session_delivered_kwh.sum())
    short = int(np.sum(sim.session_requested_kwh - sim.session_delivered_kwh > SHORT_KWH))
    return {
        "code": code,
        "evses": spec.evses,
        "sites": spec.sites,
        "hours": hours,
        "start_hour_utc": start_hour,
        "gridflex_kwh": round(delivered, 2),
        "edf_kwh": round(ref.energy_kwh, 2),
        "gridflex_over_edf": round(delivered / ref.energy_kwh, 4) if ref.energy_kwh else 1.0,
        "bound_kwh": s.get("energy_bound_kwh"),
        "requested_kwh": round(float(ref.requested_kwh.sum()), 2),
        "gridflex_short": short,
        "edf_short": ref.short,
        "gridflex_violations_independent": len(gf_ind["violations"]),
        "edf_violations_independent": len(edf_ind["violations"]),
        "gridflex_max_line_pct": gf_ind["line_pct"],
        "gridflex_max_trafo_pct": gf_ind["trafo_pct"],
        "gridflex_min_vm_pu": gf_ind["vmin_pu"],
        "grid_repair_kwh": s.get("grid_repair_kwh"),
        "grid_margin_loading_pct": s.get("grid_margin_loading_pct"),
        "simulate_s": round(sim_s, 1),
        "edf_s": round(ref.elapsed_s, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grids", default=",".join(FULL))
    ap.add_argument("--hours", type=float, default=8.0)
    ap.add_argument("--start-hour", type=float, default=0.0, help="UTC hour of the start")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from _machine import machine_info

    rows = [
        compare(c, FULL[c], hours=args.hours, seed=args.seed, start_hour=args.start_hour)
        for c in args.grids.split(",")
    ]
    if args.json:
        print(json.dumps({"results": rows, "machine": machine_info()}))
        return
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
