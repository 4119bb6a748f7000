"""Scenario files: YAML or JSON plus CSVs, parsed into an :class:`aggregator.scenario.Scenario`.

This is a boundary: every problem in the file is collected and raised together as a
:class:`~aggregator.errors.ConfigError`. Relative paths inside the file are resolved
against the file's folder. The format is documented in the README ("Scenario files").
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

import grid
from aggregator.errors import ConfigError, Issue
from aggregator.limits import DsoLimit, TargetType
from aggregator.planning import PlanWeights
from aggregator.scenario import AnnouncedLimit, Scenario, SessionSpec, TimeSeries
from aggregator.topology import Feeder, Site, Topology

__all__ = ["SESSION_COLUMNS", "load_scenario", "parse_time", "read_series_csv", "read_sessions_csv"]

SESSION_COLUMNS = (
    "evse_id",
    "site_id",
    "arrival",
    "departure",
    "energy_kwh",
    "max_power_kw",
    "min_power_kw",
)


def parse_time(value: Any, field: str, issues: list[Issue]) -> datetime | None:
    """ISO 8601 with an offset (``Z`` allowed) → UTC datetime; records an issue otherwise."""
    if isinstance(value, datetime):
        ts = value
    else:
        try:
            ts = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            issues.append(Issue(field, f"not an ISO 8601 time: {value!r}"))
            return None
    if ts.tzinfo is None:
        issues.append(Issue(field, f"needs a UTC offset (e.g. 'Z'): {value!r}"))
        return None
    return ts.astimezone(UTC)


def _float(value: Any, field: str, issues: list[Issue], default: float | None = None) -> float:
    if (value is None or value == "") and default is not None:
        return default
    try:
        f = float(value)
    except (TypeError, ValueError):
        issues.append(Issue(field, f"not a number: {value!r}"))
        return math.nan
    if not math.isfinite(f):
        issues.append(Issue(field, f"must be finite: {value!r}"))
    return f


def _session(row: Mapping[str, Any], where: str, issues: list[Issue]) -> SessionSpec | None:
    missing = [c for c in SESSION_COLUMNS[:6] if row.get(c) in (None, "")]
    if missing:
        issues.append(Issue(where, f"missing {', '.join(missing)}"))
        return None
    n0 = len(issues)
    arrival = parse_time(row["arrival"], f"{where}.arrival", issues)
    departure = parse_time(row["departure"], f"{where}.departure", issues)
    spec = SessionSpec(
        evse_id=str(row["evse_id"]),
        site_id=str(row["site_id"]),
        arrival=arrival or datetime.min.replace(tzinfo=UTC),
        departure=departure or datetime.min.replace(tzinfo=UTC),
        energy_kwh=_float(row["energy_kwh"], f"{where}.energy_kwh", issues),
        max_power_kw=_float(row["max_power_kw"], f"{where}.max_power_kw", issues),
        min_power_kw=_float(row.get("min_power_kw"), f"{where}.min_power_kw", issues, 0.0),
    )
    return spec if len(issues) == n0 else None


def read_sessions_csv(path: Path, issues: list[Issue]) -> list[SessionSpec]:
    """Sessions from a CSV with :data:`SESSION_COLUMNS` (``min_power_kw`` optional)."""
    out: list[SessionSpec] = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or ())
        lacking = [c for c in SESSION_COLUMNS[:6] if c not in cols]
        if lacking:
            issues.append(Issue(str(path), f"missing columns: {', '.join(lacking)}"))
            return out
        for i, row in enumerate(reader, start=2):
            s = _session(row, f"{path.name}:{i}", issues)
            if s is not None:
                out.append(s)
    return out


def read_series_csv(path: Path, value_col: str, issues: list[Issue]) -> TimeSeries | None:
    """A ``time,<value_col>`` CSV as a step-hold :class:`TimeSeries`."""
    times: list[float] = []
    values: list[float] = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not {"time", value_col} <= set(reader.fieldnames or ()):
            issues.append(Issue(str(path), f"needs columns time,{value_col}"))
            return None
        for i, row in enumerate(reader, start=2):
            ts = parse_time(row["time"], f"{path.name}:{i}.time", issues)
            v = _float(row[value_col], f"{path.name}:{i}.{value_col}", issues)
            if ts is not None:
                times.append(ts.timestamp())
                values.append(v)
    return TimeSeries(np.array(times), np.array(values))


def _limits(raw: Any, issues: list[Issue]) -> list[AnnouncedLimit]:
    out: list[AnnouncedLimit] = []
    for i, item in enumerate(raw or []):
        where = f"dso_limits[{i}]"
        if not isinstance(item, Mapping):
            issues.append(Issue(where, "must be a mapping"))
            continue
        try:
            target = TargetType(str(item.get("target", "")))
        except ValueError:
            issues.append(Issue(f"{where}.target", "must be site, feeder or fleet"))
            continue
        start = parse_time(item.get("start"), f"{where}.start", issues)
        end = parse_time(item.get("end"), f"{where}.end", issues)
        ann = item.get("announce_at")
        announce = parse_time(ann, f"{where}.announce_at", issues) if ann is not None else None
        limit = _float(item.get("limit_kw"), f"{where}.limit_kw", issues)
        if start is None or end is None:
            continue
        out.append(
            AnnouncedLimit(
                DsoLimit(
                    event_id=str(item.get("event_id", f"limit-{i}")),
                    target_type=target,
                    target_id=str(item.get("id", "fleet")),
                    start=start,
                    end=end,
                    limit_kw=limit,
                    priority=int(item.get("priority", 0)),
                    source=str(item.get("source", "scenario")),
                ),
                announce,
            )
        )
    return out


def load_scenario(path: Path) -> Scenario:
    """Read a scenario file; raises :class:`ConfigError` listing every problem."""
    issues: list[Issue] = []
    try:
        text = path.read_text(encoding="utf-8")
        doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError([Issue(str(path), f"cannot read: {exc}")]) from exc
    if not isinstance(doc, Mapping):
        raise ConfigError([Issue(str(path), "must be a mapping at the top level")])
    base = path.parent
    for key in ("feeder", "start", "end", "sites", "sessions"):
        if key not in doc:
            issues.append(Issue(key, "is required"))
    if issues:
        raise ConfigError(issues)
    feeder_spec = str(doc["feeder"])
    if feeder_spec.endswith(".json") and not Path(feeder_spec).is_absolute():
        feeder_spec = str(base / feeder_spec)
    model = grid.load_feeder(feeder_spec)
    placements: list[grid.SitePlacement] = []
    csms: dict[str, str] = {}
    for i, s in enumerate(doc.get("sites") or []):
        if not isinstance(s, Mapping) or "id" not in s or "bus" not in s:
            issues.append(Issue(f"sites[{i}]", "needs id, bus and connection_limit_kw"))
            continue
        placements.append(
            grid.SitePlacement(
                str(s["id"]),
                str(s["bus"]),
                _float(s.get("connection_limit_kw"), f"sites[{i}].connection_limit_kw", issues),
            )
        )
        csms[str(s["id"])] = str(s.get("csms", "csms"))
    issues.extend(grid.validate_placements(model, placements))
    feeder_limit = _float(doc.get("feeder_limit_kw"), "feeder_limit_kw", issues, model.limit_kw)
    topo = Topology(
        feeders=(Feeder(model.feeder_id, feeder_limit, model.source),),
        sites=tuple(
            Site(p.site_id, model.feeder_id, p.connection_limit_kw, p.bus, csms[p.site_id])
            for p in placements
        ),
        fleet_limit_kw=_float(doc.get("fleet_limit_kw"), "fleet_limit_kw", issues, math.inf),
    )
    raw_sessions = doc["sessions"]
    if isinstance(raw_sessions, str):
        sessions = read_sessions_csv(base / raw_sessions, issues)
    else:
        sessions = [
            s
            for i, row in enumerate(raw_sessions or [])
            if (s := _session(row, f"sessions[{i}]", issues)) is not None
        ]
    limits = [] if not doc.get("dso_limits") else _limits(doc["dso_limits"], issues)
    for al in limits:  # "feeder" without an id means this scenario's feeder
        if al.limit.target_type is TargetType.FEEDER and al.limit.target_id == "fleet":
            issues.append(Issue("dso_limits.id", f"feeder limits need id: {model.feeder_id}"))
    freq = read_series_csv(base / doc["frequency"], "hz", issues) if doc.get("frequency") else None
    price = (
        read_series_csv(base / doc["prices"], "eur_per_mwh", issues) if doc.get("prices") else None
    )
    start = parse_time(doc["start"], "start", issues)
    end = parse_time(doc["end"], "end", issues)
    if issues or start is None or end is None:
        raise ConfigError(issues)
    scenario = Scenario(
        name=str(doc.get("name", path.stem)),
        feeder=model.feeder_id,
        topology=topo,
        start=start,
        end=end,
        step_s=_float(doc.get("step_s"), "step_s", issues, 900.0),
        sessions=tuple(sessions),
        limits=tuple(limits),
        frequency_hz=freq,
        price_eur_per_mwh=price,
        reserve_kw=_float(doc.get("reserve_kw"), "reserve_kw", issues, 0.0),
        tick_s=None if doc.get("tick_s") is None else _float(doc["tick_s"], "tick_s", issues),
        solver=str(doc.get("solver", "HIGHS")).upper(),
        weights=PlanWeights(**dict(doc.get("weights") or {})),
        csms_of_site=csms,
    )
    issues.extend(scenario.validate())
    if issues:
        raise ConfigError(issues)
    return scenario
