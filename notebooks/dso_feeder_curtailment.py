# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A DSO curtails a feeder and reads its hosting capacity
#
# The feeder is SimBench's `1-LV-urban6--0-sw` (630 kVA), the one `gridflex demo` uses,
# with 40 EV charge points on 40 sites. The DSO announces at 15:00 that the feeder may
# draw at most 15 kW for EVs from 17:30 to 21:00 (the evening peak). gridflex takes the
# limit through its one intake, plans around it and clips the fast loop to it; an AC
# power flow checks what was dispatched. Then the DSO asks where more load could connect:
# the hosting capacity of six load buses over the day.
#
# This notebook only calls the package; every number comes from it.

# %%
from dataclasses import replace
from datetime import timedelta

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import grid
from adapters.cli.demo import DEMO_DAY, demo_scenario_and_feeder
from adapters.stream.inprocess import InProcessBus
from aggregator.limits import DsoLimit, TargetType
from aggregator.sim.scenario import AnnouncedLimit
from aggregator.sim.simulation import run_simulation
from markets.activation import ReserveActivation

# %% [markdown]
# ## The feeder and the fleet

# %%
scenario, feeder = demo_scenario_and_feeder(evses=40, seed=7, tick_s=60.0)
pd.Series(
    {
        "feeder": feeder.feeder_id,
        "transformer rating (kVA)": feeder.rating_kva,
        "limit visible to EVs (kW)": round(feeder.limit_kw, 1),
        "buses": feeder.buses,
        "lines": feeder.lines,
        "sites": len(scenario.topology.sites),
        "charging sessions": len(scenario.sessions),
    }
).to_frame("value")

# %% [markdown]
# ## The DSO's curtailment
#
# A feeder limit with a higher priority than the background headroom the grid model
# publishes every 15 minutes; announced at 15:00, in force 17:30–21:00.

# %%
curtailment = DsoLimit(
    event_id="dso-curtail-evening",
    target_type=TargetType.FEEDER,
    target_id=feeder.feeder_id,
    start=DEMO_DAY + timedelta(hours=17, minutes=30),
    end=DEMO_DAY + timedelta(hours=21),
    limit_kw=15.0,
    priority=2,
    source="dso",
)
print(curtailment.validate(scenario.topology) or "the limit is valid for this topology")
scenario = replace(
    scenario,
    limits=(
        *scenario.limits,
        AnnouncedLimit(curtailment, announce_at=DEMO_DAY + timedelta(hours=15)),
    ),
)

# %%
result = run_simulation(
    scenario,
    InProcessBus(),
    grid=grid.FeederGrid(feeder, scenario.topology),
    activation=ReserveActivation(),
)
s = result.summary
pd.Series(
    {
        "largest excess over any limit (kW)": s["max_limit_excess_kw"],
        "energy requested (kWh)": s["energy_requested_kwh"],
        "energy delivered (kWh)": s["energy_delivered_kwh"],
        "share of the deliverable bound": s["delivered_share_of_bound"],
        "AC violations, dispatched": s["grid_violations"],
        "AC violations, uncontrolled charging": s["uncontrolled_grid_violations"],
        "max transformer loading, dispatched (%)": s["max_trafo_loading_pct"],
        "max transformer loading, uncontrolled (%)": s["uncontrolled_max_trafo_loading_pct"],
    }
).to_frame("value")

# %% [markdown]
# ## The feeder's EV power against its limit
#
# The cap is the tightest limit in force: the transformer headroom left by the households'
# own load, and the DSO's 15 kW during the curtailment (shaded). The energy the cars
# could not take in the evening moves into the night, under the cap.

# %%
fig, ax = plt.subplots(figsize=(10, 4))
ax.plot(result.tick_times, result.feeder_power_kw[:, 0], label="EV power on the feeder (kW)")
ax.step(
    result.tick_times,
    np.where(np.isfinite(result.feeder_cap_kw[:, 0]), result.feeder_cap_kw[:, 0], np.nan),
    where="post",
    label="feeder cap for EVs (kW)",
)
ax.axvspan(curtailment.start, curtailment.end, color="tab:red", alpha=0.1, label="curtailment")
ax.set_ylabel("power (kW)")
ax.set_ylim(0, 120)  # the headroom cap runs far above the fleet's power
ax.legend(loc="upper left")
ax.set_title("Feeder power and the DSO limit")
fig.autofmt_xdate()
plt.show()

# %% [markdown]
# ## What the AC power flow saw: gridflex vs uncontrolled charging

# %%
fig, ax = plt.subplots(figsize=(10, 3.5))
ax.plot(result.step_times, result.grid_series["loading_pct"], label="gridflex (max loading %)")
ax.plot(
    result.step_times,
    result.grid_series["uncontrolled_loading_pct"],
    label="uncontrolled charging (max loading %)",
    linestyle="--",
)
ax.axvspan(curtailment.start, curtailment.end, color="tab:red", alpha=0.1)
ax.set_ylabel("max line/transformer loading (%)")
ax.legend(loc="upper left")
fig.autofmt_xdate()
plt.show()

# %% [markdown]
# ## Hosting capacity
#
# The extra kW each of six load buses could draw alone, per 15 minutes of the day, with
# no line, transformer or voltage violation (linear estimate, then confirmed in AC).

# %%
buses = list(grid.load_buses(feeder))[:6]
day = [DEMO_DAY + timedelta(minutes=15 * i) for i in range(96)]
hosting_kw = grid.hosting_capacity_kw(feeder, buses, day)
fig, ax = plt.subplots(figsize=(10, 3.5))
for k, bus in enumerate(buses):
    ax.plot(day, hosting_kw[:, k], label=bus)
ax.set_ylabel("hosting capacity (kW)")
ax.legend(fontsize="small", ncol=2)
fig.autofmt_xdate()
plt.show()
pd.DataFrame(
    {
        "bus": buses,
        "min (kW)": hosting_kw.min(axis=0).round(1),
        "at 18:00 (kW)": hosting_kw[72].round(1),
        "median (kW)": np.median(hosting_kw, axis=0).round(1),
    }
)
