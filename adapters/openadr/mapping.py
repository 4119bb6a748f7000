"""OpenADR 2.0b events → gridflex DSO limits, prices and the opt decision: pure mapping.

Nothing here talks to the network or imports openleadr: the functions take the event
*dict* that openleadr's ``OpenADRClient`` hands to its ``on_event`` handler and return
wire messages (:class:`~aggregator.messages.DsoLimitMessage` /
:class:`~aggregator.messages.DsoLimitCancel`), :class:`PricePoint` values and every
problem as an :class:`~aggregator.errors.Issue`. :mod:`adapters.openadr.ven` runs them;
:mod:`adapters.openadr.config` holds :class:`~adapters.openadr.config.OpenAdrConfig`.

Signals understood (anything else is an :class:`Issue`, never silently dropped):

=====================  =============  ================================================
signal name            signal type    what it becomes
=====================  =============  ================================================
``LOAD_DISPATCH``      ``setpoint``   a limit of the value, converted to kW
``LOAD_DISPATCH``      ``delta``      a limit of ``capacity_kw − |value|`` (a reduction)
``SIMPLE``             ``level``      a limit of ``simple_levels[level] × capacity_kw``
``ELECTRICITY_PRICE``  ``price``      a :class:`PricePoint` (:func:`event_to_prices`)
=====================  =============  ================================================

Units are converted once, here: OpenADR power is ``powerReal`` in W with an SI scale code
(``siScaleCode`` ``k`` → kW, ``M`` → MW …); a signal without an item base is read in
:attr:`OpenAdrConfig.default_power_unit`. Prices in ``currencyPerKWh`` (currency must be
:attr:`OpenAdrConfig.price_currency`) become EUR/MWh.

Time rules (all conservative — a limit is never shorter than the DSO could mean it):

* An interval without its own ``dtstart`` starts where the previous one ended (the first at
  the active period's ``dtstart``); an interval without a positive duration (open-ended)
  is an Issue.
* **Ramp-up** (``x-eiRampUp``): the period *before* the start in which the VEN moves to the
  target. gridflex applies the first interval's limit from ``dtstart − ramp_up``.
* **Randomisation** (``tolerance.tolerate.startafter``): the VTN lets each VEN start up to
  ``startafter`` late. gridflex starts every limit at its *earliest* possible start and
  ends it at its *latest* possible end (``end + startafter``); where two intervals then
  overlap, the limit book keeps the tighter cap.
* Windows that already ended at ``now`` are skipped; test events (``testEvent``) are not
  applied unless :attr:`OpenAdrConfig.apply_test_events`.

Targets: every OpenADR target value of the event (resource id, group id, group name, VEN
id, party id, end-device-asset mRID …; signal-level targets win over event-level ones) is
looked up in :attr:`OpenAdrConfig.targets`; a ``ven_id``/``party_id`` not listed there
stands for :attr:`OpenAdrConfig.ven_target` when that is set. An event without targets also
means the VEN as a whole. One OpenADR event becomes one limit per (signal, interval,
gridflex target), with the event id ``oadr:{event id}:s{signal}:i{interval}:{type}:{id}``
(:func:`limit_event_id`); a cancelled event yields a :class:`DsoLimitCancel` for each of them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal

import numpy as np
from pydantic import ValidationError

from adapters.openadr.config import OpenAdrConfig, OpenAdrTarget
from aggregator.errors import Issue
from aggregator.messages import DsoLimitCancel, DsoLimitMessage
from aggregator.pebc import is_utc
from aggregator.service.replica import PriceSeries

__all__ = [
    "Feasibility",
    "OptType",
    "PricePoint",
    "decide_opt",
    "event_to_limits",
    "event_to_prices",
    "limit_event_id",
    "price_series",
]

OptType = Literal["optIn", "optOut"]
Feasibility = Callable[[DsoLimitMessage], str | None]

SI_SCALE: Final[Mapping[str, float]] = {
    "p": 1e-12,
    "n": 1e-9,
    "micro": 1e-6,
    "m": 1e-3,
    "c": 1e-2,
    "d": 1e-1,
    "none": 1.0,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
}
"""OpenADR ``siScaleCode`` → multiplier."""
_POWER_UNIT_KW: Final = {"W": 1e-3, "kW": 1.0, "MW": 1e3}
_LIMIT_SIGNALS: Final = frozenset({"LOAD_DISPATCH", "SIMPLE", "simple"})
_PRICE_SIGNALS: Final = frozenset({"ELECTRICITY_PRICE"})
# item-base names as they appear in openleadr's event dict (normalised or not)
_ITEM_BASES: Final = (
    "powerReal",
    "powerApparent",
    "powerReactive",
    "energyReal",
    "currency",
    "currencyPerKW",
    "currencyPerKWh",
    "currencyPerThm",
    "customUnit",
)

# ----------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class PricePoint:
    """An electricity price holding over ``[start, end)`` (UTC), in EUR/MWh."""

    start: datetime
    end: datetime
    price_eur_per_mwh: float
    event_id: str


_ID_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._@+=-")


def _id_part(text: str) -> str:
    """Characters outside the id alphabet (``:`` and ``~`` too) as ``~XX`` per UTF-8 byte."""
    return "".join(c if c in _ID_SAFE else "".join(f"~{b:02X}" for b in c.encode()) for c in text)


def limit_event_id(event_id: str, signal: int, interval: int, target: OpenAdrTarget) -> str:
    """The gridflex limit id of one (signal, interval, target) of an OpenADR event: a valid
    intake id whatever the VTN sends (odd characters escaped; over 128 characters, the
    first 95 and a SHA-256 digest of the whole, so it stays unique and stable)."""
    full = f"oadr:{_id_part(event_id)}:s{signal}:i{interval}:{target.type}:{_id_part(target.id)}"
    if len(full) <= 128:
        return full
    digest = hashlib.sha256(full.encode("utf-8")).hexdigest()[:32]
    return f"{full[:95]}~{digest}"


@dataclass(frozen=True, slots=True)
class _Interval:
    index: int
    start: datetime
    end: datetime
    value: Any


# ---------------------------------------------------------------------- event plumbing


def _event_id(event: Mapping[str, Any]) -> str:
    return str(event.get("event_descriptor", {}).get("event_id", "?"))


def _signals(event: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    raw = event.get("event_signals") or []
    if isinstance(raw, Mapping):  # some openleadr paths nest the list once more
        raw = raw.get("event_signals") or []
    return [s for s in raw if isinstance(s, Mapping)]


def _ramp_up(period: Mapping[str, Any]) -> timedelta:
    value = period.get("ramp_up", period.get("ramp_up_period"))
    return value if isinstance(value, timedelta) and value > timedelta(0) else timedelta(0)


def _start_after(period: Mapping[str, Any]) -> timedelta:
    tol = period.get("tolerance")
    if not isinstance(tol, Mapping):
        return timedelta(0)
    value = tol.get("startafter")
    if value is None and isinstance(tol.get("tolerate"), Mapping):
        value = tol["tolerate"].get("startafter")
    return value if isinstance(value, timedelta) and value > timedelta(0) else timedelta(0)


def _intervals(
    event: Mapping[str, Any], signal: Mapping[str, Any], where: str, ev: str, issues: list[Issue]
) -> list[_Interval]:
    period = event.get("active_period") or {}
    cursor = period.get("dtstart")
    out: list[_Interval] = []
    for k, iv in enumerate(signal.get("intervals") or []):
        start = iv.get("dtstart") or cursor
        duration = iv.get("duration")
        field = f"{where}.intervals[{k}]"
        if not isinstance(start, datetime) or not is_utc(start):
            issues.append(Issue(field, "no UTC start (interval dtstart or active period)", (ev,)))
            cursor = None
            continue
        if not isinstance(duration, timedelta) or duration <= timedelta(0):
            issues.append(Issue(field, "open-ended or missing duration is not supported", (ev,)))
            cursor = None
            continue
        out.append(_Interval(k, start, start + duration, iv.get("signal_payload")))
        cursor = start + duration
    if not out and not issues:
        issues.append(Issue(f"{where}.intervals", "signal has no intervals", (ev,)))
    return out


def _target_values(raw: Any) -> list[tuple[str, str]]:
    """(kind, value) of every target in openleadr's list-of-dicts form."""
    out: list[tuple[str, str]] = []
    for target in raw if isinstance(raw, list) else []:
        if not isinstance(target, Mapping):
            continue
        for kind, value in target.items():
            if isinstance(value, Mapping):  # end_device_asset: {mrid: …}, p_node: {node: …}
                value = value.get("mrid", value.get("node", value.get("id")))
            if value is not None:
                out.append((str(kind), str(value)))
    return out


