"""Pure OSCP ↔ gridflex translation: capacity forecasts → DSO limits, units → kW, the
measurement and adjustment bodies gridflex sends. No I/O, no clock (``now`` is passed in).

Meaning given to a :class:`~adapters.oscp.wire.GroupCapacityForecast`:

* ``group_id`` names a gridflex target through :attr:`OscpConfig.groups` (an unknown group
  is a problem of the body: 400, nothing applied);
* each forecasted block is a cap on net import of that target over
  ``[start_time, end_time)``: **CONSUMPTION** blocks become DSO limits at once;
  **FALLBACK_CONSUMPTION** blocks are kept and become limits only when the CP is silent
  (:mod:`adapters.oscp.provider`); **GENERATION** blocks of a *site* group become caps on
  the site's net export (``direction="export"``: gridflex's export caps exist per site;
  the capacity's size, whatever its sign, as CPs sign generation either way),
  of any other group they are recorded and reported, not applied; **FALLBACK_GENERATION**
  and **OPTIMUM** are recorded and reported, never applied;
* units become kW here, once (:func:`block_kw`): ``KW`` as is, ``W`` / 1000, ``A`` as a
  current per phase — ``A × voltage_v × phases / 1000`` of the group, i.e. a balanced load
  (a block for one phase, ONE/TWO/THREE, is read the same way: gridflex caps a target's
  total, its per-phase caps are the topology's); ``WH`` / ``KWH`` as the block's energy,
  i.e. its average power over the block;
* a block's limit id is ``oscp:<cp>:<group>:<kind>:<index>``, so a new forecast of the same
  group and kind *revises* the limits of the old one by id, and the provider cancels those
  the new one no longer has.

Blocks already over at ``now`` are skipped (not a problem: a CP may resend a day).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Container, Mapping
from datetime import datetime, timedelta
from typing import Final, Literal

from adapters.oscp.config import OscpConfig, OscpGroup
from adapters.oscp.wire import (
    EnergyMeasurement,
    ForecastedBlock,
    ForecastType,
    GroupCapacityForecast,
    Phase,
    UpdateGroupMeasurements,
)
from aggregator.errors import Issue
from aggregator.messages import DsoLimitMessage

__all__ = [
    "APPLIED",
    "FALLBACK",
    "adjust_asks",
    "adjust_request",
    "block_kw",
    "forecast_issues",
    "forecast_limits",
    "group_key",
    "kw_in_unit",
    "limit_id",
    "measurement",
]

APPLIED: Final = frozenset({ForecastType.CONSUMPTION})
FALLBACK: Final = frozenset({ForecastType.FALLBACK_CONSUMPTION})
_SAFE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+=~-]{0,39}$")


def group_key(group_id: str) -> str:
    """An event-id-safe short name of a group (its id when it is one, else a hash)."""
    if _SAFE.fullmatch(group_id):
        return group_id
    return "g" + hashlib.sha256(group_id.encode()).hexdigest()[:16]


def limit_id(config: OscpConfig, group_id: str, kind: str, index: int) -> str:
    return f"oscp:{group_key(config.cp_name)}:{group_key(group_id)}:{kind}:{index}"


def _hours(block: ForecastedBlock) -> float:
    return (block.end_time - block.start_time).total_seconds() / 3600.0


def block_kw(block: ForecastedBlock, group: OscpGroup) -> float:
    """The block's capacity in kW (see the module docstring for each unit)."""
    c = block.capacity
    if block.unit == "KW":
        return c
    if block.unit == "W":
        return c / 1000.0
    if block.unit == "A":
        return c * group.voltage_v * group.phases / 1000.0
    kwh = c / 1000.0 if block.unit == "WH" else c
    return kwh / _hours(block)


def kw_in_unit(kw: float, block: ForecastedBlock, group: OscpGroup) -> float:
    """``kw`` expressed in ``block``'s unit (the inverse of :func:`block_kw`)."""
    if block.unit == "KW":
        return kw
    if block.unit == "W":
        return kw * 1000.0
    if block.unit == "A":
        return kw * 1000.0 / (group.voltage_v * group.phases)
    kwh = kw * _hours(block)
    return kwh * 1000.0 if block.unit == "WH" else kwh


