"""The closed loop on measured power: allowance a car leaves unused goes to others; a car
that takes more than it is allowed is reported and its site's headroom shrinks.

Setpoints are allowances. A car may take less (taper near full, a full battery, an
on-board limit it does not report, a car that ignores the pilot) or — a fault — more.
:class:`MeasuredLoop` compares each slot's latest *fresh* meter reading with the setpoint
in force when it was read (vectorised, no Python loop per EVSE):

* a slot whose reading stays below ``setpoint × (1 − tolerance_rel) − tolerance_kw`` for
  ``persist`` fresh readings in a row is an **under-taker**: the fast loop's upper bound
  for it becomes what it takes plus ``probe_kw`` (never below its minimum, so it stays
  followable), and :func:`aggregator.service.frame.build_frame` gives the allowance this
  frees at its site to the other cars there, within every cap;
* a slot whose reading stays above ``setpoint × (1 + tolerance_rel) + tolerance_kw`` for
  ``persist`` readings is an **over-taker**: it is reported (:attr:`MeasuredView.over_takers`)
  and, as it does not follow, its allowance becomes 0 and its site's cap is lowered by
  what it takes, so the site's *measured* power stays within the cap whatever it does.

A reading back within tolerance clears the slot. The loop only narrows what the fast
loop may hand out (lower bounds per slot, lower site caps): every cap still holds on
setpoints, and with over-takers on measured power too once they are detected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["MeasuredLoop", "MeasuredView"]


@dataclass(frozen=True)
class MeasuredView:
    """What the loop asks of the next frame (arrays per slot, per site)."""

    hi_cap_kw: NDArray[np.float64]  # per slot: upper bound (inf: none)
    site_penalty_kw: NDArray[np.float64]  # per site: cap reduction for over-takers
    under: NDArray[np.bool_]  # per slot: persistent under-taker
    over_takers: tuple[int, ...]  # slots of persistent over-takers

    @property
    def active(self) -> bool:
        return bool(self.under.any() or self.site_penalty_kw.any())


class MeasuredLoop:
    """Per-slot comparison of meter readings with setpoints (see the module docstring)."""

    def __init__(
        self,
        *,
        tolerance_kw: float = 0.5,
        tolerance_rel: float = 0.05,
        persist: int = 2,
        probe_kw: float = 0.5,
    ) -> None:
        if persist < 1 or tolerance_kw < 0 or tolerance_rel < 0 or probe_kw < 0:
            raise ValueError("need persist >= 1 and non-negative tolerances and probe")
        self.tolerance_kw = tolerance_kw
        self.tolerance_rel = tolerance_rel
        self.persist = persist
        self.probe_kw = probe_kw
        self._seen_s = np.zeros(0)
        self._under_n = np.zeros(0, dtype=np.int64)
        self._over_n = np.zeros(0, dtype=np.int64)
        self._setpoint = np.zeros(0)

    def _size(self, n: int) -> None:
        m = self._seen_s.shape[0]
        if n > m:
            self._seen_s = np.concatenate([self._seen_s, np.full(n - m, -np.inf)])
            self._under_n = np.concatenate([self._under_n, np.zeros(n - m, dtype=np.int64)])
            self._over_n = np.concatenate([self._over_n, np.zeros(n - m, dtype=np.int64)])
            self._setpoint = np.concatenate([self._setpoint, np.zeros(n - m)])

    def sent(self, setpoint_kw: NDArray[np.float64]) -> None:
        """Record the setpoints just sent (the allowance later readings are held to)."""
        self._size(setpoint_kw.shape[0])
        self._setpoint[: setpoint_kw.shape[0]] = setpoint_kw

    def observe(
        self,
        *,
        measured_kw: NDArray[np.float64],
        meter_s: NDArray[np.float64],
        active: NDArray[np.bool_],
        min_kw: NDArray[np.float64],
        slot_site: NDArray[np.intp],
        n_sites: int,
    ) -> MeasuredView:
        """Take the readings newer than the last seen (arrays per slot, ``n`` long)."""
        n = measured_kw.shape[0]
        self._size(n)
        sp = self._setpoint[:n]
        fresh = active & (meter_s > self._seen_s[:n])
        self._seen_s[:n] = np.where(fresh, meter_s, self._seen_s[:n])
        tol, rel = self.tolerance_kw, self.tolerance_rel
        under = fresh & (sp > tol) & (measured_kw < sp * (1.0 - rel) - tol)
        over = fresh & (measured_kw > np.maximum(sp, 0.0) * (1.0 + rel) + tol)
        under_n, over_n = self._under_n[:n], self._over_n[:n]
        under_n[:] = np.where(under, under_n + 1, np.where(fresh | ~active, 0, under_n))
        over_n[:] = np.where(over, over_n + 1, np.where(fresh | ~active, 0, over_n))
        is_under = (under_n >= self.persist) & active
        is_over = (over_n >= self.persist) & active
        cap = np.where(
            is_under, np.maximum(measured_kw + self.probe_kw, np.maximum(min_kw, 0.0)), np.inf
        )
        # an over-taker does not follow: its allowance is 0 and what it takes is taken off
        # its site's cap, so the others' setpoints leave room for it whatever it is told
        cap = np.where(is_over, 0.0, cap)
        taken = np.where(is_over, np.maximum(measured_kw, 0.0), 0.0)
        penalty = np.bincount(slot_site, weights=taken, minlength=n_sites).astype(np.float64)
        return MeasuredView(
            hi_cap_kw=cap,
            site_penalty_kw=penalty,
            under=is_under,
            over_takers=tuple(np.flatnonzero(is_over).tolist()),
        )