def _targets(
    event: Mapping[str, Any],
    signal: Mapping[str, Any],
    config: OpenAdrConfig,
    ev: str,
    issues: list[Issue],
) -> list[OpenAdrTarget]:
    values = _target_values(signal.get("targets")) or _target_values(event.get("targets"))
    found: dict[tuple[str, str], OpenAdrTarget] = {}
    if not values:
        if config.ven_target is None:
            issues.append(Issue("targets", "event has no target and no ven_target is set", (ev,)))
        else:
            found[(config.ven_target.type, config.ven_target.id)] = config.ven_target
    for kind, value in values:
        target = config.targets.get(value)
        if target is None and kind in ("ven_id", "party_id"):
            target = config.ven_target
        if target is None:
            issues.append(Issue(f"targets.{kind}", f"unknown OpenADR target {value!r}", (ev,)))
            continue
        found.setdefault((target.type, target.id), target)
    return list(found.values())


def _item_base(signal: Mapping[str, Any]) -> tuple[str, str | None, str] | None:
    """(name, unit, scale) of a signal's item base, in openleadr's two dict shapes."""
    m = signal.get("measurement")
    if isinstance(m, Mapping):
        return str(m.get("name")), m.get("unit"), str(m.get("scale") or "none")
    # openleadr leaves the raw shape on signals after one without an item base
    for name in _ITEM_BASES:
        raw = signal.get(name)
        if isinstance(raw, Mapping):
            return name, raw.get("item_units"), str(raw.get("si_scale_code") or "none")
    return None


