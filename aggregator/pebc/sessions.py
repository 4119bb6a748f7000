"""PEBC for a whole fleet: many sessions' envelopes on one grid, and the plan check.

:class:`SessionEnvelopes` holds ``n`` sessions' :class:`~aggregator.pebc.PowerEnvelope`
and :class:`~aggregator.pebc.EnergyConstraint` as ``(sessions, steps)`` arrays; the fleet
builds it (:meth:`aggregator.fleet.FleetState.session_envelopes`) and every plan is held
to it by :func:`check_plan_against_pebc` before it is used. The checks are vectorised and
report at most one :class:`~aggregator.errors.Issue` per session and kind (code and ids
``(evse_id, "step t")`` of the first bad step), never one per step of 10 000 × 96.

Invariant the fleet keeps and :meth:`SessionEnvelopes.validate` checks: ``lower ≤ upper``
per step and ``energy_min ≤ energy_max`` per session, all finite.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from aggregator.errors import Issue
from aggregator.pebc.types import _TOL, EnergyConstraint, PowerEnvelope

__all__ = ["PlanLike", "RequestLike", "SessionEnvelopes", "check_plan_against_pebc"]


@dataclass(frozen=True)
class SessionEnvelopes:
    """PEBC envelopes and energy constraints of ``n`` sessions on one time grid.

    ``lower_kw``/``upper_kw`` are ``(n, steps)``: the average power session ``i`` may take
    while plugged in during step ``t`` (0 when it is away). Its cumulative energy counted
    from ``start`` stays within ``[energy_min_kwh[i], energy_max_kwh[i]]`` at every step
    (by its departure, ``departure_s[i]`` in POSIX seconds). ``evse_ids[i]`` names row ``i``.
    """

    start: datetime
    step_s: float
    evse_ids: tuple[str, ...]
    lower_kw: NDArray[np.float64]
    upper_kw: NDArray[np.float64]
    energy_min_kwh: NDArray[np.float64]
    energy_max_kwh: NDArray[np.float64]
    departure_s: NDArray[np.float64]

    @property
    def n_sessions(self) -> int:
        return len(self.evse_ids)

    @property
    def steps(self) -> int:
        return int(self.upper_kw.shape[1]) if self.upper_kw.ndim == 2 else 0

    def envelope(self, i: int) -> PowerEnvelope:
        """Row ``i`` as a :class:`PowerEnvelope`."""
        return PowerEnvelope(self.start, self.step_s, self.lower_kw[i], self.upper_kw[i])

    def energy_constraint(self, i: int) -> EnergyConstraint:
        """Row ``i``'s energy bounds, due at its departure (or the grid's end, if earlier)."""
        end = self.start + timedelta(seconds=self.step_s * self.steps)
        due = datetime.fromtimestamp(float(self.departure_s[i]), self.start.tzinfo)
        return EnergyConstraint(
            self.start,
            max(min(due, end), self.start + timedelta(seconds=self.step_s)),
            float(self.energy_min_kwh[i]),
            float(self.energy_max_kwh[i]),
        )

    def validate(self) -> list[Issue]:
        """Every row whose bounds are crossed or not finite (one issue per row and kind)."""
        n = self.n_sessions
        shapes = {
            "lower_kw": (self.lower_kw.shape, 2),
            "upper_kw": (self.upper_kw.shape, 2),
            "energy_min_kwh": (self.energy_min_kwh.shape, 1),
            "energy_max_kwh": (self.energy_max_kwh.shape, 1),
            "departure_s": (self.departure_s.shape, 1),
        }
        wrong = [f for f, (shape, nd) in shapes.items() if len(shape) != nd or shape[0] != n]
        if wrong or self.lower_kw.shape != self.upper_kw.shape:
            return [
                Issue(field=f, code="shape", message=f"expected {n} rows")
                for f in wrong or ["upper_kw"]
            ]
        issues: list[Issue] = []
        finite = np.isfinite(self.lower_kw).all(axis=1) & np.isfinite(self.upper_kw).all(axis=1)
        crossed = (self.lower_kw > self.upper_kw + _TOL).any(axis=1)
        energy_finite = np.isfinite(self.energy_min_kwh) & np.isfinite(self.energy_max_kwh)
        energy_crossed = self.energy_min_kwh > self.energy_max_kwh + _TOL
        for field, code, rows in (
            ("envelope", "not_finite", ~finite),
            ("envelope", "lower_above_upper", finite & crossed),
            ("energy", "not_finite", ~energy_finite),
            ("energy", "min_above_max", energy_finite & energy_crossed),
        ):
            issues.extend(
                Issue(
                    field=field, code=code, ids=(self.evse_ids[i],), message=code.replace("_", " ")
                )
                for i in np.flatnonzero(rows).tolist()
            )
        return issues


class PlanLike(Protocol):
    """What :func:`check_plan_against_pebc` reads of a plan (``planning.request.Plan``)."""

    @property
    def start(self) -> datetime: ...
    @property
    def step_s(self) -> float: ...
    @property
    def power_kw(self) -> NDArray[np.float64]: ...


class RequestLike(Protocol):
    """What it reads of the request the plan answers (``planning.request.PlanRequest``)."""

    def plugged_fraction(self) -> NDArray[np.float64]: ...


def check_plan_against_pebc(
    plan: PlanLike,
    request: RequestLike,
    envelopes: SessionEnvelopes,
    *,
    tol_kw: float = 1e-3,
    tol_kwh: float = 1e-3,
) -> list[Issue]:
    """Every session whose planned power leaves its PEBC envelope or energy constraint.

    ``plan.power_kw[i, t]`` is session ``i``'s average power while plugged in step ``t``
    and ``request.plugged_fraction()[i, t]`` the plugged part of that step, so the energy
    of a step is ``power × fraction × step_h``. Checked per session, vectorised: the
    power times the plugged part lies within the envelope times the plugged part (±
    ``tol_kw``), there is no power in a step the session is away, and the running energy
    total stays within ``[energy_min_kwh, energy_max_kwh]`` (± ``tol_kwh``). Issues carry
    the code (``power_outside_envelope``, ``energy_above_max``, ``energy_below_min``,
    ``shape``, ``grid_mismatch``) and ids ``(evse_id, "step t")`` of the first bad step.
    """
    n, steps = envelopes.n_sessions, envelopes.steps
    p = np.asarray(plan.power_kw, dtype=np.float64)
    if p.size == 0 and n == 0:
        return []
    frac = np.asarray(request.plugged_fraction(), dtype=np.float64)
    if p.shape != (n, steps) or frac.shape != (n, steps):
        return [
            Issue(
                field="power_kw",
                code="shape",
                message=f"plan {p.shape}, request {frac.shape}, envelopes {(n, steps)}",
            )
        ]
    if plan.start != envelopes.start or plan.step_s != envelopes.step_s:
        return [
            Issue(field="start", code="grid_mismatch", message="plan and envelopes grids differ")
        ]
    issues: list[Issue] = []
    with np.errstate(invalid="ignore", over="ignore"):
        x = p * frac
        outside = ~np.isfinite(x) | (x < envelopes.lower_kw * frac - tol_kw)
        outside |= x > envelopes.upper_kw * frac + tol_kw
        outside |= (frac <= 0.0) & ~(np.abs(p) <= tol_kw)
    for i in np.flatnonzero(outside.any(axis=1)).tolist():
        t = int(np.argmax(outside[i]))
        issues.append(
            Issue(
                field="power_kw",
                code="power_outside_envelope",
                ids=(envelopes.evse_ids[i], f"step {t}"),
                message=(
                    f"{int(outside[i].sum())} step(s) outside the envelope; step {t}: "
                    f"{p[i, t]:.3f} kW not in [{envelopes.lower_kw[i, t]:.3f}, "
                    f"{envelopes.upper_kw[i, t]:.3f}] kW"
                ),
            )
        )
    total = np.cumsum(np.nan_to_num(x), axis=1) * (envelopes.step_s / 3600.0)
    for code, bad, bound in (
        ("energy_above_max", total > envelopes.energy_max_kwh[:, None] + tol_kwh, "max"),
        ("energy_below_min", total < envelopes.energy_min_kwh[:, None] - tol_kwh, "min"),
    ):
        limit = envelopes.energy_max_kwh if bound == "max" else envelopes.energy_min_kwh
        for i in np.flatnonzero(bad.any(axis=1)).tolist():
            t = int(np.argmax(bad[i]))
            issues.append(
                Issue(
                    field="energy_kwh",
                    code=code,
                    ids=(envelopes.evse_ids[i], f"step {t}"),
                    message=(
                        f"running total {total[i, t]:.3f} kWh at step {t} beyond the "
                        f"{bound} {limit[i]:.3f} kWh"
                    ),
                )
            )
    return issues
