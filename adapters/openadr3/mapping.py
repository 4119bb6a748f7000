"""OpenADR 3.1 events → gridflex DSO limits, and gridflex readings → OpenADR 3.1 reports.

Pure functions: no network, no clock of their own (``now`` is passed in). The VEN
(:mod:`adapters.openadr3.ven`) runs them and hands the limits to the one DSO intake.
Every problem is an :class:`~aggregator.errors.Issue` with the event id in ``ids``; nothing
is dropped silently.

Payloads understood, per interval (values in the event's ``payloadDescriptors`` unit,
``KW`` when none is given; ``W`` and ``MW`` are converted — units are converted once, here):

=========================  ==========================================================
payload type               becomes
=========================  ==========================================================
``IMPORT_CAPACITY_LIMIT``  a limit (net-import cap, kW) on each target, the window of
                           the interval
``DISPATCH_SETPOINT``      the same (the setpoint caps import; a lower of the two wins)
``EXPORT_CAPACITY_LIMIT``  an export cap (kW ≥ 0) on each **site** target (id
                           ``…:i{interval}:export:…``); on a feeder or fleet target an
                           Issue ``export_needs_site`` (export caps exist per site)
anything else              ignored (prices, alerts … are not limits)
=========================  ==========================================================

Time (ISO 8601, converted here): an interval's window is its own ``intervalPeriod``, else
the event's, with consecutive intervals following each other (interval *k* starts at the
event start + *k* durations). A start of ``0001-01-01`` means *now*; a duration of
``P9999Y`` (or any one ending past 2100) means open-ended and is capped at
:data:`~adapters.dso.intake.LATEST`. Years and months are calendar-exact; a
``randomizeStart`` widens the window at its end (the VTN may start a VEN that late), never
shortens it. Windows already over at ``now`` are skipped.

Ids: one limit per (event, interval, gridflex target): ``oadr3:{event}:i{interval}:{type}:{id}``
(:func:`limit_id`), escaped and digest-shortened to stay a valid intake id.

The **safe-mode event** (``eventName`` = :attr:`OpenAdr3Config.safe_mode_event_name`)
carries the failsafe cap per target: :func:`safe_mode_caps` takes the lowest import cap of
any interval (conservative), and :func:`safe_mode_limits` turns them into limits the VEN
publishes only while its VTN is unreachable.
"""

from __future__ import annotations

import calendar
import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from adapters.dso.intake import LATEST
from adapters.openadr3.config import OpenAdr3Config, OpenAdr3Target
from adapters.openadr3.wire import Event, Interval, IntervalPeriod
from aggregator.errors import Issue
from aggregator.messages import DsoLimitMessage

__all__ = [
    "CAP_TYPES",
    "Readings",
    "Window",
    "add_duration",
    "event_to_limits",
    "event_windows",
    "is_safe_mode",
    "limit_id",
    "power_kw",
    "report_body",
    "safe_mode_caps",
    "safe_mode_limits",
]