def _to_kw_factor(
    signal: Mapping[str, Any], config: OpenAdrConfig, where: str, ev: str, issues: list[Issue]
) -> float | None:
    base = _item_base(signal)
    if base is None:
        return _POWER_UNIT_KW[config.default_power_unit]
    name, unit, scale = base
    if name != "powerReal" or unit != "W" or scale not in SI_SCALE:
        issues.append(
            Issue(f"{where}.item_base", f"need powerReal in W, got {name} {unit} {scale}", (ev,))
        )
        return None
    return SI_SCALE[scale] / 1000.0


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _status(event: Mapping[str, Any]) -> str:
    return str(event.get("event_descriptor", {}).get("event_status", "")).lower()


def _is_test(event: Mapping[str, Any]) -> bool:
    return event.get("event_descriptor", {}).get("test_event") in (True, "true")


# ------------------------------------------------------------------------------ limits


def _limit_kw(
    name: str,
    stype: str,
    value: float,
    factor: float | None,
    target: OpenAdrTarget,
    config: OpenAdrConfig,
    field: str,
    ev: str,
) -> tuple[float | None, Issue | None]:
    ids = (ev, f"{target.type}:{target.id}")
    if name == "LOAD_DISPATCH":
        if factor is None:
            return None, None  # the unit issue is reported once per signal
        if stype == "setpoint":
            return value * factor, None
        if target.capacity_kw is None:
            return None, Issue(field, "a delta needs the target's capacity_kw", ids)
        return target.capacity_kw - abs(value * factor), None
    # SIMPLE
    level = round(value)
    if level != value or level not in config.simple_levels:
        return None, Issue(field, f"SIMPLE level {value:g} is not one of 0–3 configured", ids)
    if target.capacity_kw is None:
        return None, Issue(field, "a SIMPLE level needs the target's capacity_kw", ids)
    return config.simple_levels[level] * target.capacity_kw, None


def event_to_limits(
    event: Mapping[str, Any], config: OpenAdrConfig, now: datetime
) -> tuple[list[DsoLimitMessage | DsoLimitCancel], list[Issue]]:
    """The DSO limits (or, for a cancelled event, their cancellations) of one OpenADR event.

    ``event`` is openleadr's event dict; ``now`` (UTC) stamps the messages and drops windows
    that already ended. ELECTRICITY_PRICE signals are left to :func:`event_to_prices`.
    """
    ev = _event_id(event)
    issues: list[Issue] = []
    out: list[DsoLimitMessage | DsoLimitCancel] = []
    try:
        status = _status(event)
        if status == "completed" or (_is_test(event) and not config.apply_test_events):
            return [], []
        cancelled = status == "cancelled"
        period = event.get("active_period") or {}
        ramp_up, start_after = _ramp_up(period), _start_after(period)
        priority = event.get("event_descriptor", {}).get("priority")
        priority = priority if isinstance(priority, int) and priority else config.priority
        for s, signal in enumerate(_signals(event)):
            name, stype = str(signal.get("signal_name")), str(signal.get("signal_type"))
            where = f"event_signals[{s}]"
            if name in _PRICE_SIGNALS:
                continue
            if name not in _LIMIT_SIGNALS:
                if not cancelled:
                    issues.append(Issue(where, f"unsupported signal {name} ({stype})", (ev,)))
                continue
            ok_type = (
                stype in ("setpoint", "delta") if name == "LOAD_DISPATCH" else stype == "level"
            )
            if not ok_type and not cancelled:
                issues.append(Issue(where, f"unsupported signal type {stype} for {name}", (ev,)))
                continue
            sig_issues: list[Issue] = []
            targets = _targets(event, signal, config, ev, sig_issues)
            intervals = _intervals(event, signal, where, ev, sig_issues)
            if cancelled:
                out += [
                    DsoLimitCancel(
                        ts=now, event_id=limit_event_id(ev, s, iv.index, t), source=config.source
                    )
                    for iv in intervals
                    for t in targets
                ]
                continue
            issues += sig_issues
            factor = (
                _to_kw_factor(signal, config, where, ev, issues) if name == "LOAD_DISPATCH" else 1.0
            )
            first = min((iv.start for iv in intervals), default=None)
            for iv in intervals:
                field = f"{where}.intervals[{iv.index}]"
                value = _number(iv.value)
                if value is None:
                    issues.append(Issue(field, f"payload {iv.value!r} is not a number", (ev,)))
                    continue
                start = iv.start - ramp_up if iv.start == first else iv.start
                end = iv.end + start_after
                if end <= now:
                    continue
                for target in targets:
                    kw, problem = _limit_kw(name, stype, value, factor, target, config, field, ev)
                    if problem is not None:
                        issues.append(problem)
                    if kw is None:
                        continue
                    lid = limit_event_id(ev, s, iv.index, target)
                    try:
                        out.append(
                            DsoLimitMessage(
                                ts=now,
                                event_id=lid,
                                target_type=target.type,
                                target_id=target.id,
                                start=start,
                                end=end,
                                limit_kw=kw,
                                priority=priority,
                                source=config.source,
                            )
                        )
                    except ValidationError as exc:
                        for err in exc.errors(include_url=False, include_input=False):
                            loc = ".".join(str(p) for p in err["loc"])
                            issues.append(Issue(f"{field}.{loc}", err["msg"], (ev, lid)))
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        issues.append(Issue("event", f"malformed event: {type(exc).__name__}: {exc}", (ev,)))
    return out, issues


