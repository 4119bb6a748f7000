"""aFRR: follow the TSO's setpoint (every 4 s), ramp-limited, within the reserve held.

The TSO's load-frequency controller sends each provider a setpoint every control cycle
(4 s in Germany, regelleistung.net "automatic Frequency Restoration Reserve"); the provider
must react within 30 s (SO GL Art. 158(1)(d)) and deliver the full request within the full
activation time, 5 min (Art. 158(1)(f); :data:`markets.products.AFRR`). Any response
between an instant step and that slowest one lies inside the acceptance band
(:mod:`markets.settlement`).

:class:`AfrrRamp` is the pool's rule: it moves its output toward the setpoint (clipped to
±reserve) by at most ``reserve_kw / ramp_s`` per second: 0 → ±reserve takes ``ramp_s``,
a full reversal −reserve → +reserve twice that, which must fit the full activation time
(so ``ramp_s ≤ full_activation_s / 2``; the default 120 s leaves a minute for the CSMS and
the cars to follow). It keeps state (the last output and its time), so one instance serves one
pool. The first request moves the output by one control cycle's worth; later requests by
the time since the previous one (a request older than the last is applied with no time).

Invariants (property-tested): ``|output| ≤ reserve_kw``; between two requests the output
moves by at most ``reserve_kw · Δt / ramp_s``; a setpoint held for ``2 · ramp_s`` seconds
(``ramp_s`` from 0) is reached; NaN asks for nothing (the output ramps back toward 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from markets.products import AFRR, Product

__all__ = ["AfrrRamp"]


@dataclass
class AfrrRamp:
    """Ramp-limited aFRR output for one pool (mutable: it remembers where it stands)."""

    product: Product = AFRR
    ramp_s: float = field(default=120.0)
    output_kw: float = 0.0
    last_at: datetime | None = None

    def __post_init__(self) -> None:
        if not 0 < 2 * self.ramp_s <= self.product.full_activation_s:
            raise ValueError(
                f"ramp_s must be in (0, {self.product.full_activation_s / 2}]: a full "
                "reversal takes 2 × ramp_s and must fit the full activation time"
            )

    def deviation_kw(
        self, setpoint_kw: float, reserve_kw: float, at: datetime | None = None
    ) -> float:
        """The pool's deviation (kW, + = more import) after the request ``setpoint_kw``."""
        reserve = max(reserve_kw, 0.0)
        target = 0.0 if math.isnan(setpoint_kw) else min(max(setpoint_kw, -reserve), reserve)
        if self.last_at is None or at is None:
            dt = self.product.setpoint_interval_s or 1.0
        else:
            dt = max((at - self.last_at).total_seconds(), 0.0)
        if at is not None and (self.last_at is None or at > self.last_at):
            self.last_at = at
        room = reserve * dt / self.ramp_s
        out = self.output_kw + min(max(target - self.output_kw, -room), room)
        self.output_kw = min(max(out, -reserve), reserve)
        return self.output_kw
