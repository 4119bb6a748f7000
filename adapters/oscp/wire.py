"""OSCP 2.0 wire messages exchanged between the Flexibility Provider (gridflex) and a
Capacity Provider (the DSO side), as pydantic models (``extra="forbid"``).

Only what the Open Charge Alliance's OSCP 2.0 defines for the FP ↔ CP exchange is
modelled: registration (:class:`Register`), :class:`Handshake` /
:class:`HandshakeAcknowledgement`, :class:`Heartbeat`, capacity forecasts
(:class:`GroupCapacityForecast`: the body of ``UpdateGroupCapacityForecast`` and of
``AdjustGroupCapacityForecast``), :class:`UpdateGroupMeasurements` and
:class:`GroupCapacityComplianceError`. Field names are OSCP's (snake_case JSON).

Invariants:

* an unknown field is refused (``extra="forbid"``): a body we cannot read completely is a
  400 with every problem, never half applied;
* every timestamp is UTC-aware once parsed: OSCP sends RFC 3339 with an offset; a naive
  one (as pyoscp 0.1.0 sends in its heartbeat, ``"%Y-%m-%d %H:%M:%S"``) is read as UTC —
  the one leniency, stated here;
* numbers are finite; meaning (units, phases, group → target) is given in
  :mod:`adapters.oscp.mapping`, not here.

Serialise with :func:`dump` (JSON-ready dict, ``None`` fields left out, times as
``...Z``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
)

__all__ = [
    "OSCP_VERSION",
    "EnergyMeasurement",
    "ForecastType",
    "ForecastedBlock",
    "GroupCapacityComplianceError",
    "GroupCapacityForecast",
    "Handshake",
    "HandshakeAcknowledgement",
    "Heartbeat",
    "Phase",
    "Register",
    "RequiredBehaviour",
    "UpdateGroupMeasurements",
    "VersionUrl",
    "dump",
    "iso_z",
]

OSCP_VERSION: Final = "2.0"


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def iso_z(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` (what gridflex sends)."""
    return _utc(value).isoformat().replace("+00:00", "Z")


UtcTime = Annotated[
    datetime, AfterValidator(_utc), PlainSerializer(iso_z, return_type=str, when_used="json")
]
Text = Annotated[str, StringConstraints(min_length=1, max_length=512)]
Url = Annotated[str, StringConstraints(pattern=r"^https?://\S+$", max_length=2048)]
Number = Annotated[float, Field(allow_inf_nan=False)]


class Phase(StrEnum):
    UNKNOWN = "UNKNOWN"
    ONE = "ONE"
    TWO = "TWO"
    THREE = "THREE"
    ALL = "ALL"


class ForecastType(StrEnum):
    CONSUMPTION = "CONSUMPTION"
    GENERATION = "GENERATION"
    FALLBACK_CONSUMPTION = "FALLBACK_CONSUMPTION"
    FALLBACK_GENERATION = "FALLBACK_GENERATION"
    OPTIMUM = "OPTIMUM"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VersionUrl(_Wire):
    version: Annotated[str, StringConstraints(min_length=1, max_length=16)]
    base_url: Url


class Register(_Wire):
    """``POST /register``: the token the receiver is to use towards the sender, and the
    sender's versions with their base URLs."""

    token: Text
    version_url: Annotated[list[VersionUrl], Field(min_length=1)]


class RequiredBehaviour(_Wire):
    heartbeat_interval: Annotated[int, Field(ge=1)] | None = None
    """Seconds between the heartbeats the sender of this wants to receive (None: none)."""
    measurement_configuration: list[
        Annotated[str, StringConstraints(pattern=r"^(CONTINUOUS|INTERMITTENT)$")]
    ] = Field(default_factory=list)


class Handshake(_Wire):
    required_behaviour: RequiredBehaviour


class HandshakeAcknowledgement(_Wire):
    required_behaviour: RequiredBehaviour | None = None


class Heartbeat(_Wire):
    offline_mode_at: UtcTime
    """When the sender goes into offline mode unless another heartbeat arrives first."""


class ForecastedBlock(_Wire):
    capacity: Number
    phase: Phase
    unit: Annotated[str, StringConstraints(pattern=r"^(A|W|KW|WH|KWH)$")]
    start_time: UtcTime
    end_time: UtcTime


class GroupCapacityForecast(_Wire):
    """Body of ``UpdateGroupCapacityForecast`` (CP → FP) and ``AdjustGroupCapacityForecast``
    (FP → CP)."""

    group_id: Text
    type: ForecastType
    forecasted_blocks: list[ForecastedBlock]


class GroupCapacityComplianceError(_Wire):
    message: Text
    forecasted_blocks: list[ForecastedBlock] = Field(default_factory=list)


class EnergyMeasurement(_Wire):
    value: Number
    phase: Phase
    unit: Annotated[str, StringConstraints(pattern=r"^(WH|KWH)$")]
    direction: Annotated[str, StringConstraints(pattern=r"^(NET|IMPORT|EXPORT)$")]
    measure_time: UtcTime
    energy_type: Annotated[str, StringConstraints(pattern=r"^(FLEXIBLE|NONFLEXIBLE|TOTAL)$")] = (
        "TOTAL"
    )
    initial_measure_time: UtcTime | None = None


class UpdateGroupMeasurements(_Wire):
    group_id: Text
    measurements: list[EnergyMeasurement]


def dump(message: BaseModel) -> dict[str, Any]:
    """The JSON body of a message (``None`` fields left out)."""
    out: dict[str, Any] = message.model_dump(mode="json", exclude_none=True)
    return out
