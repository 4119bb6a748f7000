"""OCPP 2.0.1/2.1 CSMS endpoint of gridflex edge (the ``ocpp`` package on websockets).

Stations connect here (security profiles 1–3); their messages become gridflex telemetry
(:mod:`.station`), setpoints become charging profiles (:mod:`.profiles`, sent by
:mod:`.endpoint`), and every vendor difference lives in one table (:mod:`.quirks`).
Wire types stay in this package; what leaves it are :mod:`aggregator.messages` models.
"""

from adapters.csms.ocpp.endpoint import OcppEndpoint, Outcome
from adapters.csms.ocpp.quirks import Quirks, quirks_for
from adapters.csms.ocpp.security import Security
from adapters.csms.ocpp.station import StationLink, StationPlace, evse_key, parse_evse_key

__all__ = [
    "OcppEndpoint",
    "Outcome",
    "Quirks",
    "Security",
    "StationLink",
    "StationPlace",
    "evse_key",
    "parse_evse_key",
    "quirks_for",
]