# ------------------------------------------------------------------------------ prices


def event_to_prices(
    event: Mapping[str, Any], config: OpenAdrConfig, now: datetime
) -> tuple[list[PricePoint], list[Issue]]:
    """The ELECTRICITY_PRICE intervals of one event, in EUR/MWh (targets are ignored:
    a price is the VEN's). Cancelled, completed and (by default) test events give none."""
    ev = _event_id(event)
    status = _status(event)
    if status in ("cancelled", "completed") or (_is_test(event) and not config.apply_test_events):
        return [], []
    issues: list[Issue] = []
    out: list[PricePoint] = []
    try:
        for s, signal in enumerate(_signals(event)):
            if str(signal.get("signal_name")) not in _PRICE_SIGNALS:
                continue
            where = f"event_signals[{s}]"
            stype = str(signal.get("signal_type"))
            if stype != "price":
                issues.append(Issue(where, f"unsupported price signal type {stype}", (ev,)))
                continue
            base = _item_base(signal)
            factor = 1000.0  # currency per kWh → per MWh
            if base is not None:
                name, unit, scale = base
                if (
                    name != "currencyPerKWh"
                    or unit != config.price_currency
                    or scale not in SI_SCALE
                ):
                    issues.append(
                        Issue(
                            f"{where}.item_base",
                            f"need currencyPerKWh in {config.price_currency}, "
                            f"got {name} {unit} {scale}",
                            (ev,),
                        )
                    )
                    continue
                factor *= SI_SCALE[scale]
            for iv in _intervals(event, signal, where, ev, issues):
                value = _number(iv.value)
                if value is None:
                    issues.append(
                        Issue(f"{where}.intervals[{iv.index}]", "payload is not a number", (ev,))
                    )
                elif iv.end > now:
                    out.append(PricePoint(iv.start, iv.end, value * factor, ev))
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        issues.append(Issue("event", f"malformed event: {type(exc).__name__}: {exc}", (ev,)))
    return out, issues


def price_series(points: Iterable[PricePoint]) -> PriceSeries:
    """A step-hold :class:`~aggregator.service.replica.PriceSeries` of price points (later starts
    win; the last price holds after its end, as the series has no gaps)."""
    pts = sorted(points, key=lambda p: p.start)
    return PriceSeries(
        start_s=np.array([p.start.timestamp() for p in pts], dtype=np.float64),
        eur_per_mwh=np.array([p.price_eur_per_mwh for p in pts], dtype=np.float64),
    )


# --------------------------------------------------------------------------- opt in/out


def _default_feasibility(limit: DsoLimitMessage) -> str | None:
    if limit.limit_kw < 0:
        return f"limit {limit.limit_kw:g} kW needs export, which gridflex does not promise"
    return None


def decide_opt(
    limits: Sequence[DsoLimitMessage | DsoLimitCancel], feasibility: Feasibility | None = None
) -> tuple[OptType, str]:
    """``("optIn", "")`` when every limit can be complied with, else ``("optOut", reasons)``.

    ``feasibility`` returns why a limit cannot be met (e.g. "below the sum of must-run
    loads") or ``None``; the default accepts every limit of at least 0 kW.
    """
    check = feasibility or _default_feasibility
    reasons = [
        f"{lim.event_id}: {why}"
        for lim in limits
        if isinstance(lim, DsoLimitMessage) and (why := check(lim))
    ]
    return ("optOut", "; ".join(reasons)) if reasons else ("optIn", "")
