"""OpenADR 3.1 wire objects the VEN reads: programs, events, notifications (pydantic).

Only the fields the VEN uses are modelled. Inbound objects ignore fields they do not model
(``extra="ignore"``, not ``forbid``): a VTN may add vendor fields and newer minor versions of
the specification add optional ones, and refusing a whole event for an unknown field would
drop a DSO limit. Everything the VEN *relies on* is typed and validated here; the meaning
(units, ISO 8601 durations, targets) is given in :mod:`adapters.openadr3.mapping`.

Targets: OpenADR 3.1 sends plain strings; 3.0 sent ``valuesMap`` objects
(``{"type": "RESOURCE_NAME", "values": [...]}``). Both are read into a tuple of strings.
Timestamps are RFC 3339 with an offset (naive ones are refused).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "Event",
    "Interval",
    "IntervalPeriod",
    "Notification",
    "PayloadDescriptor",
    "Program",
    "ValuesMap",
    "Ven",
]

Text = Annotated[str, Field(min_length=1, max_length=128)]


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


def _targets(value: Any) -> tuple[str, ...]:
    """3.1 strings, or 3.0 ``valuesMap`` objects flattened to their values."""
    if value is None:
        return ()
    out: list[str] = []
    for item in value:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict) and isinstance(item.get("values"), list):
            out.extend(str(v) for v in item["values"])
        else:
            raise ValueError(f"a target is a string (or a valuesMap), got {item!r}")
    return tuple(out)


class IntervalPeriod(_In):
    start: AwareDatetime
    duration: str | None = None
    randomize_start: str | None = Field(default=None, alias="randomizeStart")


class ValuesMap(_In):
    type: Text
    values: tuple[Any, ...]


class PayloadDescriptor(_In):
    payload_type: Text = Field(alias="payloadType")
    units: str | None = None
    currency: str | None = None


class Interval(_In):
    id: int
    interval_period: IntervalPeriod | None = Field(default=None, alias="intervalPeriod")
    payloads: tuple[ValuesMap, ...]


class Event(_In):
    id: Text
    program_id: Text = Field(alias="programID")
    event_name: str | None = Field(default=None, alias="eventName")
    priority: int | None = None
    targets: tuple[str, ...] = ()
    payload_descriptors: tuple[PayloadDescriptor, ...] = Field(
        default=(), alias="payloadDescriptors"
    )
    interval_period: IntervalPeriod | None = Field(default=None, alias="intervalPeriod")
    intervals: tuple[Interval, ...] = ()
    modification_date_time: AwareDatetime | None = Field(default=None, alias="modificationDateTime")

    @field_validator("targets", mode="before")
    @classmethod
    def _t(cls, value: Any) -> tuple[str, ...]:
        return _targets(value)

    @field_validator("payload_descriptors", "intervals", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return () if value is None else value

    @property
    def version(self) -> datetime | None:
        """What changes when the VTN modifies the event."""
        return self.modification_date_time


class Program(_In):
    id: Text
    program_name: Text = Field(alias="programName")
    targets: tuple[str, ...] = ()

    @field_validator("targets", mode="before")
    @classmethod
    def _t(cls, value: Any) -> tuple[str, ...]:
        return _targets(value)


class Ven(_In):
    id: Text
    ven_name: Text = Field(alias="venName")
    client_id: str | None = Field(default=None, alias="clientID")


class Notification(_In):
    """What a subscription delivers (webhook body, websocket message)."""

    operation: Literal["CREATE", "UPDATE", "DELETE", "POST", "PUT"]
    object_type: Text = Field(alias="objectType")
    object: dict[str, Any]
