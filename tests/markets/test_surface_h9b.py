"""The public surface of the activation, record, settlement and prequalification modules."""

from __future__ import annotations

import markets.activation
import markets.prequalify
import markets.record
import markets.settlement


def test_public_surface_is_pinned() -> None:
    assert sorted(markets.activation.__all__) == [
        "AfrrClip",
        "AfrrRamp",
        "AfrrRule",
        "DroopCurve",
        "DroopTable",
        "FcrDroop",
        "NOMINAL_HZ",
        "ReserveActivation",
        "droop_tables",
        "fcr_activation",
        "tables_json",
    ]
    assert sorted(markets.record.__all__) == [
        "COLUMNS",
        "Gap",
        "PoolRecord",
        "SecondRecorder",
        "record_from_csv",
        "record_to_csv",
        "requested_kw",
    ]
    assert sorted(markets.settlement.__all__) == [
        "AFRR_BAND",
        "AcceptanceBand",
        "FCR_BAND",
        "FcrAvailability",
        "Finding",
        "QuarterHour",
        "Settlement",
        "acceptance_band",
        "fcr_availability",
        "settle",
    ]
    assert sorted(markets.prequalify.__all__) == [
        "PrequalResult",
        "Segment",
        "SegmentResult",
        "TestProfile",
        "afrr_profile",
        "fcr_profile",
        "prequalify",
    ]
    for mod in (markets.activation, markets.record, markets.settlement, markets.prequalify):
        for name in mod.__all__:
            assert hasattr(mod, name), (mod.__name__, name)
