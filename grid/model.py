"""The feeder as the core sees it: a :class:`aggregator.planning.gridloop.GridModel` on pandapower.

:class:`FeederGrid` binds a :class:`~grid.feeders.FeederModel` to the topology's sites
(each site names its bus) and answers the two questions the planner asks:

* :meth:`FeederGrid.constraints` — linear line/transformer loading and voltage limits
  on site powers per plan step, linearised around a schedule (``grid.sensitivity``);
* :meth:`FeederGrid.check` — an AC power flow of every step with the sites' power on top
  of the feeder's own load and PV (``grid.powerflow``, power-grid-model batch engine).

The net is treated as frozen once bound (its structure is hashed once, not per power
flow). **Margin against forecast error** (issue 16): the feeder's real load never follows its
profile exactly, so plans are made and checked against the ratings minus a
:class:`GridMargin` (default :data:`DEFAULT_MARGIN`: 3 percentage points of line and
transformer loading, 0.005 pu of voltage at both ends of the band), configurable per
feeder: ``FeederModel.margin_*`` (a scenario file's ``grid_margin``) or
``FeederGrid(margin=...)``. Every :class:`GridCheck` states the
margin it was made with. :func:`base_load_correction` corrects the background forecast
from a live measurement of the feeder head where one exists (none is on the bus yet).

Violations that the feeder has without any EV load (its households alone overload a
line, say) are not the fleet's doing and cannot be fixed by it: :meth:`check` reports a
violation only where the schedule makes an element worse than the background alone by
more than ``tolerance`` (0.1 percentage point, 1e-4 pu), and the linear constraints ask
such rows not to get worse (``relax_background``). Plan steps are evaluated at their
start time (SimBench profiles are 15-minute values).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from aggregator.errors import ConfigError, InvalidInput, Issue
from aggregator.planning.gridloop import GridCheck, GridViolation
from aggregator.planning.request import SiteLinearConstraints
from aggregator.topology import Topology
from grid.feeders import MARGIN_LOADING_PCT, MARGIN_VOLTAGE_PU, FeederModel
from grid.powerflow import Engine, GridLimits, PowerFlowResult, net_fingerprint, run_timeseries
from grid.sensitivity import grid_constraints, linearize

__all__ = ["DEFAULT_MARGIN", "FeederGrid", "GridMargin", "base_load_correction"]


@dataclass(frozen=True, kw_only=True)
class GridMargin:
    """Reserve below the ratings that plans keep for forecast error (pp of loading, pu)."""

    loading_pct: float = MARGIN_LOADING_PCT
    voltage_pu: float = MARGIN_VOLTAGE_PU

    def validate(self, limits: GridLimits) -> list[Issue]:
        issues: list[Issue] = []
        lowest = min(limits.max_line_loading_pct, limits.max_trafo_loading_pct)
        if not (math.isfinite(self.loading_pct) and 0 <= self.loading_pct < lowest):
            issues.append(Issue("grid_margin.loading_pct", f"must be in [0, {lowest})"))
        band = limits.v_max_pu - limits.v_min_pu
        if not (math.isfinite(self.voltage_pu) and 0 <= 2 * self.voltage_pu < band):
            issues.append(Issue("grid_margin.voltage_pu", "must be ≥ 0 and leave a band"))
        return issues

    def applied(self, limits: GridLimits) -> GridLimits:
        """The limits plans are made and checked against: ``limits`` minus this margin."""
        return GridLimits(
            max_line_loading_pct=limits.max_line_loading_pct - self.loading_pct,
            max_trafo_loading_pct=limits.max_trafo_loading_pct - self.loading_pct,
            v_min_pu=limits.v_min_pu + self.voltage_pu,
            v_max_pu=limits.v_max_pu - self.voltage_pu,
        )


DEFAULT_MARGIN = GridMargin()
"""3 pp loading, 0.005 pu voltage: the size of a one-hour shift of a SimBench LV profile
at the evening peak (issue 16 measured 99.5 % → 101.8 % line loading)."""


def base_load_correction(
    forecast_kw: NDArray[np.float64],
    measured_kw: float,
    ev_kw: float,
    *,
    half_life_steps: float = 4.0,
    bounds: tuple[float, float] = (0.5, 2.0),
) -> NDArray[np.float64]:
    """Per-step factors for the background load forecast from one feeder-head measurement.

    ``forecast_kw`` (steps,) is the background forecast from the measurement's step on,
    ``measured_kw`` the feeder head's measured power at that step and ``ev_kw`` the EV power
    inside it. The measured background is ``measured − ev``; its ratio to the forecast,
    clipped to ``bounds``, applies at step 0 and decays to 1 with ``half_life_steps``.
    A pure function, not wired: nothing on the bus carries a feeder-head meter yet, so
    neither the service nor :class:`FeederGrid` applies it today.
    """
    f = np.asarray(forecast_kw, dtype=np.float64)
    if not (np.isfinite(f).all() and math.isfinite(measured_kw) and math.isfinite(ev_kw)):
        raise InvalidInput([Issue("base_load_correction", "inputs must be finite")])
    if f.size == 0 or abs(f[0]) < 1e-9:
        return np.ones_like(f)
    ratio = float(np.clip((measured_kw - ev_kw) / f[0], *bounds))
    decay = 0.5 ** (np.arange(f.size) / half_life_steps)
    return np.asarray(1.0 + (ratio - 1.0) * decay, dtype=np.float64)


_LOADING_TOL_PCT = 0.1
_VOLTAGE_TOL_PU = 1e-4


class FeederGrid:
    """One feeder model plus the bus of every site of ``topology`` (same order)."""

    def __init__(
        self,
        model: FeederModel,
        topology: Topology,
        *,
        limits: GridLimits | None = None,
        engine: Engine = "pgm",
        max_site_kw: NDArray[np.float64] | None = None,
        margin: GridMargin | None = None,
    ) -> None:
        missing = [s.site_id for s in topology.sites if not s.bus]
        if missing:
            raise ConfigError([Issue("sites.bus", "every site needs a bus", tuple(missing))])
        self.model = model
        self.topology = topology
        self.site_buses: tuple[str, ...] = tuple(str(s.bus) for s in topology.sites)
        self.ratings = limits or GridLimits()
        if margin is None:  # the feeder's own (a scenario file's ``grid_margin``)
            margin = GridMargin(
                loading_pct=model.margin_loading_pct, voltage_pu=model.margin_voltage_pu
            )
        issues = margin.validate(self.ratings)
        if issues:
            raise ConfigError(issues)
        self.margin = margin
        self.limits = margin.applied(self.ratings)  # what plans are made and checked against
        self.engine: Engine = engine
        self.max_site_kw = (
            topology.site_limit_kw.copy() if max_site_kw is None else np.asarray(max_site_kw)
        )
        self._background = lru_cache(maxsize=64)(self._background_run)
        # the net is treated as frozen from here on: its structure is hashed once
        self._fingerprint = net_fingerprint(model.net)

    @staticmethod
    def times(start: datetime, step_s: float, steps: int) -> list[datetime]:
        return [start + timedelta(seconds=step_s * i) for i in range(steps)]

    def constraints(
        self,
        start: datetime,
        step_s: float,
        steps: int,
        site_kw: NDArray[np.float64] | None,
        margin_pct: float,
    ) -> SiteLinearConstraints | None:
        times = self.times(start, step_s, steps)
        base = None if site_kw is None else np.asarray(site_kw, dtype=np.float64).T
        sens = linearize(
            self.model,
            self.site_buses,
            times,
            base,
            engine=self.engine,
            fingerprint=self._fingerprint,
        )
        return grid_constraints(
            sens, limits=self.limits, margin_pct=margin_pct, max_site_kw=self.max_site_kw
        )

    def extra_kw(self, site_kw: NDArray[np.float64]) -> dict[str, NDArray[np.float64]]:
        """Site powers (sites × steps) summed per bus, as ``run_timeseries`` wants them."""
        out: dict[str, NDArray[np.float64]] = {}
        for bus, row in zip(self.site_buses, np.asarray(site_kw, dtype=np.float64), strict=True):
            out[bus] = out[bus] + row if bus in out else row.copy()
        return out

    def run(self, start: datetime, step_s: float, site_kw: NDArray[np.float64]) -> PowerFlowResult:
        times = self.times(start, step_s, int(np.asarray(site_kw).shape[1]))
        return run_timeseries(
            self.model,
            times,
            self.extra_kw(site_kw),
            engine=self.engine,
            fingerprint=self._fingerprint,
        )

    def _background_run(self, start: datetime, step_s: float, steps: int) -> PowerFlowResult:
        times = self.times(start, step_s, steps)
        return run_timeseries(self.model, times, engine=self.engine, fingerprint=self._fingerprint)

    def check(self, start: datetime, step_s: float, site_kw: NDArray[np.float64]) -> GridCheck:
        res = self.run(start, step_s, site_kw)
        steps = int(np.asarray(site_kw).shape[1])
        bg = self._background(start, step_s, steps)
        found = [
            v
            for v in res.violations(self.limits)
            if _worse(v.step, v.element, v.kind, v.value, res, bg)
        ]
        return GridCheck(
            violations=tuple(
                GridViolation(v.step, v.element, v.kind, v.value, v.limit) for v in found
            ),
            max_line_loading_pct=_finite(res.max_line_loading_pct()),
            max_trafo_loading_pct=_finite(res.max_trafo_loading_pct()),
            min_voltage_pu=_finite(res.min_voltage_pu(), 1.0),
            max_voltage_pu=_finite(res.max_voltage_pu(), 1.0),
            loading_pct_by_step=tuple(_row_max(res.line_loading_pct, res.trafo_loading_pct)),
            min_voltage_pu_by_step=tuple(float(x) for x in np.nanmin(res.vm_pu, axis=1)),
            margin_loading_pct=self.margin.loading_pct,
            margin_voltage_pu=self.margin.voltage_pu,
        )


def _row_max(*tables: NDArray[np.float64]) -> list[float]:
    both = np.concatenate([t for t in tables if t.size], axis=1)
    return [float(x) for x in np.nanmax(both, axis=1)] if both.size else []


def _finite(x: float, default: float = 0.0) -> float:
    return float(x) if np.isfinite(x) else default


def _worse(
    step: int, element: str, kind: str, value: float, res: PowerFlowResult, bg: PowerFlowResult
) -> bool:
    """Is this violation the schedule's doing (worse than the background alone)?"""
    if kind == "not_converged":
        return bool(bg.converged[step])
    prefix, name = element.split(":", 1)
    tables: dict[str, tuple[Sequence[str], NDArray[np.float64]]] = {
        "line": (bg.line_names, bg.line_loading_pct),
        "trafo": (bg.trafo_names, bg.trafo_loading_pct),
        "bus": (bg.bus_names, bg.vm_pu),
    }
    names, values = tables[prefix]
    base = float(values[step, list(names).index(name)])
    if not np.isfinite(base):
        return True
    if kind == "undervoltage":
        return value < base - _VOLTAGE_TOL_PU
    if kind == "overvoltage":
        return value > base + _VOLTAGE_TOL_PU
    return value > base + _LOADING_TOL_PCT
