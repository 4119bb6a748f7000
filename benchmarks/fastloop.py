"""Fast-loop benchmark: latency of one activation → limit-safe setpoints for N EVSEs.

What is measured: the wall time of ``Dispatcher.dispatch(deviation_kw)`` — one FCR/aFRR
activation turned into setpoints for every EVSE slot (base + participation share ×
activation, clipped to each slot's envelope, then site → feeder → fleet caps enforced).
``Dispatcher.prepare`` runs once, outside the timing, as it does once per plan step.

How: a synthetic but realistic frame is built from a fixed seed —

* ~N/10 sites of ~10 EVSEs (3.7/7.4/11/22 kW; ~20 % idle, i.e. ``hi = lo = 0``),
  5 % V2G slots with a negative lower bound;
* base power from a plausible plan (a share of each slot's envelope that respects the
  site connection caps; a connection cap is below the site's summed EVSE power for ~40 %
  of the sites);
* per-site planned reserve (up and down) = 80 % of the headroom the plan leaves; the
  fleet reserve R is the symmetric product ``min(Σ up, Σ down)``;
* 5 feeders with caps and a fleet cap; then DSO limits that arrived after the plan
  tighten ~10 % of the site caps and one feeder cap below base + planned reserve, and the
  fleet cap sits just below base + R, so large up-activations hit caps.

Deviations follow an FCR-like distribution: grid frequency ~ 50 Hz + N(0, 40 mHz) mapped
through :func:`markets.activation.fcr_activation` (±10 mHz deadband, full at ±200 mHz),
plus 2 % forced full activations (half +R, half −R). After 50 warm-up calls, each of the
K timed calls is wrapped in ``time.perf_counter_ns``. Every result is verified outside the
timing: ``limit_excess_kw(p, frame) ≤ 1e-6`` and ``lo ≤ p ≤ hi`` (1e-9 kW float
tolerance); the script exits with status 1 if any check fails.

Usage (from the repo root)::

    python benchmarks/fastloop.py --evses 10000 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

try:
    import aggregator  # noqa: F401
except ImportError:  # not installed: run from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from _machine import machine_info

from aggregator.dispatch import Dispatcher, DispatchFrame, limit_excess_kw
from markets.activation import fcr_activation

WARMUP = 50
MIN_SAMPLES = 200
EXCESS_TOL_KW = 1e-6
BOUND_TOL_KW = 1e-9


def build_frame(n: int, rng: np.random.Generator) -> tuple[Dispatcher, DispatchFrame, float]:
    """A prepared dispatcher for ``n`` EVSE slots and the fleet reserve ``R`` (kW)."""
    n_sites = max(1, round(n / 10))
    n_feeders = min(5, n_sites)
    slot_site = np.sort(rng.integers(0, n_sites, n)).astype(np.intp)
    site_feeder = rng.integers(0, n_feeders, n_sites).astype(np.intp)

    # envelopes: EVSE rating capped by the car's on-board charger; some EVSEs idle
    evse = rng.choice([3.7, 7.4, 11.0, 22.0], n, p=[0.10, 0.20, 0.45, 0.25])
    car = rng.choice([3.7, 7.4, 11.0, 22.0], n, p=[0.15, 0.25, 0.45, 0.15])
    plugged = rng.random(n) < 0.8
    hi = np.where(plugged, np.minimum(evse, car), 0.0)
    v2g = plugged & (rng.random(n) < 0.05 / 0.8)
    lo = np.where(v2g, -hi, 0.0)

    # plan base: a share of the envelope (V2G slots may be discharging)
    base = np.where(v2g, rng.uniform(-0.5, 0.8, n), rng.uniform(0.1, 0.9, n)) * hi

    site_hi = np.bincount(slot_site, weights=hi, minlength=n_sites)
    site_lo = np.bincount(slot_site, weights=lo, minlength=n_sites)
    site_base = np.bincount(slot_site, weights=base, minlength=n_sites)
    # connection caps: below the summed EVSE power for ~40 % of sites, generous otherwise
    tight_conn = rng.random(n_sites) < 0.4
    site_cap = np.where(
        tight_conn,
        site_base + rng.uniform(0.3, 0.8, n_sites) * np.maximum(site_hi - site_base, 0.0),
        np.maximum(1.25 * site_hi, 11.0),
    )
    # a base that already sits above its cap would not come out of the planner
    scale = np.minimum(1.0, site_cap / np.maximum(site_base, 1e-9))
    base *= np.where(base > 0, scale[slot_site], 1.0)
    site_base = np.bincount(slot_site, weights=base, minlength=n_sites)
    site_export = site_cap.copy()  # symmetric connection

    # planned reserve per site: 80 % of the headroom the plan leaves
    reserve_up = 0.8 * np.maximum(np.minimum(site_hi, site_cap) - site_base, 0.0)
    reserve_down = 0.8 * np.maximum(site_base - np.maximum(site_lo, -site_export), 0.0)

    # feeders: rated to carry base + the planned up-reserve of their sites, plus 10 %
    feeder_base = np.bincount(site_feeder, weights=site_base, minlength=n_feeders)
    feeder_up = np.bincount(site_feeder, weights=reserve_up, minlength=n_feeders)
    feeder_cap = 1.1 * (feeder_base + feeder_up)
    r_kw = float(min(reserve_up.sum(), reserve_down.sum()))

    # DSO limits that arrived after the plan: they bind on up-activations
    dso_sites = rng.random(n_sites) < 0.1
    site_cap = np.where(
        dso_sites, site_base + rng.uniform(0.2, 0.8, n_sites) * reserve_up, site_cap
    )
    f_dso = int(rng.integers(0, n_feeders))
    feeder_cap[f_dso] = feeder_base[f_dso] + 0.7 * feeder_up[f_dso]
    fleet_cap = float(base.sum() + 0.97 * r_kw)

    disp = Dispatcher()
    frame = disp.prepare(
        base_kw=base,
        lo_kw=lo,
        hi_kw=hi,
        slot_site=slot_site,
        site_feeder=site_feeder,
        site_cap_kw=site_cap,
        site_export_kw=site_export,
        feeder_cap_kw=feeder_cap,
        fleet_cap_kw=fleet_cap,
        site_reserve_up_kw=reserve_up,
        site_reserve_down_kw=reserve_down,
    )
    return disp, frame, r_kw


def fcr_deviations(k: int, r_kw: float, rng: np.random.Generator) -> np.ndarray:
    """``k`` fleet deviations (kW): FCR response to a noisy frequency + forced ±R events."""
    hz = 50.0 + rng.normal(0.0, 0.040, k)
    full = rng.choice(k, size=max(2, k // 50), replace=False)
    hz[full[0::2]] = 50.25  # over-frequency: full +R (consume more)
    hz[full[1::2]] = 49.75  # under-frequency: full −R
    return np.array([fcr_activation(float(f)) for f in hz]) * r_kw


def check(p: np.ndarray, frame: DispatchFrame) -> tuple[bool, float]:
    excess = limit_excess_kw(p, frame)
    in_bounds = bool(
        np.all(p >= frame.lo_kw - BOUND_TOL_KW) and np.all(p <= frame.hi_kw + BOUND_TOL_KW)
    )
    return excess <= EXCESS_TOL_KW and in_bounds, excess


def run(n: int, k: int, seed: int) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    disp, frame, r_kw = build_frame(n, rng)
    warm = fcr_deviations(WARMUP, r_kw, rng)
    devs = fcr_deviations(k, r_kw, rng)

    for d in warm:
        disp.dispatch(float(d))

    times_ns = np.empty(k, dtype=np.int64)
    violations = 0
    worst_excess = 0.0
    capped = 0
    clock = time.perf_counter_ns
    for i, d in enumerate(devs.tolist()):
        t0 = clock()
        p = disp.dispatch(d)
        times_ns[i] = clock() - t0
        # verification, outside the timed region
        ok, excess = check(p, frame)
        violations += not ok
        worst_excess = max(worst_excess, excess)
        raw = frame.base_kw + frame.share_up * max(d, 0.0) + frame.share_down * min(d, 0.0)
        capped += bool(np.any(np.abs(np.clip(raw, frame.lo_kw, frame.hi_kw) - p) > 1e-12))

    ms = times_ns / 1e6
    return {
        "evses": n,
        "samples": k,
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
        "max_ms": round(float(ms.max()), 4),
        "mean_ms": round(float(ms.mean()), 4),
        "violations": violations,
        "max_limit_excess_kw": worst_excess,
        "sites": int(frame.site_cap_kw.shape[0]),
        "feeders": int(frame.feeder_cap_kw.shape[0]),
        "reserve_kw": round(r_kw, 1),
        "full_activations": int(np.sum(np.abs(np.abs(devs) - r_kw) < 1e-9)),
        "capped_share": round(capped / k, 3),
        "seed": seed,
        "machine": machine_info(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evses", type=int, default=10_000, help="EVSE slots (default 10000)")
    ap.add_argument("--samples", type=int, default=2000, help="timed activations (≥ 200)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print exactly one JSON line")
    args = ap.parse_args(argv)
    if args.samples < MIN_SAMPLES:
        ap.error(f"--samples must be at least {MIN_SAMPLES}")
    if args.evses < 1:
        ap.error("--evses must be at least 1")

    res = run(args.evses, args.samples, args.seed)
    if args.json:
        print(json.dumps(res))
    else:
        print(
            f"fastloop: {res['evses']} EVSEs, {res['samples']} activations: "
            f"p50 {res['p50_ms']:.3f} ms, p99 {res['p99_ms']:.3f} ms, "
            f"max {res['max_ms']:.3f} ms, mean {res['mean_ms']:.3f} ms; "
            f"capped {res['capped_share']:.0%} of calls; violations {res['violations']} "
            f"(max limit excess {res['max_limit_excess_kw']:.2e} kW)"
        )
    return 1 if res["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