def forecast_issues(fc: GroupCapacityForecast, config: OscpConfig) -> list[Issue]:
    """Every problem of a well-formed forecast (unknown group, empty or negative block)."""
    issues: list[Issue] = []
    ids = (fc.group_id,)
    if fc.group_id not in config.groups:
        issues.append(
            Issue(
                field="group_id",
                code="unknown_group",
                message=f"group {fc.group_id[:60]!r} is not configured",
                ids=ids,
            )
        )
    for i, b in enumerate(fc.forecasted_blocks):
        where = f"forecasted_blocks.{i}"
        if b.end_time <= b.start_time:
            issues.append(
                Issue(
                    field=f"{where}.end_time",
                    code="end_before_start",
                    message="must be after start_time",
                    ids=ids,
                )
            )
        if b.capacity < 0 and fc.type in APPLIED | FALLBACK:
            issues.append(
                Issue(
                    field=f"{where}.capacity",
                    code="negative_capacity",
                    message="an import capacity is at least 0",
                    ids=ids,
                )
            )
    return issues


def forecast_limits(
    fc: GroupCapacityForecast,
    config: OscpConfig,
    now: datetime,
    *,
    kind: str,
    not_before: datetime | None = None,
    direction: Literal["import", "export"] = "import",
) -> list[DsoLimitMessage]:
    """The limits of a checked forecast's blocks that are not over at ``now``; with
    ``not_before`` each starts no earlier than it (a block wholly before it is left out);
    ``direction="export"`` for a GENERATION forecast of a site group."""
    group = config.groups[fc.group_id]
    out: list[DsoLimitMessage] = []
    for i, b in enumerate(fc.forecasted_blocks):
        start = b.start_time if not_before is None else max(b.start_time, not_before)
        if b.end_time <= now or b.end_time <= start:
            continue
        out.append(
            DsoLimitMessage(
                ts=now,
                event_id=limit_id(config, fc.group_id, kind, i),
                target_type=group.type,
                target_id=group.id if group.type != "fleet" else "fleet",
                start=start,
                end=b.end_time,
                # a generation capacity is read by its size: CPs sign it either way
                limit_kw=abs(block_kw(b, group)) if direction == "export" else block_kw(b, group),
                priority=config.priority,
                source=config.source,
                direction=direction,
            )
        )
    return out


def measurement(
    group_id: str, energy_kwh: float, since: datetime, now: datetime
) -> UpdateGroupMeasurements:
    """The group's net import metered since ``since`` (kWh, an accumulating register)."""
    return UpdateGroupMeasurements(
        group_id=group_id,
        measurements=[
            EnergyMeasurement(
                value=round(energy_kwh, 6),
                phase=Phase.ALL,
                unit="KWH",
                direction="NET",
                energy_type="TOTAL",
                measure_time=now,
                initial_measure_time=since,
            )
        ],
    )


def adjust_request(
    fc: GroupCapacityForecast, index: int, needed_kw: float, group: OscpGroup, now: datetime
) -> GroupCapacityForecast:
    """AdjustGroupCapacityForecast: block ``index`` of ``fc`` asked for ``needed_kw`` (in
    the block's own unit) from ``now`` (or its start) to its end."""
    b = fc.forecasted_blocks[index]
    start = max(b.start_time, now.replace(microsecond=0))
    if b.end_time - start < timedelta(seconds=1):
        start = b.start_time
    asked = b.model_copy(update={"start_time": start})
    value = kw_in_unit(needed_kw, asked, group)
    return GroupCapacityForecast(
        group_id=fc.group_id,
        type=ForecastType.CONSUMPTION,
        forecasted_blocks=[asked.model_copy(update={"capacity": round(value, 3)})],
    )


def adjust_asks(
    forecasts: Mapping[tuple[str, ForecastType], tuple[GroupCapacityForecast, int]],
    config: OscpConfig,
    required_kw: Callable[[str], float],
    now: datetime,
    asked: Container[tuple[str, int, int]],
) -> list[tuple[tuple[str, int, int], GroupCapacityForecast]]:
    """The AdjustGroupCapacityForecast requests due: per CONSUMPTION block in force whose
    group needs (``required_kw`` of its target) more than it gives plus the margin, once
    per (group, forecast revision, block) — the keys in ``asked`` are done."""
    asks = []
    for (gid, kind), (fc, rev) in forecasts.items():
        if kind is not ForecastType.CONSUMPTION:
            continue
        group = config.groups[gid]
        need = required_kw(group.id if group.type != "fleet" else "fleet")
        for i, b in enumerate(fc.forecasted_blocks):
            key = (gid, rev, i)
            short = need > block_kw(b, group) + config.adjust_margin_kw
            if short and b.start_time <= now < b.end_time and key not in asked:
                asks.append((key, adjust_request(fc, i, need, group, now)))
    return asks
