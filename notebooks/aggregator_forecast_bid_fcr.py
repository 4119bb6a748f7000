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
# # An aggregator forecasts its pool's flexibility and bids FCR
#
# The pool is twelve copies of the demo feeder (480 sites, 3 600 charge points). From
# four weeks of past sessions the aggregator draws 60 possible fleets for Wednesday
# 14 January 2026, computes each one's up and down flexibility per quarter-hour within
# every site, feeder and DSO limit, and reads per 4 h FCR block the volume it reaches
# with 93 % probability. FCR takes whole megawatts, at least 1 MW, symmetric, by 08:00
# the day before. A back-test on three held-out days shows how often the firm volume
# would have been missed.
#
# This notebook only calls the package; every number comes from it.

# %%
from datetime import UTC, date, datetime, timedelta

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from adapters.cli.market import load_pool
from adapters.files.history import generate_history
from aggregator.limits import LimitBook
from markets.bids import FCR_RULES, awards_of, delivery_day, make_bids, reserve_schedule
from markets.bids.calendar import QUARTER_S
from markets.forecast import (
    Direction,
    SessionHistory,
    StepGrid,
    backtest,
    forecast_flexibility,
)

# %% [markdown]
# ## The pool and its history

# %%
pool = load_pool("demo", copies=12)
site_ids = [s.site_id for s in pool.topology.sites]
first_day = datetime(2025, 12, 14, tzinfo=UTC)
sessions = generate_history(site_ids, evses=3600, first_day=first_day, days=31, seed=11)
history = SessionHistory.from_specs(sessions, site_ids)
print(history.validate() or f"{len(sessions)} past sessions on {len(site_ids)} sites")

# %% [markdown]
# ## The forecast for the delivery day
#
# The step grid carries the caps in force each quarter-hour (site connection limits,
# feeder headroom, the DSO's announced limits).

# %%
day = delivery_day(date(2026, 1, 14))
caps = LimitBook(pool.topology, pool.limits).caps_for_steps(day.start, QUARTER_S, day.steps)
grid = StepGrid(day.start.timestamp(), QUARTER_S, day.steps, caps, pool.topology.site_feeder)
forecast = forecast_flexibility(history.before(day.start), grid, day.blocks, n_scenarios=60, seed=0)
pd.DataFrame(
    {
        "block start (UTC)": [b.strftime("%H:%M") for b in day.block_starts],
        "up P50 (MW)": forecast.p50_kw(Direction.UP) / 1000,
        "up P90 (MW)": forecast.p90_kw(Direction.UP) / 1000,
        "down P50 (MW)": forecast.p50_kw(Direction.DOWN) / 1000,
        "down P90 (MW)": forecast.p90_kw(Direction.DOWN) / 1000,
        "symmetric P90 (MW)": forecast.p90_kw(Direction.SYMMETRIC) / 1000,
    }
).round(3)

# %%
times = [day.quarter(i) for i in range(day.steps)]
sym_mw = forecast.per_step(Direction.SYMMETRIC) / 1000
fig, ax = plt.subplots(figsize=(10, 4))
ax.fill_between(
    times,
    np.quantile(sym_mw, 0.1, axis=0),
    np.quantile(sym_mw, 0.9, axis=0),
    alpha=0.3,
    label="symmetric flexibility, 10–90 % of scenarios (MW)",
)
ax.plot(times, np.median(sym_mw, axis=0), label="median (MW)")
ax.hlines(
    forecast.quantile_kw(Direction.SYMMETRIC, 0.93) / 1000,
    day.block_starts,
    day.block_ends,
    colors="tab:red",
    label="per block, reached with 93 % (MW)",
)
ax.axhline(FCR_RULES.min_bid_mw, color="grey", linestyle=":", label="FCR minimum bid (MW)")
ax.set_ylabel("MW")
ax.set_ylim(bottom=0)
ax.legend(fontsize="small", loc="lower left", ncol=2)
fig.autofmt_xdate()
plt.show()

# %% [markdown]
# ## The FCR bid
#
# The firm rung is the volume reached with 93 % probability, rounded down to whole MW;
# the increment rung offers up to the P50 at a higher price. A block below 1 MW gets no
# bid, and the document says why.

# %%
gate = day.gate(FCR_RULES.gate_local)
bid = make_bids(forecast, day, FCR_RULES, created_at=gate - timedelta(hours=1), pool_id=pool.name)
print(f"{bid.product} for {bid.day.day}, gate {gate:%Y-%m-%d %H:%M} UTC, late: {bid.late}")
print("\n".join(bid.reasons))
pd.DataFrame(
    [
        {
            "block start (UTC)": o.start.strftime("%H:%M"),
            "direction": o.direction,
            "volume (MW)": o.volume_mw,
            "rung": o.rung,
            "price (EUR/MW)": o.price_eur_per_mw,
        }
        for o in bid.offers
    ]
)

# %% [markdown]
# If the firm offers are awarded, the slow loop holds this reserve per block:

# %%
reserve = reserve_schedule(awards_of(bid))
pd.DataFrame(
    {
        "from (UTC)": [datetime.fromtimestamp(t, UTC).strftime("%H:%M") for t in reserve.start_s],
        "to (UTC)": [datetime.fromtimestamp(t, UTC).strftime("%H:%M") for t in reserve.end_s],
        "up (kW)": reserve.up_kw,
        "down (kW)": reserve.down_kw,
    }
)

# %% [markdown]
# ## Back-test: how often would the firm volume have been missed?
#
# Each held-out day is forecast from the sessions before it only and compared with the
# flexibility that day's real sessions had. At a 90 % chance constraint, at most about
# one block in ten should fall short.

# %%
held_out = [delivery_day(date(2026, 1, d)).start for d in (10, 11, 12)]
test = backtest(history, grid, day.blocks, held_out, reached_with=0.9, n_scenarios=40)
print(
    f"{test.shortfalls} shortfalls in {test.sample_size} day-blocks "
    f"({test.shortfall_share:.0%}); target ≤ 10 %"
)
fig, ax = plt.subplots(figsize=(6, 4))
ax.scatter(test.bid_kw.ravel() / 1000, test.realised_kw.ravel() / 1000)
top = float(max(test.bid_kw.max(), test.realised_kw.max())) / 1000 * 1.05
ax.plot([0, top], [0, top], color="grey", linewidth=0.8, label="realised = P90")
ax.set_xlabel("P90 forecast (MW)")
ax.set_ylabel("realised flexibility (MW)")
ax.legend()
plt.show()
