"""The pool's 1 s record as the service sees it: when a fast-loop run becomes a
:class:`~aggregator.service.events.PoolSampled` event.

Invariants: at most two samples per whole second — the first run of each second, and the
first run with a signal when that second's first run had none; a signal is carried by
exactly one sample (the next one after it arrived). Allocation-free apart from the event.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from aggregator.fleet import FleetState
from aggregator.messages import FrequencySignal
from aggregator.service.events import PoolSampled

__all__ = ["PoolSampler"]


class PoolSampler:
    """Decides which fast-loop runs are sampled and builds their :class:`PoolSampled`."""

    def __init__(self) -> None:
        self._signal: FrequencySignal | None = None  # newest signal not yet sampled
        self._second = -1  # the whole second of the last sample
        self._with_signal = False  # … and whether it carried a signal

    def asked(self, signal: FrequencySignal) -> None:
        """A frequency sample or aFRR request arrived (what was asked)."""
        self._signal = signal

    def sample(
        self,
        now: datetime,
        *,
        reserve_kw: float,
        baseline_kw: NDArray[np.float64],
        deviation_kw: float,
        setpoints_kw: NDArray[np.float64],
        fleet: FleetState,
    ) -> PoolSampled | None:
        """The sample of this run, or ``None`` when the run is not sampled."""
        second = int(now.timestamp())
        if second == self._second and (self._signal is None or self._with_signal):
            return None
        self._second, self._with_signal = second, self._signal is not None
        n = fleet.n_slots
        event = PoolSampled(
            at=now,
            signal=self._signal,
            reserve_kw=reserve_kw,
            baseline_kw=float(baseline_kw.sum()),
            deviation_kw=deviation_kw,
            setpoint_kw=float(setpoints_kw.sum()),
            measured_kw=float(np.where(fleet.active[:n], fleet.power_kw[:n], 0.0).sum()),
        )
        self._signal = None
        return event
