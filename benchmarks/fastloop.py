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

**Rules** (issue 11), timed interleaved call by call on the same frame and deviations so
that machine load hits them alike:

* ``continuous`` — the old rule (every EVSE continuously controllable from 0);
* ``semi`` — the semi-continuous rule: each session has a minimum (80 % three-phase
  cars at 4.14 kW, 20 % single-phase at 1.38 kW, 6 A at 230 V), values in ``(0, min)``
  are rounded down, paused cars rounded up in priority order within every cap, with
  minimum on/off times (60 s; one call per simulated second);
* ``semi_followable_base`` — the same, on a base that is already 0 or at least each
  minimum (what a plan rounded by ``aggregator.planning.rounding`` hands over): only the
  activation moves cars across their minimum;
* ``semi_phases`` — ``semi`` plus per-phase site caps (each phase at 40 % of the site's
  kW cap; single-phase cars on a known phase, 1 in 4 on an unknown one).

Each semi result is also checked: no charging value strictly between 0 and its minimum,
and ``p ≤ hi`` unless ``p`` is exactly the minimum. ``p99_ratio`` = p99 of a rule / p99
of ``continuous`` in the same run.

Usage (from the repo root)::

    python benchmarks/fastloop.py --evses 10000 --json
"""

from __future__ import annotations

import argparse
import dataclasses
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


RULES = ("continuous", "semi", "semi_followable_base", "semi_phases")


def build_frame(
    n: int, rng: np.random.Generator, rule: str = "continuous"
) -> tuple[Dispatcher, DispatchFrame, float]:
    """A prepared dispatcher for ``n`` EVSE slots and the fleet reserve ``R`` (kW).

    The frame's numbers come from ``rng`` in the same order whatever the ``rule``; the
    rule's extras (minimums, phases) are drawn from a generator of their own."""
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

    extra: dict[str, np.ndarray] = {}
    if rule != "continuous":
        r2 = np.random.default_rng(12345)
        three = r2.random(n) < 0.8
        extra["min_kw"] = np.minimum(np.where(three, 4.14, 1.38), hi)  # ≤ the session's max
        phase = r2.integers(0, 3, n)
        w = np.zeros((n, 3))
        w[np.arange(n), phase] = 1.0
        w[r2.random(n) < 0.25] = 1.0  # phase unknown: counted on every phase
        w[three] = 1.0 / 3.0
        extra["phase_w"] = w
        if rule == "semi_phases":
            extra["site_phase_cap_kw"] = np.repeat((0.4 * site_cap)[:, None], 3, axis=1)
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
        **extra,  # type: ignore[arg-type]
    )
    if rule == "semi_followable_base":  # the base a rounded plan gives: 0 or ≥ the minimum
        base0 = disp.dispatch(0.0, frame)
        frame = dataclasses.replace(frame, base_kw=base0)
        disp.frame = frame
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
    m = frame.min_kw
    at_min = np.zeros(p.shape[0], dtype=bool) if m is None else np.abs(p - m) <= BOUND_TOL_KW
    in_bounds = bool(
        np.all(p >= frame.lo_kw - BOUND_TOL_KW)
        and np.all((p <= frame.hi_kw + BOUND_TOL_KW) | at_min)
    )
    if m is not None:
        in_bounds &= bool(np.all((p <= BOUND_TOL_KW) | (p >= m - BOUND_TOL_KW)))
    return excess <= EXCESS_TOL_KW and in_bounds, excess


def run(n: int, k: int, seed: int, rules: tuple[str, ...] = RULES) -> dict[str, object]:
    built = {}
    for rule in rules:
        rng = np.random.default_rng(seed)
        built[rule] = build_frame(n, rng, rule)
    rng = np.random.default_rng(seed)
    _, _, r_kw = build_frame(n, rng)  # the same draws as each rule's frame, then:
    warm = fcr_deviations(WARMUP, r_kw, rng)
    devs = fcr_deviations(k, r_kw, rng)
    clock = time.perf_counter_ns
    now_s = 1.7e9
    for d in warm.tolist():
        now_s += 1.0
        for disp, frame, _ in built.values():
            disp.dispatch(d, frame, now_s=now_s)
    times_ns = {rule: np.empty(k, dtype=np.int64) for rule in rules}
    violations = dict.fromkeys(rules, 0)
    worst = dict.fromkeys(rules, 0.0)
    capped = dict.fromkeys(rules, 0)
    for i, d in enumerate(devs.tolist()):
        now_s += 1.0
        for rule, (disp, frame, _) in built.items():
            t0 = clock()
            p = disp.dispatch(d, frame, now_s=now_s)
            times_ns[rule][i] = clock() - t0
            # verification, outside the timed region
            ok, excess = check(p, frame)
            violations[rule] += not ok
            worst[rule] = max(worst[rule], excess)
            raw = frame.base_kw + frame.share_up * max(d, 0.0) + frame.share_down * min(d, 0.0)
            capped[rule] += bool(np.any(np.abs(np.clip(raw, frame.lo_kw, frame.hi_kw) - p) > 1e-12))
    out: dict[str, object] = {"evses": n, "samples": k, "seed": seed}
    base_p99 = None
    for rule in rules:
        ms = times_ns[rule] / 1e6
        frame = built[rule][1]
        res = {
            "p50_ms": round(float(np.percentile(ms, 50)), 4),
            "p99_ms": round(float(np.percentile(ms, 99)), 4),
            "max_ms": round(float(ms.max()), 4),
            "mean_ms": round(float(ms.mean()), 4),
            "violations": violations[rule],
            "max_limit_excess_kw": worst[rule],
            "capped_share": round(capped[rule] / k, 3),
        }
        if rule == "continuous":
            base_p99 = res["p99_ms"]
            res.update(
                sites=int(frame.site_cap_kw.shape[0]),
                feeders=int(frame.feeder_cap_kw.shape[0]),
                reserve_kw=round(r_kw, 1),
                full_activations=int(np.sum(np.abs(np.abs(devs) - r_kw) < 1e-9)),
            )
        elif base_p99:
            res["p99_ratio"] = round(float(res["p99_ms"]) / float(base_p99), 2)  # type: ignore[arg-type]
        out[rule] = res
    out["violations"] = sum(violations.values())
    out["machine"] = machine_info()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evses", type=int, default=10_000, help="EVSE slots (default 10000)")
    ap.add_argument("--samples", type=int, default=2000, help="timed activations (≥ 200)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print exactly one JSON line")
    ap.add_argument(
        "--rule", choices=("all", *RULES[1:]), default="all", help="rules besides continuous"
    )
    args = ap.parse_args(argv)
    if args.samples < MIN_SAMPLES:
        ap.error(f"--samples must be at least {MIN_SAMPLES}")
    if args.evses < 1:
        ap.error("--evses must be at least 1")

    rules = RULES if args.rule == "all" else ("continuous", args.rule)
    res = run(args.evses, args.samples, args.seed, tuple(dict.fromkeys(rules)))
    if args.json:
        print(json.dumps(res))
    else:
        for rule in RULES:
            r = res.get(rule)
            if not isinstance(r, dict):
                continue
            print(
                f"fastloop {rule}: {res['evses']} EVSEs, {res['samples']} activations: "
                f"p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms, max {r['max_ms']:.3f} ms; "
                f"capped {r['capped_share']:.0%}; violations {r['violations']} "
                f"(max limit excess {r['max_limit_excess_kw']:.2e} kW)"
                + (f"; p99 x{r['p99_ratio']} of continuous" if "p99_ratio" in r else "")
            )
    return 1 if res["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