CAP_TYPES: Final = ("IMPORT_CAPACITY_LIMIT", "DISPATCH_SETPOINT")
EXPORT_TYPE: Final = "EXPORT_CAPACITY_LIMIT"
NOW_START: Final = datetime(1, 1, 1, tzinfo=UTC)
_UNIT_KW: Final = {"KW": 1.0, "W": 1e-3, "MW": 1e3}
_DURATION: Final = re.compile(
    r"^(?P<sign>-)?P(?!$)(?:(?P<y>\d+(?:\.\d+)?)Y)?(?:(?P<mo>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<w>\d+(?:\.\d+)?)W)?(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?=\d)(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<mi>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
_SAFE_ID: Final = re.compile(r"[^A-Za-z0-9._@+=~-]")


# --------------------------------------------------------------------------------- time


def add_duration(start: datetime, duration: str) -> datetime:
    """``start`` + an ISO 8601 duration (``PnYnMnWnDTnHnMnS``), calendar-exact for years and
    months; past :data:`LATEST` (``P9999Y``) it is :data:`LATEST`. Raises ``ValueError``."""
    m = _DURATION.match(duration.strip())
    if m is None:
        raise ValueError(f"not an ISO 8601 duration: {duration!r}")
    if m["sign"]:
        raise ValueError(f"negative duration: {duration!r}")
    g = {k: float(v) if v else 0.0 for k, v in m.groupdict().items() if k != "sign"}
    if g["y"] != int(g["y"]) or g["mo"] != int(g["mo"]):
        raise ValueError(f"fractional years or months are not supported: {duration!r}")
    months = start.month - 1 + int(g["mo"]) + 12 * int(g["y"])
    year = start.year + months // 12
    if year > LATEST.year:
        return LATEST
    month = months % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    at = start.replace(year=year, month=month, day=day)
    try:
        at += timedelta(weeks=g["w"], days=g["d"], hours=g["h"], minutes=g["mi"], seconds=g["s"])
    except OverflowError:
        return LATEST
    return min(at, LATEST)


@dataclass(frozen=True, slots=True)
class Window:
    """One interval of an event, in UTC (end exclusive)."""

    interval_id: int
    start: datetime
    end: datetime
    interval: Interval


def _resolve(period: IntervalPeriod, now: datetime) -> datetime:
    start = period.start.astimezone(UTC)
    return now if start <= NOW_START + timedelta(days=1) else start


def event_windows(event: Event, now: datetime) -> tuple[list[Window], list[Issue]]:
    """Each interval's window (see the module docstring); problems as issues."""
    ids = (event.id,)
    issues: list[Issue] = []
    windows: list[Window] = []
    base = event.interval_period
    for k, iv in enumerate(event.intervals):
        own = iv.interval_period
        period = own or base
        if period is None:
            issues.append(
                Issue(
                    field=f"intervals[{k}].intervalPeriod",
                    code="no_interval_period",
                    message="neither the interval nor the event has an intervalPeriod",
                    ids=ids,
                )
            )
            continue
        duration = period.duration or (base.duration if base is not None else None)
        if duration is None:
            issues.append(
                Issue(
                    field=f"intervals[{k}].intervalPeriod.duration",
                    code="no_duration",
                    message="an interval without a duration has no end",
                    ids=ids,
                )
            )
            continue
        try:
            start = _resolve(period, now)
            if own is None:  # consecutive intervals of the event's period
                for _ in range(k):
                    start = add_duration(start, duration)
            end = add_duration(start, duration)
            randomize = period.randomize_start
            if randomize:
                end = add_duration(end, randomize)
        except ValueError as exc:
            issues.append(
                Issue(field=f"intervals[{k}]", code="bad_duration", message=str(exc), ids=ids)
            )
            continue
        if end > now:
            windows.append(Window(iv.id, start, end, iv))
    return windows, issues


# -------------------------------------------------------------------------------- values


def power_kw(value: Any, unit: str | None) -> float:
    """A power value in ``unit`` (``KW`` when ``None``) in kW; ``ValueError`` if not one."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number")
    factor = _UNIT_KW.get((unit or "KW").upper())
    if factor is None:
        raise ValueError(f"unit {unit!r} is not a power unit (KW, W, MW)")
    return float(value) * factor


def _units(event: Event) -> dict[str, str | None]:
    return {d.payload_type: d.units for d in event.payload_descriptors}


def _targets(
    event: Event, config: OpenAdr3Config
) -> tuple[list[tuple[str, OpenAdr3Target]], list[Issue]]:
    if not event.targets:
        if config.ven_target is None:
            issue = Issue(
                field="targets",
                code="no_target",
                message="the event has no targets and no ven_target is configured",
                ids=(event.id,),
            )
            return [], [issue]
        return [("", config.ven_target)], []
    out, issues = [], []
    for t in event.targets:
        target = config.targets.get(t)
        if target is None:
            issues.append(
                Issue(
                    field="targets",
                    code="unknown_target",
                    message=f"target {t!r} is not configured",
                    ids=(event.id, t),
                )
            )
        else:
            out.append((t, target))
    return out, issues


def _part(text: str) -> str:
    return _SAFE_ID.sub("_", text)


def limit_id(event_id: str, interval_id: int | str, target: OpenAdr3Target) -> str:
    """The intake id of one (event, interval, target): valid whatever the VTN's ids are."""
    full = f"oadr3:{_part(event_id)}:i{interval_id}:{target.type}:{_part(target.id)}"
    if len(full) <= 128:
        return full
    digest = hashlib.sha256(full.encode("utf-8")).hexdigest()[:32]
    return f"{full[:95]}~{digest}"


def _interval_caps(event: Event, iv: Interval) -> tuple[float | None, list[Issue]]:
    """The lowest import cap (kW) of one interval's payloads, and what could not be read."""
    return _lowest(event, iv, CAP_TYPES)


def _export_cap(event: Event, iv: Interval) -> tuple[float | None, list[Issue]]:
    """The lowest export cap (kW) of one interval's payloads, and what could not be read."""
    cap, issues = _lowest(event, iv, (EXPORT_TYPE,))
    if cap is not None and cap < 0:
        issues.append(
            Issue(
                field=f"intervals[{iv.id}].payloads.{EXPORT_TYPE}",
                code="negative_export_cap",
                message=f"an export cap must be >= 0 kW, got {cap:g}",
                ids=(event.id,),
            )
        )
        return None, issues
    return cap, issues


def _lowest(event: Event, iv: Interval, types: Sequence[str]) -> tuple[float | None, list[Issue]]:
    units = _units(event)
    cap: float | None = None
    issues: list[Issue] = []
    for p in iv.payloads:
        if p.type not in types:
            continue
        try:
            if len(p.values) != 1:
                raise ValueError(f"expected one value, got {len(p.values)}")
            kw = power_kw(p.values[0], units.get(p.type))
        except ValueError as exc:
            issues.append(
                Issue(
                    field=f"intervals[{iv.id}].payloads.{p.type}",
                    code="bad_value",
                    message=str(exc),
                    ids=(event.id,),
                )
            )
            continue
        cap = kw if cap is None else min(cap, kw)
    return cap, issues


def is_safe_mode(event: Event, config: OpenAdr3Config) -> bool:
    return event.event_name == config.safe_mode_event_name


def event_to_limits(
    event: Event, config: OpenAdr3Config, now: datetime
) -> tuple[list[DsoLimitMessage], list[Issue]]:
    """The limits an (ordinary) event asks for, one per (interval, target), and its problems."""
    targets, issues = _targets(event, config)
    windows, more = event_windows(event, now)
    issues += more
    priority = event.priority if event.priority is not None else config.priority
    limits: list[DsoLimitMessage] = []
    for w in windows:
        cap, more = _interval_caps(event, w.interval)
        issues += more
        export, more = _export_cap(event, w.interval)
        issues += more
        if export is not None:
            limits += _export_limits(event, w, targets, export, priority, config, now, issues)
        if cap is None:
            continue
        for _, target in targets:
            limits.append(
                DsoLimitMessage(
                    ts=now,
                    event_id=limit_id(event.id, w.interval_id, target),
                    target_type=target.type,
                    target_id=target.id if target.type != "fleet" else "fleet",
                    start=w.start,
                    end=w.end,
                    limit_kw=cap,
                    priority=priority,
                    source=config.source,
                )
            )
    return limits, issues


def _export_limits(
    event: Event,
    w: Window,
    targets: list[tuple[str, OpenAdr3Target]],
    cap_kw: float,
    priority: int,
    config: OpenAdr3Config,
    now: datetime,
    issues: list[Issue],
) -> list[DsoLimitMessage]:
    """One export cap per site target; an Issue for every other target."""
    out: list[DsoLimitMessage] = []
    for name, target in targets:
        if target.type != "site":
            issues.append(
                Issue(
                    field="targets",
                    code="export_needs_site",
                    message=f"{EXPORT_TYPE} on a {target.type} target: export caps apply to "
                    "sites only",
                    ids=(event.id, name or target.id),
                )
            )
            continue
        out.append(
            DsoLimitMessage(
                ts=now,
                event_id=limit_id(event.id, f"{w.interval_id}:export", target),
                target_type="site",
                target_id=target.id,
                start=w.start,
                end=w.end,
                limit_kw=cap_kw,
                priority=priority,
                source=config.source,
                direction="export",
            )
        )
    return out


def safe_mode_caps(
    event: Event, config: OpenAdr3Config
) -> tuple[dict[OpenAdr3Target, float], list[Issue]]:
    """The failsafe cap per target: the lowest import cap of any of its intervals."""
    targets, issues = _targets(event, config)
    low: float | None = None
    for iv in event.intervals:
        cap, more = _interval_caps(event, iv)
        issues += more
        if cap is not None:
            low = cap if low is None else min(low, cap)
    if low is None:
        issues.append(
            Issue(
                field="intervals",
                code="no_cap",
                message="the safe-mode event carries no IMPORT_CAPACITY_LIMIT",
                ids=(event.id,),
            )
        )
        return {}, issues
    return {t: low for _, t in targets}, issues


def safe_mode_limits(
    caps: Mapping[OpenAdr3Target, float], config: OpenAdr3Config, now: datetime, hold: timedelta
) -> list[DsoLimitMessage]:
    """The failsafe caps as limits from ``now`` for ``hold`` (renewed while offline)."""
    return [
        DsoLimitMessage(
            ts=now,
            event_id=limit_id("safe-mode", 0, t),
            target_type=t.type,
            target_id=t.id if t.type != "fleet" else "fleet",
            start=now,
            end=now + hold,
            limit_kw=kw,
            priority=config.priority,
            source=config.source,
        )
        for t, kw in sorted(caps.items(), key=lambda kv: (kv[0].type, kv[0].id))
    ]


# ------------------------------------------------------------------------------ reports


@dataclass(frozen=True, slots=True, kw_only=True)
class Readings:
    """What the VEN reports for one target at one moment (kW)."""

    usage_kw: float
    baseline_kw: float | None = None  # the plan's power now
    up_kw: float | None = None  # regulation available: more import
    down_kw: float | None = None  # regulation available: less import


_REPORT_TYPES: Final = (
    ("USAGE", "usage_kw", "DIRECT_READ"),
    ("BASELINE", "baseline_kw", "FORECAST"),
    ("UP_REGULATION_AVAILABLE", "up_kw", "FORECAST"),
    ("DOWN_REGULATION_AVAILABLE", "down_kw", "FORECAST"),
)


def _iso_seconds(seconds: float) -> str:
    return f"PT{seconds:g}S"


def report_body(
    event: Event,
    client_name: str,
    readings: Mapping[str, Readings],
    start: datetime,
    duration_s: float,
) -> dict[str, Any]:
    """An OpenADR 3.1 ``REPORT`` for ``event``: one resource per OpenADR target string,
    USAGE / BASELINE / UP_ and DOWN_REGULATION_AVAILABLE in ``KW`` over one interval."""
    descriptors = [
        {"payloadType": kind, "readingType": reading, "units": "KW"}
        for kind, _, reading in _REPORT_TYPES
    ]
    resources = []
    for name, r in sorted(readings.items()):
        payloads = []
        for kind, attr, _ in _REPORT_TYPES:
            value = getattr(r, attr)
            if value is not None and math.isfinite(value):
                payloads.append({"type": kind, "values": [round(float(value), 6)]})
        resources.append(
            {
                "resourceName": name,
                "intervalPeriod": {
                    "start": start.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                    "duration": _iso_seconds(duration_s),
                },
                "intervals": [{"id": 0, "payloads": payloads}],
            }
        )
    return {
        "objectType": "REPORT",
        "programID": event.program_id,
        "eventID": event.id,
        "clientName": client_name,
        "reportName": f"gridflex:{event.id}"[:128],
        "payloadDescriptors": descriptors,
        "resources": resources,
    }
