"""Wire models: the JSON carried on gridflex's Kafka topics, and nothing else.

These pydantic v2 models are the single source of truth for every message gridflex reads
or writes on a bus; their JSON Schemas are exported from here (:func:`export_schemas`).

=========================  =============  ===============================================
topic                      key            models
=========================  =============  ===============================================
``gridflex.telemetry``     feeder id      :data:`Telemetry` (session started / meter
                                          value / session ended / EVSE heartbeat)
``gridflex.grid-signals``  feeder id      :data:`GridSignal` (DSO limit / cancellation)
``gridflex.frequency``     (none)         :data:`FrequencySignal` (frequency / aFRR)
``gridflex.setpoints``     CSMS id        :class:`SetpointBatch` (columnar)
=========================  =============  ===============================================

Invariants every model keeps:

* ``v`` is the schema version (``1``) and ``type`` the discriminator; unknown fields,
  NaN and infinities are rejected; instances are frozen.
* Datetimes are ISO 8601 strings with a date, a time and a UTC offset (``Z`` or
  ``±hh:mm``) and are normalised to UTC; numbers, numeric strings ("12345", which pydantic
  would read as Unix time) and naive times are rejected.
* Numbers are strict at the wire boundary: a power, an energy, a frequency is a JSON
  number (``true``/``false`` and strings are rejected, not read as 1.0), a sequence
  number or a priority a JSON integer.
* Power in kW (positive = import from the grid, negative = export/V2G), energy in kWh,
  both within physical bounds (:data:`MAX_POWER_KW`, :data:`MAX_ENERGY_KWH`).
* Ids are non-empty strings of at most 128 characters.

Decoders (:func:`decode_telemetry` …) never raise anything but
:class:`~aggregator.errors.InvalidInput`, which carries *every* problem as an
:class:`~aggregator.errors.Issue` whose ``field`` is the dotted location of the bad value,
whose ``code`` is pydantic's stable error type or ours (``float_type``, ``int_type``,
``datetime_type``, ``datetime_iso``, ``datetime_parsing``, ``datetime_range``,
``timezone_aware``, ``missing``, ``extra_forbidden``, ``json_invalid`` …) and whose
``ids`` are the record's ids where it has them (EVSE, session, CSMS, event id, in that
order).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from aggregator.errors import InvalidInput, Issue
from aggregator.limits import Direction, DsoLimit, TargetType

__all__ = [
    "JSON_SCHEMA_DIALECT",
    "MAX_ENERGY_KWH",
    "MAX_FLEET_POWER_KW",
    "MAX_POWER_KW",
    "SCHEMAS",
    "SCHEMA_VERSION",
    "AfrrRequest",
    "DsoLimitCancel",
    "DsoLimitMessage",
    "EvseHeartbeat",
    "FrequencySample",
    "FrequencySignal",
    "GridSignal",
    "MeterValue",
    "SessionEnded",
    "SessionStarted",
    "SetpointBatch",
    "Telemetry",
    "decode_frequency",
    "decode_grid_signal",
    "decode_setpoints",
    "decode_telemetry",
    "encode",
    "export_schemas",
]

SCHEMA_VERSION: Final = 1
JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
MAX_POWER_KW: Final = 5000.0
"""Bound on any per-EVSE or per-site power (kW), import or export."""
MAX_ENERGY_KWH: Final = 1000.0
"""Bound on the energy of one session (kWh), charged or discharged."""
MAX_FLEET_POWER_KW: Final = 1_000_000.0
"""Bound on a fleet-wide power request (kW): 1 GW."""

_T = TypeVar("_T")


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise PydanticCustomError(
            "timezone_aware",
            "must be timezone-aware (ISO 8601 with 'Z' or a UTC offset); naive datetimes "
            "are rejected",
        )
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError("datetime_range", "is out of range once in UTC") from None


_ISO_8601: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}:?\d{2})"
)


def _wire_time(value: object) -> datetime:
    """A wire time: ISO 8601 text with a date, a time and an offset, never a (numeric)
    Unix time; a ``datetime`` (Python construction) must be aware. Normalised to UTC.

    One Python call per field (a cheap shape check, then the C ``fromisoformat``; pydantic
    then only sees an aware ``datetime``) instead of pydantic's parse plus a Python
    after-validator: the strict check costs no speed.
    """
    if type(value) is str:
        if not (
            len(value) >= 16
            and value[4] == "-"
            and value[10] in "Tt "
            and (value[-1] in "Zz" or value[-6] in "+-" or value[-5] in "+-")
        ) and (_ISO_8601.fullmatch(value) is None):
            raise PydanticCustomError(
                "datetime_iso",
                "must be an ISO 8601 date and time with a UTC offset, e.g. 2025-03-01T06:00:00Z",
            )
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise PydanticCustomError(
                "datetime_parsing", "is not a valid ISO 8601 date and time"
            ) from None
        return _utc(parsed)
    if isinstance(value, datetime):
        return _utc(value)
    raise PydanticCustomError("datetime_type", "must be an ISO 8601 string, not a number")


UtcDatetime = Annotated[datetime, BeforeValidator(_wire_time)]
"""A wire time: ISO 8601 text with an offset (a ``datetime`` in Python), normalised to UTC."""
Id = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Kw = Annotated[float, Strict()]
"""A strict JSON number (no booleans, no strings); bounds are added per field."""
PowerKw = Annotated[Kw, Field(ge=-MAX_POWER_KW, le=MAX_POWER_KW)]
EnergyKwh = Annotated[Kw, Field(ge=-MAX_ENERGY_KWH, le=MAX_ENERGY_KWH)]
StrictInt = Annotated[int, Strict()]
"""Cumulative net energy of a session; negative after net V2G discharge."""


MAX_CURRENT_A = 80.0
"""The largest minimum current a session may declare (A per phase)."""


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    v: Literal[1] = 1


def _after(earlier: str, message: str) -> Any:
    """A field validator: this datetime must be strictly after the field ``earlier``."""

    def check(value: datetime, info: ValidationInfo) -> datetime:
        other = info.data.get(earlier)
        if isinstance(other, datetime) and value <= other:
            raise PydanticCustomError("datetime_order", message)
        return value

    return check


# --------------------------------------------------------------------------- telemetry


class SessionStarted(_Wire):
    """An EV plugged in and a charging session began at ``ts``."""

    type: Literal["session_started"] = "session_started"
    ts: UtcDatetime
    feeder_id: Id
    site_id: Id
    evse_id: Id
    csms_id: Id
    session_id: Id
    departure: UtcDatetime
    energy_requested_kwh: Annotated[Kw, Field(ge=0.0, le=MAX_ENERGY_KWH)]
    max_power_kw: Annotated[Kw, Field(gt=0.0, le=MAX_POWER_KW)]
    min_power_kw: Annotated[Kw, Field(ge=-MAX_POWER_KW, le=0.0)] = 0.0
    energy_kwh: EnergyKwh = 0.0
    # AC charging (IEC 61851): phases in use, the phase of a single-phase car (None =
    # unknown: counted on every phase) and the least current a car follows (below it the
    # car pauses); min kW = phases × min_current_a × site voltage per phase
    phases: Annotated[StrictInt, Field(ge=1, le=3)] = 3
    phase: Literal["L1", "L2", "L3"] | None = None
    min_current_a: Annotated[Kw, Field(ge=0.0, le=MAX_CURRENT_A)] = 6.0

    _departure_after_ts = field_validator("departure")(
        _after("ts", "departure must be after ts (the session start)")
    )

    @field_validator("phases")
    @classmethod
    def _one_or_three(cls, value: int) -> int:
        if value not in (1, 3):
            raise ValueError("phases must be 1 or 3")
        return value

    @field_validator("phase")
    @classmethod
    def _phase_of_single(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("phases") != 1:
            raise ValueError("phase is only given for a single-phase car (phases = 1)")
        return value


class MeterValue(_Wire):
    """A meter reading: cumulative net energy of the session and the present power."""

    type: Literal["meter_value"] = "meter_value"
    ts: UtcDatetime
    feeder_id: Id
    evse_id: Id
    session_id: Id
    energy_kwh: EnergyKwh
    power_kw: PowerKw


class SessionEnded(_Wire):
    """The session ended (unplugged or stopped) with ``energy_kwh`` delivered in total."""

    type: Literal["session_ended"] = "session_ended"
    ts: UtcDatetime
    feeder_id: Id
    evse_id: Id
    session_id: Id
    energy_kwh: EnergyKwh


class EvseHeartbeat(_Wire):
    """The EVSE (through its CSMS) is alive."""

    type: Literal["evse_heartbeat"] = "evse_heartbeat"
    ts: UtcDatetime
    feeder_id: Id
    evse_id: Id
    csms_id: Id


Telemetry = Annotated[
    SessionStarted | MeterValue | SessionEnded | EvseHeartbeat, Field(discriminator="type")
]

# ------------------------------------------------------------------------ grid signals


class DsoLimitMessage(_Wire):
    """A DSO cap on net import of a site, feeder or the fleet over ``[start, end)``, or
    (``direction="export"``) on a site's net export."""

    type: Literal["dso_limit"] = "dso_limit"
    ts: UtcDatetime
    event_id: Id
    target_type: Literal["site", "feeder", "fleet"]
    target_id: Id
    start: UtcDatetime
    end: UtcDatetime
    limit_kw: Annotated[Kw, Field(ge=-MAX_POWER_KW)]
    priority: StrictInt = 0
    source: Id = "rest"
    direction: Literal["import", "export"] = "import"

    _end_after_start = field_validator("end")(_after("start", "end must be after start"))

    def to_domain(self) -> DsoLimit:
        """The domain :class:`~aggregator.limits.DsoLimit` this message announces."""
        return DsoLimit(
            event_id=self.event_id,
            target_type=TargetType(self.target_type),
            target_id=self.target_id,
            start=self.start,
            end=self.end,
            limit_kw=self.limit_kw,
            priority=self.priority,
            source=self.source,
            direction=Direction(self.direction),
        )


