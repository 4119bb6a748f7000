"""The public surface of the edge and OCPP packages (pinned)."""

from __future__ import annotations

import adapters.csms.edge as edge
import adapters.csms.ocpp as ocpp


def test_public_surface() -> None:
    assert set(edge.__all__) == {
        "TARGETS",
        "ActiveSession",
        "Csac",
        "EdgeContext",
        "EdgeReport",
        "EdgeRunner",
        "EdgeSettings",
        "EdgeTarget",
        "EmbeddedUpstream",
        "KafkaUpstream",
        "SiteSpec",
        "TelemetryBuffer",
        "Upstream",
        "balance",
        "build_target",
        "load_edge_settings",
    }
    assert set(ocpp.__all__) == {
        "OcppEndpoint",
        "Outcome",
        "Quirks",
        "Security",
        "StationLink",
        "StationPlace",
        "evse_key",
        "parse_evse_key",
        "quirks_for",
    }
    assert edge.TARGETS == {
        "ocpp": "adapters.csms.edge.ocpp_target:build",
        "s2": "adapters.csms.s2.edge:build",
    }
