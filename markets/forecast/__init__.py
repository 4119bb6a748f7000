"""Flexibility forecast with uncertainty, from session history.

:mod:`~markets.forecast.history` draws fleets for a delivery day from past sessions (a
day bootstrap per site and weekday); :mod:`~markets.forecast.flex` turns one fleet into
its planned power and up/down flexibility per step within every cap and each session's
energy and departure; :mod:`~markets.forecast.forecast` collects the scenarios, gives
P50/P90 per block and back-tests the P90 on held-out days.
"""

from markets.forecast.flex import Blocks, FleetFlex, StepGrid, fleet_flexibility
from markets.forecast.forecast import (
    Backtest,
    Direction,
    FlexForecast,
    backtest,
    forecast_flexibility,
    lower_quantile,
    spread_factor,
)
from markets.forecast.history import DAY_S, Fleet, SessionHistory, draw_scenarios, site_coupling

__all__ = [
    "DAY_S",
    "Backtest",
    "Blocks",
    "Direction",
    "Fleet",
    "FleetFlex",
    "FlexForecast",
    "SessionHistory",
    "StepGrid",
    "backtest",
    "draw_scenarios",
    "fleet_flexibility",
    "forecast_flexibility",
    "lower_quantile",
    "site_coupling",
    "spread_factor",
]
