"""CVaR sizing: the convex alternative to the quantile (chance-constraint) bid volume.

The quantile rule offers, per block, the volume ``v`` the fleet reaches with probability
``reached_with`` — the ``α = 1 − reached_with`` lower quantile of the block's flexibility
over the scenarios (:meth:`markets.forecast.FlexForecast.quantile_kw`). A quantile
constraint is not convex in general (over several blocks or with more decisions it is a
mixed-integer problem); its standard convex stand-in (Rockafellar–Uryasev, "Optimization
of conditional value-at-risk", 2000; Nemirovski–Shapiro's CVaR approximation of chance
constraints) bounds the *conditional value at risk* of the shortfall ``v − F`` instead:

    max v   s.t.   η + 1/(α·N) · Σ_s max(v − F_s − η, 0) ≤ 0

over the ``N`` scenarios ``F_s`` (one small LP per block and direction, written once
for all of them in cvxpy). Its optimum is the mean of the worst ``α·N`` scenarios (the
boundary scenario with its fractional weight): the expected flexibility *in the bad
days*, not just at their edge, so a CVaR bid is never above the quantile bid when ``α·N``
is a whole number (the tail is then exactly the scenarios at or below the order
statistic the quantile takes; with the CLI's 200 scenarios this holds for 0.9, 0.93,
0.95, 0.97) — less volume, a shortfall that is rarer *and* smaller on average.

Invariants: the volume is ≥ 0 (a negative tail mean offers nothing) and at most the
largest scenario (or 0); the result has one value per column of the samples.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["cvar_volume_kw"]


def cvar_volume_kw(samples_kw: NDArray[np.float64], alpha: float) -> NDArray[np.float64]:
    """Per column of ``samples_kw`` (scenarios × blocks): the largest volume whose
    shortfall has a CVaR at level ``alpha`` ≤ 0 (the LP of the module doc), kW, ≥ 0."""
    import cvxpy as cp  # a solver only where a CVaR bid is asked for

    f = np.asarray(samples_kw, dtype=np.float64)
    if f.ndim != 2 or not f.shape[0] or not f.shape[1]:
        raise ValueError("samples_kw must be scenarios × blocks, both > 0")
    if not 0.0 < alpha <= 1.0:
        raise ValueError("alpha must be in (0, 1]")
    n, b = f.shape
    scale = max(float(np.abs(f).max()), 1.0)  # solve in units of the largest sample
    fs = f / scale
    v = cp.Variable(b)
    eta = cp.Variable(b)
    z = cp.Variable((n, b), nonneg=True)
    cons = [
        z >= cp.reshape(v - eta, (1, b), order="C") - fs,
        eta + cp.sum(z, axis=0) / (alpha * n) <= 0,
    ]
    prob = cp.Problem(cp.Maximize(cp.sum(v)), cons)
    prob.solve(solver=cp.HIGHS, output_flag=False)  # no banner on stdout
    if prob.status != cp.OPTIMAL or v.value is None:
        raise RuntimeError(f"CVaR LP: {prob.status}")
    top = np.maximum(f.max(axis=0), 0.0)
    out = np.minimum(np.maximum(np.asarray(v.value, dtype=np.float64) * scale, 0.0), top)
    return np.asarray(out, dtype=np.float64)
