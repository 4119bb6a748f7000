"""The planner against an older commit's planner, in the same run (issue 8's yardstick).

``benchmarks/planner.py`` at ``--rev`` (default ``b2b3743``, ``main`` when issue 8 was
filed: cvxpy, DPP re-solve) and at the working tree are run alternately, ``--rounds``
times each, as separate processes on the same synthetic request (both scripts build it
from the same seeded generator). Each process reports its re-plan samples (same sessions,
new prices and feeder cap); the medians over all samples of each side and their ratio
(now / then) are printed. The old commit is checked out with ``git worktree`` into a
temporary directory and removed afterwards.

Usage (from the repo root)::

    python benchmarks/planner_vs_rev.py --evses 10000 --steps 96 --rounds 3 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _machine import machine_info

REPO = Path(__file__).resolve().parent.parent


def run_side(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One ``planner.py`` process at ``root``; its JSON result for the one fleet size."""
    cmd = [
        sys.executable,
        str(root / "benchmarks" / "planner.py"),
        "--evses",
        str(args.evses),
        "--steps",
        str(args.steps),
        "--resolves",
        str(args.resolves),
        "--rebuilds",
        "3",
        "--json",
    ]
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(
        cmd, cwd=root, env=env, capture_output=True, text=True, check=True, timeout=3600
    )
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1]
    result: dict[str, Any] = json.loads(line)["results"][0]
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="b2b3743", help="the older commit (baseline)")
    ap.add_argument("--evses", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=96)
    ap.add_argument("--resolves", type=int, default=3, help="re-plans per process")
    ap.add_argument("--rounds", type=int, default=3, help="processes per side, alternating")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    samples: dict[str, list[float]] = {"then": [], "now": []}
    first: dict[str, list[float]] = {"then": [], "now": []}
    fallbacks = {"then": 0, "now": 0}
    with tempfile.TemporaryDirectory(prefix="gridflex-rev-") as tmp:
        old = Path(tmp) / "tree"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(old), args.rev],
            check=True,
            capture_output=True,
        )
        try:
            for _ in range(args.rounds):
                for side, root in (("then", old), ("now", REPO)):
                    r = run_side(root, args)
                    samples[side].extend(float(x) for x in r["resolve_s"])
                    first[side].append(float(r["first_solve_s"]))
                    fallbacks[side] += int(r["fallbacks"])
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)],
                capture_output=True,
            )
    med = {k: statistics.median(v) for k, v in samples.items()}
    out = {
        "rev": args.rev,
        "evses": args.evses,
        "steps": args.steps,
        "resolve_s": {k: [round(x, 3) for x in v] for k, v in samples.items()},
        "resolve_s_median": {k: round(v, 3) for k, v in med.items()},
        "first_solve_s_median": {k: round(statistics.median(v), 3) for k, v in first.items()},
        "fallbacks": fallbacks,
        "resolve_now_over_then": round(med["now"] / med["then"], 3),
        "machine": machine_info(),
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
