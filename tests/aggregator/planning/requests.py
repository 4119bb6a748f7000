"""Random planning requests with a grid element and a DSO limit, for property tests of
plans that hold a reserve (the awarded headroom, the energy-reservoir rows)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import scipy.sparse as sp

from aggregator.limits import Caps
from aggregator.planning.request import PlanRequest, SiteLinearConstraints

T0 = datetime(2026, 1, 14, tzinfo=UTC)
STEPS, STEP_S, SITES = 16, 900.0, 3


def random_request(
    seed: int,
    n: int,
    *,
    need_kwh_share: tuple[float, float] = (0.0, 0.6),
    partial_steps: bool = False,
) -> PlanRequest:
    """``n`` sessions on 3 sites under one feeder over 16 quarter-hours: a DSO limit on the
    feeder in the middle, a cable shared by sites 0 and 1 (a grid row), no reserve yet.
    Each session needs a share in ``need_kwh_share`` of what its maximum power could
    deliver while plugged; with ``partial_steps`` about a third arrive or leave mid-step."""
    rng = np.random.default_rng(seed)
    first = rng.integers(0, STEPS - 2, n)
    last = np.minimum(first + rng.integers(2, STEPS, n), STEPS)
    pmax = rng.choice([3.7, 11.0, 22.0], n)
    first_frac = last_frac = np.ones(n)
    if partial_steps:
        first_frac = np.where(rng.random(n) < 0.3, rng.uniform(0.2, 1.0, n), 1.0)
        last_frac = np.where(rng.random(n) < 0.3, rng.uniform(0.2, 1.0, n), 1.0)
    need = rng.uniform(*need_kwh_share, n) * pmax * (last - first) * STEP_S / 3600
    site_kw = np.repeat(rng.uniform(20.0, 60.0, SITES)[:, None], STEPS, axis=1)
    feeder = np.full((1, STEPS), rng.uniform(40.0, 120.0))
    feeder[0, 6:10] *= rng.uniform(0.4, 1.0)  # a DSO limit in the middle
    rows = np.repeat(np.arange(STEPS), 2)  # a cable shared by sites 0 and 1
    cols = np.concatenate([[t, STEPS + t] for t in range(STEPS)])
    grid = SiteLinearConstraints(
        sp.csr_matrix((np.ones(2 * STEPS), (rows, cols)), shape=(STEPS, SITES * STEPS)),
        np.full(STEPS, rng.uniform(20.0, 80.0)),
    )
    return PlanRequest(
        start=T0,
        step_s=STEP_S,
        steps=STEPS,
        session_site=rng.integers(0, SITES, n).astype(np.intp),
        first_step=first.astype(np.intp),
        last_step=last.astype(np.intp),
        first_frac=first_frac,
        last_frac=last_frac,
        max_power_kw=pmax,
        min_power_kw=np.zeros(n),
        energy_needed_kwh=need,
        discharge_budget_kwh=np.zeros(n),
        site_feeder=np.zeros(SITES, np.intp),
        caps=Caps(site_kw, feeder, np.full(STEPS, np.inf), site_kw.copy()),
        reserve_kw=np.zeros(STEPS),
        site_constraints=grid,
    )
