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
# # A charging station operator looks at fleet limits and setpoints
#
# A CSO runs 30 charge points on the demo feeder's sites, behind one CSMS. gridflex
# sends the CSMS per-EVSE setpoints in batches, each with a validity and a failsafe
# limit; every site has a connection limit and the feeder a cap. Here the CSO checks
# that no site went over its limit, sees which charge points got what power when, and
# whether the cars left with the energy they asked for.
#
# This notebook only calls the package; every number comes from it.

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from adapters.cli.demo import demo_scenario_and_feeder
from adapters.stream.inprocess import InProcessBus
from aggregator.messages import SetpointBatch
from aggregator.service.config import ServiceConfig
from aggregator.sim.simulation import run_simulation
from markets.activation import ReserveActivation

# %% [markdown]
# ## The sites and what a setpoint batch promises

# %%
scenario, _ = demo_scenario_and_feeder(evses=30, seed=11, tick_s=60.0)
sites = pd.DataFrame(
    [
        {"site": s.site_id, "bus": s.bus, "connection limit (kW)": s.connection_limit_kw}
        for s in scenario.topology.sites
    ]
)
print(
    f"{len(sites)} sites, connection limits {sites['connection limit (kW)'].min():.0f}–"
    f"{sites['connection limit (kW)'].max():.0f} kW"
)
print("a setpoint batch carries:", ", ".join(SetpointBatch.model_fields))
config = ServiceConfig()
pd.Series(
    {
        "failsafe power per EVSE (kW)": config.failsafe_kw,
        "failsafe duration (h)": config.failsafe_duration_s / 3600,
        "a batch per CSMS at least every (s)": config.heartbeat_interval_s,
    }
).to_frame("value")

# %%
result = run_simulation(scenario, InProcessBus(), activation=ReserveActivation())
s = result.summary
pd.Series(
    {
        "setpoint batches sent": s["setpoint_batches"],
        "largest excess over any limit (kW)": s["max_limit_excess_kw"],
        "energy requested (kWh)": s["energy_requested_kwh"],
        "energy delivered (kWh)": s["energy_delivered_kwh"],
        "fast loop p99 (ms)": s["fast_loop_ms_p99"],
    }
).to_frame("value")

# %% [markdown]
# ## Sites against their limits
#
# The busiest four sites: the largest power measured in each 15-minute step against the
# tightest cap in force (the connection limit, or less when a feeder limit is shared out).

# %%
busiest = np.argsort(result.site_power_max_kw.max(axis=0))[-4:][::-1]
fig, axes = plt.subplots(2, 2, figsize=(11, 5), sharex=True)
for ax, j in zip(axes.flat, busiest, strict=True):
    ax.step(result.step_times, result.site_power_max_kw[:, j], where="post", label="max power")
    ax.step(
        result.step_times,
        np.where(np.isfinite(result.site_cap_kw[:, j]), result.site_cap_kw[:, j], np.nan),
        where="post",
        label="cap",
        linestyle="--",
    )
    ax.set_title(result.site_ids[j], fontsize="small")
    ax.set_ylabel("kW")
axes[0, 0].legend(fontsize="small")
fig.autofmt_xdate()
plt.show()
print(f"largest excess of any site in any step: {result.site_excess_kw.max():.3f} kW")

# %% [markdown]
# ## Setpoints per charge point
#
# The mean setpoint of every EVSE in every 15-minute step (kW; negative = V2G export).

# %%
fig, ax = plt.subplots(figsize=(11, 5))
lim = max(1.0, float(np.abs(result.setpoint_mean_kw).max()))
im = ax.imshow(
    result.setpoint_mean_kw.T,
    aspect="auto",
    cmap="RdBu_r",
    vmin=-lim,
    vmax=lim,
    interpolation="nearest",
)
ax.set_yticks(range(len(result.evse_ids)), result.evse_ids, fontsize=6)
ticks = range(0, len(result.step_times), 16)
ax.set_xticks(ticks, [result.step_times[i].strftime("%d %H:%M") for i in ticks])
ax.set_xlabel("step start (UTC)")
fig.colorbar(im, ax=ax, label="setpoint (kW)")
plt.show()

# %% [markdown]
# ## Did the cars get their energy?

# %%
fig, ax = plt.subplots(figsize=(5, 5))
ax.scatter(result.session_requested_kwh, result.session_delivered_kwh)
top = float(result.session_requested_kwh.max()) * 1.05
ax.plot([0, top], [0, top], color="grey", linewidth=0.8, label="delivered = requested")
ax.set_xlabel("requested (kWh)")
ax.set_ylabel("delivered (kWh)")
ax.legend()
plt.show()
