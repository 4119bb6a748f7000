"""Setpoint batches and plans as envelope segments (no socket)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from adapters.csms.s2 import EnvelopeSegment, batch_segments, plan_segments
from aggregator.messages import SetpointBatch
from aggregator.pebc import PowerEnvelope

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _batch(power_kw: float) -> SetpointBatch:
    return SetpointBatch(
        csms_id="c",
        seq=1,
        issued_at=T0,
        valid_until=T0 + timedelta(seconds=30),
        evse_ids=["e"],
        power_kw=[power_kw],
        failsafe_kw=[4.2],
    )


def test_a_batch_is_its_lease_then_its_failsafe() -> None:
    now = T0.timestamp() + 10.0
    assert batch_segments(_batch(7.0), 0, now, 7200.0) == [
        EnvelopeSegment(20.0, 0.0, 7.0),
        EnvelopeSegment(7200.0, 0.0, 4.2),
    ]
    # V2G: the lower bound follows a negative setpoint
    assert batch_segments(_batch(-5.0), 0, now, 7200.0)[0] == EnvelopeSegment(20.0, -5.0, -5.0)
    # lease over: the failsafe alone
    assert batch_segments(_batch(7.0), 0, T0.timestamp() + 31.0, 7200.0) == [
        EnvelopeSegment(7200.0, 0.0, 4.2)
    ]


def test_a_plan_is_one_segment_per_step_at_most_288() -> None:
    env = PowerEnvelope.of(T0, 300.0, np.zeros(300), np.arange(300, dtype=float))
    segs = plan_segments(env)
    assert len(segs) == 288
    assert segs[5] == EnvelopeSegment(300.0, 0.0, 5.0)