class DsoLimitCancel(_Wire):
    """The DSO withdrew the limit ``event_id``."""

    type: Literal["dso_limit_cancel"] = "dso_limit_cancel"
    ts: UtcDatetime
    event_id: Id
    source: Id = "rest"


GridSignal = Annotated[DsoLimitMessage | DsoLimitCancel, Field(discriminator="type")]

# --------------------------------------------------------------------------- frequency


class FrequencySample(_Wire):
    """A grid frequency measurement."""

    type: Literal["frequency"] = "frequency"
    ts: UtcDatetime
    hz: Annotated[Kw, Field(ge=45.0, le=55.0)]


class AfrrRequest(_Wire):
    """An aFRR activation: the requested fleet deviation (kW, positive = more import)."""

    type: Literal["afrr_request"] = "afrr_request"
    ts: UtcDatetime
    setpoint_kw: Annotated[Kw, Field(ge=-MAX_FLEET_POWER_KW, le=MAX_FLEET_POWER_KW)]


FrequencySignal = Annotated[FrequencySample | AfrrRequest, Field(discriminator="type")]

# --------------------------------------------------------------------------- setpoints


class SetpointBatch(_Wire):
    """Per-EVSE setpoints for one CSMS, columnar: ``evse_ids[i]`` gets ``power_kw[i]``.

    A CSMS drops a batch whose ``seq`` is not above the last one it applied, and falls back
    to ``failsafe_kw[i]`` (import cap, kW) when it hears nothing before ``valid_until``.
    """

    type: Literal["setpoints"] = "setpoints"
    csms_id: Id
    seq: Annotated[StrictInt, Field(ge=0)]
    issued_at: UtcDatetime
    valid_until: UtcDatetime
    source_ts: UtcDatetime | None = None
    evse_ids: list[Id]
    power_kw: list[PowerKw]
    failsafe_kw: list[Annotated[Kw, Field(ge=0.0, le=MAX_POWER_KW)]]

    _valid_after_issue = field_validator("valid_until")(
        _after("issued_at", "valid_until must be after issued_at")
    )

    @field_validator("evse_ids")
    @classmethod
    def _unique_ids(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            dup = sorted(e for e, n in Counter(value).items() if n > 1)
            raise PydanticCustomError(
                "duplicate_id", "duplicate evse ids: {ids}", {"ids": ", ".join(dup)}
            )
        return value

    @field_validator("power_kw", "failsafe_kw")
    @classmethod
    def _same_length(cls, value: list[float], info: ValidationInfo) -> list[float]:
        ids = info.data.get("evse_ids")
        if ids is not None and len(ids) != len(value):
            raise PydanticCustomError(
                "length_mismatch",
                "has {n} values but evse_ids has {m}",
                {"n": len(value), "m": len(ids)},
            )
        return value


# ------------------------------------------------------------------ decoding, encoding

_TELEMETRY: Final[TypeAdapter[Telemetry]] = TypeAdapter(Telemetry)
_GRID_SIGNAL: Final[TypeAdapter[GridSignal]] = TypeAdapter(GridSignal)
_FREQUENCY: Final[TypeAdapter[FrequencySignal]] = TypeAdapter(FrequencySignal)
_SETPOINTS: Final[TypeAdapter[SetpointBatch]] = TypeAdapter(SetpointBatch)

_TELEMETRY_TAGS: Final = frozenset(
    {"session_started", "meter_value", "session_ended", "evse_heartbeat"}
)
_GRID_SIGNAL_TAGS: Final = frozenset({"dso_limit", "dso_limit_cancel"})
_FREQUENCY_TAGS: Final = frozenset({"frequency", "afrr_request"})


_ID_FIELDS: Final = ("evse_id", "session_id", "csms_id", "event_id")


def _record_ids(raw: bytes | bytearray | str) -> tuple[str, ...]:
    """The ids a bad record names (for its issues), if it is a JSON object at all."""
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return ()
    if not isinstance(obj, dict):
        return ()
    return tuple(v for k in _ID_FIELDS if isinstance(v := obj.get(k), str) and v)


def _issues(exc: ValidationError, tags: frozenset[str], ids: tuple[str, ...] = ()) -> list[Issue]:
    """Every error of ``exc`` as an Issue; a union's tag is dropped from the location."""
    issues: list[Issue] = []
    for err in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = err["loc"]
        if loc and isinstance(loc[0], str) and loc[0] in tags:
            loc = loc[1:]
        kind = err["type"]
        if kind == "json_invalid":
            where = "json"
        elif loc:
            where = ".".join(str(part) for part in loc)
        elif kind.startswith("union_tag"):
            where = "type"
        else:
            where = "input"
        issues.append(Issue(field=where, code=kind, ids=ids, message=err["msg"]))
    return issues


def _decode(adapter: TypeAdapter[_T], raw: bytes | bytearray | str, tags: frozenset[str]) -> _T:
    try:
        return adapter.validate_json(raw)
    except ValidationError as exc:
        raise InvalidInput(_issues(exc, tags, _record_ids(raw))) from None


def decode_telemetry(raw: bytes | bytearray | str) -> Telemetry:
    """Parse one ``gridflex.telemetry`` record; :class:`InvalidInput` lists every problem."""
    return _decode(_TELEMETRY, raw, _TELEMETRY_TAGS)


def decode_grid_signal(raw: bytes | bytearray | str) -> GridSignal:
    """Parse one ``gridflex.grid-signals`` record."""
    return _decode(_GRID_SIGNAL, raw, _GRID_SIGNAL_TAGS)


def decode_frequency(raw: bytes | bytearray | str) -> FrequencySignal:
    """Parse one ``gridflex.frequency`` record."""
    return _decode(_FREQUENCY, raw, _FREQUENCY_TAGS)


def decode_setpoints(raw: bytes | bytearray | str) -> SetpointBatch:
    """Parse one ``gridflex.setpoints`` record."""
    return _decode(_SETPOINTS, raw, frozenset())


def encode(msg: BaseModel) -> bytes:
    """Compact UTF-8 JSON of one message (datetimes as ISO 8601 with ``Z``)."""
    return msg.__pydantic_serializer__.to_json(msg)


# -------------------------------------------------------------------------- schemas

SCHEMAS: Final[dict[str, type[BaseModel] | TypeAdapter[Any]]] = {
    "telemetry": _TELEMETRY,
    "grid-signals": _GRID_SIGNAL,
    "frequency": _FREQUENCY,
    "setpoints": SetpointBatch,
}
"""Schema name (the topic without ``gridflex.``) → model or adapter."""


def _schema(name: str, model: type[BaseModel] | TypeAdapter[Any]) -> dict[str, Any]:
    if isinstance(model, TypeAdapter):
        body = model.json_schema(mode="validation")
    else:
        body = model.model_json_schema(mode="validation")
    body.pop("title", None)
    head: dict[str, Any] = {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"urn:gridflex:schema:{name}:v{SCHEMA_VERSION}",
        "title": f"gridflex.{name} v{SCHEMA_VERSION}",
    }
    return head | body


def export_schemas(directory: Path) -> list[Path]:
    """Write ``<name>.schema.json`` (JSON Schema 2020-12) for every entry of :data:`SCHEMAS`.

    Creates ``directory`` if needed; returns the written paths in :data:`SCHEMAS` order.
    """
    directory.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for name, model in SCHEMAS.items():
        path = directory / f"{name}.schema.json"
        text = json.dumps(_schema(name, model), indent=2, ensure_ascii=False) + "\n"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths
