"""The baseline (Arbeitspunkt): the planned fleet power a reserve is delivered around.

A :class:`Baseline` is a versioned, immutable series of fleet power per step (kW, positive
= import) for one pool. It is stored with every bid (the bid document carries its key) so
that settlement later measures delivered reserve against the baseline the bid was made on.
A new plan does not overwrite it: :meth:`Baseline.revise` returns the next version, which
names the one it supersedes. ``key`` = ``<pool>:v<version>:<digest>`` where the digest
covers the start, step and every value, so two baselines with one key are equal.

Invariants: ``version ≥ 1``; ``created_at``/``start`` UTC-aware; ``step_s > 0``; values
finite. :meth:`Baseline.validate` returns every problem.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from aggregator.errors import Issue
from aggregator.pebc import is_utc
from aggregator.planning.request import Plan, PlanRequest

__all__ = ["Baseline"]


@dataclass(frozen=True)
class Baseline:
    """Planned fleet power of ``pool_id`` per step of ``step_s`` from ``start`` (kW)."""

    pool_id: str
    version: int
    created_at: datetime
    start: datetime
    step_s: float
    power_kw: NDArray[np.float64]
    source: str
    supersedes: str | None = None

    @property
    def digest(self) -> str:
        h = hashlib.blake2b(digest_size=8)
        h.update(f"{self.start.isoformat()}|{self.step_s}|".encode())
        h.update(np.ascontiguousarray(self.power_kw, dtype=np.float64).tobytes())
        return h.hexdigest()

    @property
    def key(self) -> str:
        return f"{self.pool_id}:v{self.version}:{self.digest}"

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.step_s * self.power_kw.shape[0])

    def at(self, t: datetime) -> float | None:
        """The baseline power at ``t``, or ``None`` outside it."""
        i = int((t - self.start).total_seconds() // self.step_s)
        return float(self.power_kw[i]) if 0 <= i < self.power_kw.shape[0] else None

    def revise(self, power_kw: NDArray[np.float64], at: datetime, source: str) -> Baseline:
        """The next version (same grid), superseding this one."""
        return Baseline(
            self.pool_id,
            self.version + 1,
            at,
            self.start,
            self.step_s,
            np.asarray(power_kw, dtype=np.float64).copy(),
            source,
            supersedes=self.key,
        )

    def validate(self) -> list[Issue]:
        issues: list[Issue] = []
        ids = (self.pool_id,)
        if self.version < 1:
            issues.append(Issue(field="version", code="bad_version", ids=ids, message="≥ 1"))
        for name, ts in (("created_at", self.created_at), ("start", self.start)):
            if not is_utc(ts):
                issues.append(Issue(field=name, code="not_utc", ids=ids, message="UTC only"))
        if not self.step_s > 0:
            issues.append(Issue(field="step_s", code="bad_step", ids=ids, message="> 0"))
        if self.power_kw.ndim != 1 or not np.all(np.isfinite(self.power_kw)):
            issues.append(
                Issue(field="power_kw", code="not_finite", ids=ids, message="1-D, finite")
            )
        return issues

    @classmethod
    def from_plan(
        cls, plan: Plan, req: PlanRequest, *, pool_id: str, at: datetime, version: int = 1
    ) -> Baseline:
        """The plan's fleet power per step (each session's power × its plugged part)."""
        power = (plan.power_kw * req.plugged_fraction()).sum(axis=0)
        return cls(pool_id, version, at, plan.start, plan.step_s, power, "plan")
