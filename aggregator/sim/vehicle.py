"""Simulated cars that behave like real ones: late, tapering, some not following, noisy meters.

:class:`VehicleModel` (the settings) and :class:`Vehicles` (the state of every simulated
session, arrays indexed like the simulation's sessions) replace "the car takes its
setpoint" in :mod:`aggregator.sim.simulation`:

* **response delay** (``response_delay_s``, default 2 s; IEC 61851 allows a car up to 5 s
  to follow a pilot change): the car follows the setpoint issued ``response_delay_s``
  earlier. Over a tick of ``tick_s`` the power is piecewise constant (the older setpoint
  for the first ``delay mod tick`` seconds, then the newer one), which is what the energy
  integrates; the power *measured* at the end of a tick is the response to the setpoint
  issued ``delay`` before it.
* **minimum current**: a setpoint strictly between 0 and the car's minimum pauses it (the
  pilot says "less than 6 A"): the car takes 0 and the setpoint counts as not followable.
* **taper**: above ``taper_soc`` the car's acceptance falls linearly to
  ``taper_floor`` × its maximum at a full battery. Each car's battery is sized so its
  requested energy ends at ``target_soc`` (seeded capacity 40–80 kWh, at least the request
  over the SoC window). By default ``target_soc = taper_soc = 0.8`` (the usual charge
  limit drivers set), so the taper only bites when a scenario asks for more: the energy
  bound of the summary knows nothing of tapers (the demo with ``target_soc=0.9`` delivers
  98.4 % of that bound instead of ≥ 99 %).
* **non-following share** (``non_following_share``, seeded): such a car takes less than
  it is allowed, at most a fixed 30–80 % of its maximum (an on-board limit it does not
  report). ``over_taking_share`` (default 0) adds cars that take their maximum whatever
  they are told — for testing the closed loop's report, never in the demo.
* **measurement noise**: each meter reads the true power × (1 + e), ``e`` uniform in
  ``±noise_rel`` (a meter class: bounded, so an excess is *proven* only beyond it).

Everything random comes from one ``numpy`` generator seeded with ``seed``: a run is
reproducible. Power in kW (positive = import), energy in kWh, time in s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from aggregator.errors import Issue
from aggregator.limits import Caps

__all__ = ["VehicleModel", "Vehicles", "default_min_charge_kw"]


def default_min_charge_kw(
    voltage_v: NDArray[np.float64], max_power_kw: NDArray[np.float64]
) -> NDArray[np.float64]:
    """The minimum of the default AC car (3 phases × 6 A at the site's voltage), kW."""
    return np.minimum(3 * 6.0 * voltage_v / 1000.0, max_power_kw)


@dataclass(frozen=True, slots=True)
class VehicleModel:
    """How simulated cars respond (see the module docstring); ``ideal()`` = the old car."""

    response_delay_s: float = 2.0
    taper_soc: float = 0.8
    taper_floor: float = 0.1
    target_soc: float = 0.8
    non_following_share: float = 0.0
    over_taking_share: float = 0.0
    noise_rel: float = 0.005
    seed: int = 0

    @classmethod
    def ideal(cls) -> VehicleModel:
        """Cars that follow at once, never taper, all follow, exact meters."""
        return cls(response_delay_s=0.0, taper_soc=1.0, noise_rel=0.0)

    def validate(self) -> list[Issue]:
        issues: list[Issue] = []

        def bad(field: str, message: str) -> None:
            issues.append(Issue(field=f"vehicles.{field}", code="vehicle_model", message=message))

        if not 0.0 <= self.response_delay_s <= 60.0:
            bad("response_delay_s", "must be in [0, 60] s")
        if not 0.0 < self.taper_soc <= 1.0 or not 0.0 < self.target_soc <= 1.0:
            bad("taper_soc", "taper_soc and target_soc must be in (0, 1]")
        if not 0.0 < self.taper_floor <= 1.0:
            bad("taper_floor", "must be in (0, 1]")
        for name in ("non_following_share", "over_taking_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                bad(name, "must be in [0, 1]")
        if self.non_following_share + self.over_taking_share > 1.0:
            bad("over_taking_share", "shares add up to more than 1")
        if not 0.0 <= self.noise_rel < 0.5:
            bad("noise_rel", "must be in [0, 0.5)")
        return issues


class Vehicles:
    """The cars of a simulation's sessions (arrays of length ``n``)."""

    def __init__(
        self,
        model: VehicleModel,
        *,
        want_kwh: NDArray[np.float64],
        max_power_kw: NDArray[np.float64],
        min_charge_kw: NDArray[np.float64],
        tick_s: float,
        caps_excess: Callable[[NDArray[np.float64], Caps], float] | None = None,
    ) -> None:
        self.model = model
        n = want_kwh.shape[0]
        rng = np.random.default_rng(model.seed)
        self.tick_s = float(tick_s)
        self.pmax = max_power_kw.astype(np.float64)
        self.pmin = np.minimum(min_charge_kw.astype(np.float64), self.pmax)
        window = max(model.target_soc - 0.1, 0.05)
        self.capacity_kwh = np.maximum(rng.uniform(40.0, 80.0, n), want_kwh / window)
        self.arrival_soc = model.target_soc - want_kwh / self.capacity_kwh
        # exactly round(share × n) cars of each kind, drawn at random
        order = rng.permutation(n)
        k_nf = round(model.non_following_share * n)
        k_ot = round(model.over_taking_share * n)
        self.non_following = np.zeros(n, dtype=np.bool_)
        self.non_following[order[:k_nf]] = True
        self.over_taking = np.zeros(n, dtype=np.bool_)
        self.over_taking[order[k_nf : k_nf + k_ot]] = True
        self.own_cap_kw = np.where(self.non_following, rng.uniform(0.3, 0.8, n), 1.0) * self.pmax
        self._rng = rng
        # the setpoint history a delayed car responds to: ticks back = floor(delay / tick)
        self._back = int(model.response_delay_s // self.tick_s)
        self._rest_s = model.response_delay_s - self._back * self.tick_s
        self._history = [np.zeros(n) for _ in range(self._back + 2)]
        self.followable = 0
        self.charging_setpoints = 0
        self._caps: list[Caps | None] = [None] * (self._back + 1)
        self._excess_of = caps_excess
        self.measured_excess_kw = 0.0
        self.continuous_kwh = 0.0
        self.accept_kw = np.zeros(n)

    def step(
        self,
        setpoint_kw: NDArray[np.float64],
        *,
        plugged: NDArray[np.bool_],
        lo_kw: NDArray[np.float64],
        hi_kw: NDArray[np.float64],
        got_kwh: NDArray[np.float64],
        caps: Caps | None = None,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """One tick: ``(energy_kwh, power_kw, metered_kw)`` per session.

        ``energy_kwh`` is what the car took over the tick (delayed response integrated),
        ``power_kw`` the true power at the end of the tick and ``metered_kw`` its meter
        reading. ``[lo_kw, hi_kw]`` is what the session can take this tick (its discharge
        budget, the energy it still wants). With ``caps`` (the caps in force now), the
        meters are held to the caps in force when the setpoints they respond to were
        issued (the limit excess *after* the response delay, proven beyond meter noise).
        """
        sp = np.where(plugged, setpoint_kw, 0.0)
        charging = plugged & (sp > 1e-9)
        self.charging_setpoints += int(charging.sum())
        self.followable += int((charging & (sp >= self.pmin - 1e-6)).sum())
        self._history.insert(0, sp)
        self._history.pop()
        newer, older = self._history[self._back], self._history[self._back + 1]
        h = self.tick_s / 3600.0
        soc = self.arrival_soc + got_kwh / self.capacity_kwh
        p_new = self._response(newer, soc, plugged, lo_kw, hi_kw)
        p_old = self._response(older, soc, plugged, lo_kw, hi_kw)
        a = self._rest_s / self.tick_s
        energy = (a * p_old + (1.0 - a) * p_new) * h
        noise = self.model.noise_rel
        e = self._rng.uniform(-noise, noise, p_new.shape[0]) if noise > 0 else 0.0
        metered = p_new * (1.0 + e)
        self._caps.insert(0, caps)
        then = self._caps[self._back]  # in force when the setpoint now followed was issued
        self._caps.pop()
        if then is not None and self._excess_of is not None:
            # a meter reads at most (1 + noise) × the true power: only what lies beyond
            # that is a proven excess
            exc = self._excess_of(metered / (1.0 + noise), then)
            self.measured_excess_kw = max(self.measured_excess_kw, exc)
        return energy, p_new, metered

    def _response(
        self,
        sp: NDArray[np.float64],
        soc: NDArray[np.float64],
        plugged: NDArray[np.bool_],
        lo_kw: NDArray[np.float64],
        hi_kw: NDArray[np.float64],
    ) -> NDArray[np.float64]:
        """The power a car takes when told ``sp`` (kW), given its state now."""
        m = self.model
        taper = np.where(
            soc > m.taper_soc,
            np.clip(
                1.0 - (1.0 - m.taper_floor) * (soc - m.taper_soc) / max(1.0 - m.taper_soc, 1e-9),
                m.taper_floor,
                1.0,
            ),
            1.0,
        )
        accept = np.minimum(np.minimum(self.pmax * taper, self.own_cap_kw), hi_kw)
        self.accept_kw = accept
        # a pilot below the minimum current pauses the car
        charge = np.where(sp >= self.pmin - 1e-6, np.minimum(sp, accept), 0.0)
        charge = np.where(self.over_taking, np.minimum(self.pmax * taper, hi_kw), charge)
        p = np.where(sp < 0, np.maximum(sp, lo_kw), charge)
        return np.where(plugged, p, 0.0)

    def add_continuous(self, continuous_kw: NDArray[np.float64], rows: NDArray[np.bool_]) -> None:
        """Count what the continuous allocation (before the semi-continuous rule) offered
        the sessions ``rows`` this tick, within what each car could take at once (its
        taper, its own limit, the energy it still wants): the energy a continuous rule
        would have delivered to these cars this tick."""
        take = np.clip(continuous_kw, 0.0, self.accept_kw[rows])
        self.continuous_kwh += float(take.sum()) * self.tick_s / 3600.0

    def figures(self, delivered_kwh: float) -> dict[str, float]:
        """The summary keys of the vehicle model (see the README's summary table)."""
        m = self.model
        cont = self.continuous_kwh
        return {
            "followable_setpoint_share": round(self.followable_share, 6),
            "energy_continuous_kwh": round(cont, 3),
            "delivered_share_of_continuous": round(delivered_kwh / cont, 4) if cont > 0 else 1.0,
            "limit_excess_measured_kw": round(self.measured_excess_kw, 6),
            "response_delay_s": m.response_delay_s,
            "non_following_share": m.non_following_share,
            "meter_noise_rel": m.noise_rel,
        }

    @property
    def followable_share(self) -> float:
        """Charging setpoints that were 0 or at least the car's minimum (goal: 1.0)."""
        return self.followable / self.charging_setpoints if self.charging_setpoints else 1.0
