"""The feeder as the core sees it: a :class:`aggregator.planning.gridloop.GridModel` on pandapower.

:class:`FeederGrid` binds a :class:`~grid.feeders.FeederModel` to the topology's sites
(each site names its bus) and answers the two questions the planner asks:

* :meth:`FeederGrid.constraints` — linear line/transformer loading and voltage limits
  on site powers per plan step, linearised around a schedule (``grid.sensitivity``);
* :meth:`FeederGrid.check` — an AC power flow of every step with the sites' power on top
  of the feeder's own load and PV (``grid.powerflow``, power-grid-model batch engine).

Violations that the feeder has without any EV load (its households alone overload a
line, say) are not the fleet's doing and cannot be fixed by it: :meth:`check` reports a
violation only where the schedule makes an element worse than the background alone by
more than ``tolerance`` (0.1 percentage point, 1e-4 pu), and the linear constraints ask
such rows not to get worse (``relax_background``). Plan steps are evaluated at their
start time (SimBench profiles are 15-minute values).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from aggregator.errors import ConfigError, Issue
from aggregator.planning.gridloop import GridCheck, GridViolation
from aggregator.planning.request import SiteLinearConstraints
from aggregator.topology import Topology
from grid.feeders import FeederModel
from grid.powerflow import Engine, GridLimits, PowerFlowResult, run_timeseries
from grid.sensitivity import grid_constraints, linearize

__all__ = ["FeederGrid"]

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
    ) -> None:
        missing = [s.site_id for s in topology.sites if not s.bus]
        if missing:
            raise ConfigError([Issue("sites.bus", "every site needs a bus", tuple(missing))])
        self.model = model
        self.topology = topology
        self.site_buses: tuple[str, ...] = tuple(str(s.bus) for s in topology.sites)
        self.limits = limits or GridLimits()
        self.engine: Engine = engine
        self.max_site_kw = (
            topology.site_limit_kw.copy() if max_site_kw is None else np.asarray(max_site_kw)
        )
        self._background = lru_cache(maxsize=64)(self._background_run)

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
        sens = linearize(self.model, self.site_buses, times, base, engine=self.engine)
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
        return run_timeseries(self.model, times, self.extra_kw(site_kw), engine=self.engine)

    def _background_run(self, start: datetime, step_s: float, steps: int) -> PowerFlowResult:
        return run_timeseries(self.model, self.times(start, step_s, steps), engine=self.engine)

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
