"""The public surface of the S2 package (pinned: a change to ``__all__`` is deliberate)."""

from __future__ import annotations

import importlib

import adapters.csms.s2 as s2

MODULES = {
    "adapters.csms.s2.convert": {
        "ELECTRIC",
        "MS_PER_S",
        "W_PER_KW",
        "EnvelopeSegment",
        "S2Limits",
        "energy_from_wire",
        "instruction_to_wire",
        "limits_from_wire",
        "limits_to_wire",
        "measured_power_kw",
    },
    "adapters.csms.s2.session": {"InstructionRecord", "Reaction", "RmSession", "S2Resource"},
    "adapters.csms.s2.cem": {"S2Cem", "S2Settings", "batch_segments", "plan_segments"},
    "adapters.csms.s2.edge": {"S2EdgeSettings", "S2Target", "build"},
    "adapters.csms.s2.simrm": {"SimPebcControl", "SimRm"},
}


def test_public_surface() -> None:
    assert set(s2.__all__) == {
        "EnvelopeSegment",
        "InstructionRecord",
        "Reaction",
        "RmSession",
        "S2Cem",
        "S2Limits",
        "S2Resource",
        "S2Settings",
        "batch_segments",
        "plan_segments",
    }
    for name in s2.__all__:
        assert getattr(s2, name) is not None
    for module, names in MODULES.items():
        mod = importlib.import_module(module)
        assert set(mod.__all__) == names, module
        assert all(hasattr(mod, n) for n in names), module
