"""Wire models of the DSO REST API (pydantic): what is posted and what is answered.

These are the API's own types; :mod:`adapters.api.app` translates them into domain values
(:class:`~aggregator.limits.DsoLimit`) for the DSO intake and back.

Invariants of the input models (checked before anything is applied):

* unknown fields, NaN and infinities are rejected;
* ``event_id`` matches :data:`~adapters.dso.intake.EVENT_ID_PATTERN` (no ``/``,
  whitespace, control or non-ASCII characters), so every accepted id can be read, cancelled
  and sent back in a ``Location`` header;
* times are ISO 8601 *strings* with ``Z`` or an offset (numbers such as Unix epochs and
  naive times are rejected), within :data:`~adapters.dso.intake.EARLIEST` –
  :data:`~adapters.dso.intake.LATEST`, and normalised to UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from adapters.dso.intake import EARLIEST, EVENT_ID_PATTERN, LATEST, MAX_LIMIT_KW

__all__ = [
    "ApiTime",
    "ErrorDetail",
    "EventId",
    "FeederOut",
    "FlexibilityOut",
    "HostingCapacity",
    "LimitIn",
    "LimitOut",
    "Problem",
    "Problems",
    "SiteOut",
    "TelemetryAccepted",
]


def _iso_string(value: Any) -> Any:
    if isinstance(value, datetime):  # built in Python (tests, internal callers)
        return value
    if not isinstance(value, str):
        raise PydanticCustomError(
            "time_not_a_string",
            "must be an ISO 8601 string with 'Z' or an offset (numbers are not times)",
        )
    return value


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise PydanticCustomError(
            "naive_time", "must be timezone-aware (ISO 8601 with 'Z' or an offset), not naive"
        )
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST <= utc <= LATEST:
        raise PydanticCustomError(
            "time_out_of_range",
            "must lie within {earliest} and {latest} (UTC)",
            {"earliest": EARLIEST.isoformat(), "latest": LATEST.isoformat()},
        )
    return utc


ApiTime = Annotated[
    datetime,
    BeforeValidator(_iso_string),
    AfterValidator(_aware_utc),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""An aware ISO 8601 time string within the accepted range, normalised to UTC."""

EventId = Annotated[str, StringConstraints(pattern=EVENT_ID_PATTERN)]
TargetId = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class LimitIn(BaseModel):
    """A DSO limit as posted: cap on net import (kW) of a target over ``[start, end)``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    event_id: EventId | None = Field(
        None, description=f"The DSO's event id ({EVENT_ID_PATTERN}); generated if absent."
    )
    target_type: Literal["site", "feeder", "transformer", "fleet"] = Field(
        description="'transformer' is stored as 'feeder' (one feeder per transformer area)."
    )
    target_id: TargetId | None = Field(
        None, description="Site or feeder id; required unless target_type is 'fleet' (then absent)."
    )
    start: ApiTime = Field(description="ISO 8601 string with 'Z' or a UTC offset.")
    end: ApiTime = Field(description="After start and after now; same format.")
    limit_kw: float = Field(
        strict=True,
        ge=0.0,
        le=MAX_LIMIT_KW,
        description="Cap in kW: on import (0 = off), or with direction 'export' on a site's "
        "export (0 = no export).",
    )
    priority: int = Field(0, strict=True, ge=0, le=100)
    direction: Literal["import", "export"] = Field(
        "import", description="'export' caps a site's net export (V2G); sites only."
    )


class LimitOut(BaseModel):
    """A limit in force, from any source (``rest:<dso>``, ``openadr`` …)."""

    event_id: str
    target_type: Literal["site", "feeder", "fleet"]
    target_id: str
    start: datetime
    end: datetime
    limit_kw: float
    priority: int
    direction: Literal["import", "export"] = "import"
    source: str = Field(description="Who sent it: 'rest:<dso>', 'openadr', …")
    dso: str | None = Field(description="The DSO that owns it on this API (REST limits).")
    created_at: datetime


class SiteOut(BaseModel):
    id: str
    feeder: str
    connection_limit_kw: float
    csms: str


class HostingCapacity(BaseModel):
    """Extra kW each site alone could draw per step without a grid violation."""

    start: datetime
    step_s: float
    site_kw: dict[str, list[float]]


class FeederOut(BaseModel):
    id: str
    name: str
    limit_kw: float
    sites: list[str]
    hosting_capacity: HostingCapacity


class FlexibilityOut(BaseModel):
    """Per plan step, how many kW the fleet in ``feeders`` can add (up) and shed (down)."""

    feeders: list[str]
    start: datetime
    step_s: float
    up_kw: list[float]
    down_kw: list[float]


class TelemetryAccepted(BaseModel):
    """How many telemetry messages were handed to the service."""

    accepted: int


class Problem(BaseModel):
    field: str
    message: str
    code: str = "invalid"


class Problems(BaseModel):
    """Every problem found in a request (422)."""

    detail: list[Problem]


class ErrorDetail(BaseModel):
    detail: str
