"""Closed-loop simulation: a simulated fleet and CSMS around a real :class:`Service`.

Per dispatch tick (``Scenario.dispatch_tick_s``) the simulation

1. publishes the telemetry and DSO signals that are due on the injected bus (sessions
   start and end, meter values every plan step, limits when the DSO announces them),
2. lets the service consume them (``Service.handle``) and tick (re-plan when due),
3. sends the frequency sample of the tick through the fast loop (``Service.on_frequency``),
4. lets each simulated car follow its EVSE's setpoint within its physics (power range,
   energy still wanted, no discharge below arrival energy), and
5. measures: limits (against an independent book of the limits the DSO has announced),
   energy, FCR tracking, loop timings.

An activation profile (``signal``: the frequency sample or aFRR request to send at each
tick, e.g. a TSO prequalification test) replaces the scenario's frequency trace; a
``record`` sink gets one :class:`~aggregator.service.events.PoolSampled` per tick with the
simulated fleet's measured power (the market's 1 s record is built from these).

The bus and clock are injected (the embedded wiring passes the in-process bus), so the
service runs exactly the code path it runs in production, message encoding included.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aggregator.dispatch import Activation
from aggregator.errors import InvalidInput
from aggregator.interfaces import DEFAULT_TOPICS, ManualClock, MessageBus, Topics
from aggregator.limits import Caps, DsoLimit, LimitBook
from aggregator.messages import (
    DsoLimitMessage,
    FrequencySample,
    FrequencySignal,
    MeterValue,
    SessionEnded,
    SessionStarted,
    SetpointBatch,
    encode,
)
from aggregator.planning.gridloop import GridModel
from aggregator.planning.request import PlanRequest, session_windows
from aggregator.service.events import EventSink, PoolSampled
from aggregator.service.replica import PriceSeries, Service, ServiceConfig
from aggregator.sim.scenario import Scenario
from aggregator.sim.summary import grid_summary, run_summary
from aggregator.sim.vehicle import VehicleModel, Vehicles, default_min_charge_kw


def _bincount_f(
    x: NDArray[np.intp], weights: NDArray[np.float64] | None = None, minlength: int = 0
) -> NDArray[np.float64]:
    return np.bincount(x, weights=weights, minlength=minlength).astype(np.float64, copy=False)


__all__ = [
    "SimulatedCsms",
    "SimulationResult",
    "oracle_request",
    "run_simulation",
]


class SimulatedCsms:
    """A CSMS that applies every batch at once: the last setpoint per EVSE holds."""

    def __init__(self, evse_ids: list[str]) -> None:
        self.index = {e: i for i, e in enumerate(evse_ids)}
        self.setpoint_kw = np.zeros(len(evse_ids))
        self.failsafe_kw = np.zeros(len(evse_ids))
        self.last_seq: dict[str, int] = {}
        self.batches = 0
        self.stale = 0
        self._cache: dict[int, tuple[list[str], NDArray[np.intp]]] = {}

    def publish(self, batch: SetpointBatch) -> None:
        if batch.seq <= self.last_seq.get(batch.csms_id, -1):
            self.stale += 1
            return
        self.last_seq[batch.csms_id] = batch.seq
        ids = batch.evse_ids
        hit = self._cache.get(id(ids))
        if hit is None or hit[0] is not ids:
            hit = (ids, np.array([self.index[e] for e in ids], dtype=np.intp))
            self._cache[id(ids)] = hit
        ix = hit[1]
        self.setpoint_kw[ix] = batch.power_kw
        self.failsafe_kw[ix] = batch.failsafe_kw
        self.batches += 1


@dataclass(frozen=True)
class SimulationResult:
    """Summary plus the series the CSVs and the report are made of."""

    summary: dict[str, Any]
    step_times: list[datetime]
    evse_ids: list[str]
    setpoint_mean_kw: NDArray[np.float64]  # (steps, evses)
    site_ids: list[str]
    site_power_mean_kw: NDArray[np.float64]  # (steps, sites)
    site_power_max_kw: NDArray[np.float64]
    site_cap_kw: NDArray[np.float64]
    site_excess_kw: NDArray[np.float64]
    tick_times: list[datetime]
    fleet_power_kw: NDArray[np.float64]  # per tick, measured
    fleet_cap_kw: NDArray[np.float64]
    feeder_power_kw: NDArray[np.float64]  # (ticks, feeders)
    feeder_cap_kw: NDArray[np.float64]
    fcr_requested_kw: NDArray[np.float64]
    fcr_delivered_kw: NDArray[np.float64]
    energy_delivered_kwh: NDArray[np.float64]  # cumulative per step
    energy_requested_kwh: NDArray[np.float64]  # cumulative requested of arrived sessions
    session_delivered_kwh: NDArray[np.float64]  # per session (scenario order, by arrival)
    session_requested_kwh: NDArray[np.float64]
    grid_series: dict[str, list[float]] = field(default_factory=dict)  # per plan step


def _caps_excess(
    p_site: NDArray[np.float64], p_feeder: NDArray[np.float64], p_fleet: float, caps: Caps
) -> float:
    return max(
        0.0,
        float(np.max(p_site - caps.site_kw, initial=0.0)),
        float(np.max(-p_site - caps.site_export_kw, initial=0.0)),
        float(np.max(p_feeder - caps.feeder_kw, initial=0.0)),
        p_fleet - float(caps.fleet_kw),
    )


def oracle_request(scenario: Scenario) -> PlanRequest:
    """One plan over the whole scenario that knows every session and limit in advance."""
    step = scenario.step_s
    start_s = scenario.start.timestamp()
    steps = max(1, math.ceil((scenario.end.timestamp() - start_s) / step))
    topo = scenario.topology
    sess = [
        s for s in scenario.sessions if s.arrival < scenario.end and s.departure > scenario.start
    ]
    first, last, first_frac, last_frac = session_windows(
        start_s,
        step,
        steps,
        np.array([s.arrival.timestamp() for s in sess], dtype=np.float64),
        np.array([s.departure.timestamp() for s in sess], dtype=np.float64),
    )
    book = LimitBook(topo, [a.limit for a in scenario.limits])
    return PlanRequest(
        start=scenario.start,
        step_s=step,
        steps=steps,
        session_site=np.array([topo.site_index[s.site_id] for s in sess], dtype=np.intp),
        first_step=first,
        last_step=last,
        first_frac=first_frac,
        last_frac=last_frac,
        max_power_kw=np.array([s.max_power_kw for s in sess], dtype=np.float64),
        min_power_kw=np.zeros(len(sess)),
        energy_needed_kwh=np.array([s.energy_kwh for s in sess], dtype=np.float64),
        discharge_budget_kwh=np.zeros(len(sess)),
        site_feeder=topo.site_feeder,
        caps=book.caps_for_steps(scenario.start, step, steps),
        reserve_kw=np.zeros(steps),
        weights=scenario.weights,
    )


def run_simulation(
    scenario: Scenario,
    bus: MessageBus,
    *,
    config: ServiceConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    topics: Topics = DEFAULT_TOPICS,
    grid: GridModel | None = None,
    activation: Activation | None = None,
    signal: Callable[[datetime], FrequencySignal] | None = None,
    record: EventSink | None = None,
    vehicles: VehicleModel | None = None,
) -> SimulationResult:
    """Run ``scenario`` closed-loop through a :class:`Service` fed by ``bus``.

    With a ``grid`` model the service plans with linearised grid limits checked by AC
    power flow, and the summary adds the AC figures of what was actually dispatched and
    of uncontrolled charging of the same sessions. ``vehicles``: how the cars respond
    (default :class:`VehicleModel`: 2 s delay, taper above 80 % SoC, 0.5 % meter noise).
    """
    issues = scenario.validate()
    if issues:
        raise InvalidInput(issues)
    topo = scenario.topology
    cfg = config or ServiceConfig(
        plan_step_s=scenario.step_s,
        reserve_kw=scenario.reserve_kw,
        solver=scenario.solver,
        weights=scenario.weights,
    )
    clock = ManualClock(scenario.start)
    sessions = sorted(scenario.sessions, key=lambda s: s.arrival)
    evse_ids = sorted({s.evse_id for s in sessions})
    csms = SimulatedCsms(evse_ids)
    # the market's activation rule (markets.activation) is injected by the caller; without
    # one, frequency samples ask for no deviation
    svc = Service(
        topo, cfg, clock=clock, sink=csms, topics=topics, grid=grid, activation=activation
    )
    if scenario.price_eur_per_mwh is not None:
        svc.prices = PriceSeries(
            scenario.price_eur_per_mwh.times_s, scenario.price_eur_per_mwh.values
        )

    n = len(sessions)
    ev_of = np.array([csms.index[s.evse_id] for s in sessions], dtype=np.intp)
    site_of = np.array([topo.site_index[s.site_id] for s in sessions], dtype=np.intp)
    arrival = np.array([s.arrival.timestamp() for s in sessions])
    departure = np.array([s.departure.timestamp() for s in sessions])
    want = np.array([s.energy_kwh for s in sessions])
    pmax = np.array([s.max_power_kw for s in sessions])
    pmin = np.array([s.min_power_kw for s in sessions])
    got = np.zeros(n)
    started = np.zeros(n, dtype=bool)
    sess_slot = np.full(n, -1, dtype=np.intp)  # the service's slot of each session's EVSE
    ended = np.zeros(n, dtype=bool)
    power = np.zeros(n)
    sid = [f"{s.evse_id}#{k}" for k, s in enumerate(sessions)]
    feeder_of_site = [topo.sites[i].feeder_id for i in range(topo.n_sites)]
    csms_of = [
        scenario.csms_of_site.get(topo.sites[i].site_id, topo.sites[i].csms_id)
        for i in range(topo.n_sites)
    ]

    truth = LimitBook(topo)
    pending = sorted(scenario.limits, key=lambda a: a.announce_at or scenario.start)
    tick = scenario.dispatch_tick_s
    step = scenario.step_s
    start_s, end_s = scenario.start.timestamp(), scenario.end.timestamp()
    ticks = max(1, math.ceil((end_s - start_s) / tick))
    steps = max(1, math.ceil((end_s - start_s) / step))
    n_ev, n_site, n_feed = len(evse_ids), topo.n_sites, topo.n_feeders
    sp_sum = np.zeros((steps, n_ev))
    site_sum = np.zeros((steps, n_site))
    site_max = np.full((steps, n_site), -np.inf)
    site_cap = np.full((steps, n_site), np.inf)
    site_exc = np.zeros((steps, n_site))
    fleet_p, fleet_cap = np.zeros(ticks), np.zeros(ticks)
    feed_p, feed_cap = np.zeros((ticks, n_feed)), np.zeros((ticks, n_feed))
    fcr_req, fcr_got = np.zeros(ticks), np.zeros(ticks)
    e_got, e_req = np.zeros(steps), np.zeros(steps)
    site_feeder = topo.site_feeder
    max_excess = 0.0
    last_meter_step = -1
    tick_h = tick / 3600.0
    svc.dispatcher.record_continuous = True

    def excess_of(p: NDArray[np.float64], c: Caps) -> float:
        s = _bincount_f(site_of, weights=p, minlength=n_site)
        fd = _bincount_f(site_feeder, weights=s, minlength=n_feed)
        return _caps_excess(s, fd, float(s.sum()), c)

    cars = Vehicles(
        vehicles or VehicleModel(),
        want_kwh=want,
        max_power_kw=pmax,
        min_charge_kw=default_min_charge_kw(topo.site_voltage_v[site_of], pmax),
        tick_s=tick,
        caps_excess=excess_of,
    )
    metered = np.zeros(n)

    def send(topic: str, key: str, msg: Any) -> None:
        bus.publish(topic, key, encode(msg))

    for k in range(ticks):
        t_s = start_s + k * tick
        now = datetime.fromtimestamp(t_s, tz=scenario.start.tzinfo)
        clock.set(now)
        si = min(int((t_s - start_s) // step), steps - 1)
        # --- 1. what is due: limits, session ends, starts, meter values
        while pending and (pending[0].announce_at or scenario.start) <= now:
            lim: DsoLimit = pending.pop(0).limit
            truth.add(lim)
            send(
                topics.grid_signals,
                lim.target_id,
                DsoLimitMessage(
                    ts=now,
                    event_id=lim.event_id,
                    target_type=lim.target_type.value,
                    target_id=lim.target_id,
                    start=lim.start,
                    end=lim.end,
                    limit_kw=lim.limit_kw,
                    priority=lim.priority,
                    source=lim.source or "scenario",
                ),
            )
        for j in np.flatnonzero(started & ~ended & (departure <= t_s)):
            ended[j] = True
            power[j] = 0.0
            send(
                topics.telemetry,
                feeder_of_site[site_of[j]],
                SessionEnded(
                    ts=now,
                    feeder_id=feeder_of_site[site_of[j]],
                    evse_id=evse_ids[ev_of[j]],
                    session_id=sid[j],
                    energy_kwh=float(got[j]),
                ),
            )
        new = np.flatnonzero(~started & (arrival <= t_s) & (departure > t_s))
        for j in new:
            started[j] = True
            s = sessions[j]
            send(
                topics.telemetry,
                feeder_of_site[site_of[j]],
                SessionStarted(
                    ts=now,
                    feeder_id=feeder_of_site[site_of[j]],
                    site_id=s.site_id,
                    evse_id=s.evse_id,
                    csms_id=csms_of[site_of[j]],
                    session_id=sid[j],
                    departure=s.departure,
                    energy_requested_kwh=s.energy_kwh,
                    max_power_kw=s.max_power_kw,
                    min_power_kw=s.min_power_kw,
                ),
            )
        plugged = started & ~ended
        if si != last_meter_step:
            last_meter_step = si
            for j in np.flatnonzero(plugged):
                send(
                    topics.telemetry,
                    feeder_of_site[site_of[j]],
                    MeterValue(
                        ts=now,
                        feeder_id=feeder_of_site[site_of[j]],
                        evse_id=evse_ids[ev_of[j]],
                        session_id=sid[j],
                        energy_kwh=float(got[j]),
                        power_kw=float(metered[j]),
                    ),
                )
        # --- 2. the service consumes and ticks
        for rec in bus.poll():
            svc.handle(rec)
        for j in new:
            sess_slot[j] = svc.fleet.slot_of.get(evse_ids[ev_of[j]], -1)
        svc.tick()
        # --- 3. fast loop
        if signal is not None:  # an activation profile (e.g. a prequalification test)
            sig: FrequencySignal = signal(now)
        else:
            f = scenario.frequency_hz
            sig = FrequencySample(ts=now, hz=float(f.at(t_s)) if f is not None else 50.0)
        out = svc.on_frequency(sig)
        # --- 4. cars follow their EVSE's setpoint within their physics
        hi = np.where(plugged, np.minimum(pmax, np.maximum(want - got, 0.0) / tick_h), 0.0)
        lo = np.where(plugged, np.maximum(pmin, -np.maximum(got, 0.0) / tick_h), 0.0)
        sp = csms.setpoint_kw[ev_of]
        caps = truth.caps_at(now)
        delta_kwh, power, metered = cars.step(
            sp, plugged=plugged, lo_kw=lo, hi_kw=hi, got_kwh=got, caps=caps
        )
        got += delta_kwh
        cont = svc.dispatcher.continuous_kw
        if cont is not None:
            on = (sess_slot >= 0) & (sess_slot < cont.size) & plugged
            cars.add_continuous(cont[sess_slot[on]], on)
        # --- 5. measure against the limits the DSO has announced (independent book)
        sp_ev = np.where(plugged, sp, 0.0)
        p_site_sp = _bincount_f(site_of, weights=sp_ev, minlength=n_site)
        p_site = _bincount_f(site_of, weights=power, minlength=n_site)
        p_feed_sp = _bincount_f(site_feeder, weights=p_site_sp, minlength=n_feed)
        p_feed = _bincount_f(site_feeder, weights=p_site, minlength=n_feed)
        exc = max(
            _caps_excess(p_site_sp, p_feed_sp, float(p_site_sp.sum()), caps),
            _caps_excess(p_site, p_feed, float(p_site.sum()), caps),
        )
        max_excess = max(max_excess, exc)
        np.add.at(sp_sum[si], ev_of[plugged], sp[plugged] * tick / step)
        site_sum[si] += p_site * tick / step
        site_max[si] = np.maximum(site_max[si], p_site)
        site_cap[si] = np.minimum(site_cap[si], caps.site_kw)
        site_exc[si] = np.maximum(site_exc[si], np.maximum(p_site_sp - caps.site_kw, 0.0))
        fleet_p[k], fleet_cap[k] = (
            float(power.sum()),
            float(min(caps.fleet_kw, caps.feeder_kw.sum())),
        )
        feed_p[k], feed_cap[k] = p_feed, caps.feeder_kw
        fcr_req[k] = out.deviation_kw
        known = (sess_slot >= 0) & (sess_slot < out.baseline_kw.size)
        base_ev = np.zeros(n)
        base_ev[known] = out.baseline_kw[sess_slot[known]]
        base_power = np.where(plugged, np.clip(base_ev, lo, hi), 0.0)
        fcr_got[k] = float(power.sum() - base_power.sum())
        if record is not None:  # baseline: the working point the cars could follow
            record.emit(
                PoolSampled(
                    at=now,
                    signal=sig,
                    reserve_kw=cfg.reserve_kw,
                    baseline_kw=float(base_power.sum()),
                    deviation_kw=out.deviation_kw,
                    setpoint_kw=float(sp_ev.sum()),
                    measured_kw=float(power.sum()),
                )
            )
        e_got[si] = float(got.sum())
        e_req[si] = float(want[started].sum())
        if progress is not None:
            progress(k + 1, ticks)

    summary = run_summary(
        scenario, svc, csms.batches, want, got, max_excess, fcr_req, fcr_got, n, grid
    )
    summary.update(cars.figures(float(got.sum())))
    summary["over_takers_reported"] = svc.counters["over_takers.reported"]
    grid_series: dict[str, list[float]] = {}
    if grid is not None:
        figures, grid_series = grid_summary(scenario, grid, site_sum.T.copy(), svc)
        summary.update(figures)
    step_times = [scenario.start + timedelta(seconds=step * i) for i in range(steps)]
    tick_times = [scenario.start + timedelta(seconds=tick * i) for i in range(ticks)]
    return SimulationResult(
        summary,
        step_times,
        evse_ids,
        sp_sum,
        [s.site_id for s in topo.sites],
        site_sum,
        site_max,
        site_cap,
        site_exc,
        tick_times,
        fleet_p,
        fleet_cap,
        feed_p,
        feed_cap,
        fcr_req,
        fcr_got,
        e_got,
        e_req,
        got,
        want,
        grid_series,
    )
