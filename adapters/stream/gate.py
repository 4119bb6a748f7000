"""The gate in front of the setpoint sink: nothing goes out for feeders being taken over.

:class:`GatedSink` wraps the real sink and has three states:

* **closed** (after an assignment, until the grid signals are read up to the assignment's
  end offsets): every batch is dropped and counted — the service's caps may still miss a
  limit, and the previous owner's leases are still in force;
* **failsafe-only** (catch-up slower than the leases in force): a batch passes with each
  setpoint lowered to its failsafe value, and each failsafe value lowered to the previous
  owner's failsafe value for that EVSE (:attr:`GatedSink.prior_failsafe`), so it asks for
  nothing the CSMS would not fall back to anyway;
* **open**: batches pass unchanged.

Invariant: a batch that passes never has a setpoint above its failsafe value unless the
gate is open.
"""

from __future__ import annotations

from aggregator.interfaces import SetpointSink
from aggregator.messages import SetpointBatch

__all__ = ["GatedSink"]


class GatedSink:
    """Drops, clamps to failsafe, or passes setpoint batches (see the module docstring)."""

    def __init__(self, sink: SetpointSink) -> None:
        self.sink = sink
        self.is_open = False
        self.failsafe_only = False
        self.prior_failsafe: dict[str, float] = {}
        self.dropped = 0
        self.sent = 0  # batches passed since the runner last flushed

    def close(self) -> None:
        self.is_open = False
        self.failsafe_only = False

    def open(self) -> None:
        self.is_open = True
        self.failsafe_only = False
        self.prior_failsafe = {}

    def to_failsafe_only(self) -> None:
        self.failsafe_only = True

    def publish(self, batch: SetpointBatch) -> bool:
        """``False`` when the batch was dropped (closed gate): the service then keeps the
        leases it meant to replace in force, as they are."""
        if self.is_open:
            self.sink.publish(batch)
        elif self.failsafe_only:
            prior = self.prior_failsafe
            fs = [
                min(f, prior.get(e, f))
                for e, f in zip(batch.evse_ids, batch.failsafe_kw, strict=True)
            ]
            power = [min(p, f) for p, f in zip(batch.power_kw, fs, strict=True)]
            self.sink.publish(batch.model_copy(update={"power_kw": power, "failsafe_kw": fs}))
        else:
            self.dropped += 1
            return False
        self.sent += 1
        return True
