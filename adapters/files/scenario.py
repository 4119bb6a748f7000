"""Scenario files: YAML or JSON plus CSVs, parsed into an :class:`aggregator.sim.scenario.Scenario`.

This is a boundary: every problem in the file is collected and raised together as a
:class:`~aggregator.errors.ConfigError`. Relative paths inside the file are resolved
against the file's folder. The format is documented in the README ("Scenario files").
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import yaml

import grid
from aggregator.errors import ConfigError, InvalidInput, Issue
from aggregator.limits import DsoLimit, TargetType
from aggregator.planning.request import PlanWeights
from aggregator.sim.scenario import AnnouncedLimit, Scenario, SessionSpec, TimeSeries
from aggregator.topology import Feeder, Site, Topology

__all__ = [
    "SESSION_COLUMNS",
    "load_scenario",
    "load_scenario_and_feeder",
    "parse_time",
    "read_series_csv",
    "read_sessions_csv",
]

SESSION_COLUMNS = (
    "evse_id",
    "site_id",
    "arrival",
    "departure",
    "energy_kwh",
    "max_power_kw",
    "min_power_kw",
)
_DAY = timedelta(days=1)


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


def _session(row: Any, where: str, issues: list[Issue]) -> SessionSpec | None:
    if not isinstance(row, Mapping):
        issues.append(Issue(where, f"must be a mapping of {', '.join(SESSION_COLUMNS)}"))
        return None
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


def _read_csv(path: Path, issues: list[Issue]) -> tuple[set[str], list[dict[str, Any]]] | None:
    """Columns and rows of a CSV, or ``None`` (and an issue) if unreadable; a BOM is ignored."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows: list[dict[str, Any]] = list(reader)
            return set(reader.fieldnames or ()), rows
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        issues.append(Issue(str(path), f"cannot read: {exc}"))
        return None


def read_sessions_csv(path: Path, issues: list[Issue]) -> list[SessionSpec]:
    """Sessions from a CSV with :data:`SESSION_COLUMNS` (``min_power_kw`` optional)."""
    out: list[SessionSpec] = []
    read = _read_csv(path, issues)
    if read is None:
        return out
    header, body = read
    lacking = [c for c in SESSION_COLUMNS[:6] if c not in header]
    if lacking:
        issues.append(Issue(str(path), f"missing columns: {', '.join(lacking)}"))
        return out
    for i, row in enumerate(body, start=2):
        s = _session(row, f"{path.name}:{i}", issues)
        if s is not None:
            out.append(s)
    return out


def read_series_csv(path: Path, value_col: str, issues: list[Issue]) -> TimeSeries | None:
    """A ``time,<value_col>`` CSV as a step-hold :class:`TimeSeries`."""
    read = _read_csv(path, issues)
    if read is None:
        return None
    header, body = read
    if not {"time", value_col} <= header:
        issues.append(Issue(str(path), f"needs columns time,{value_col}"))
        return None
    times: list[float] = []
    values: list[float] = []
    for i, row in enumerate(body, start=2):
        ts = parse_time(row["time"], f"{path.name}:{i}.time", issues)
        v = _float(row[value_col], f"{path.name}:{i}.{value_col}", issues)
        if ts is not None:
            times.append(ts.timestamp())
            values.append(v)
    return TimeSeries(np.array(times), np.array(values))


def _limits(raw: Any, feeder_id: str, issues: list[Issue]) -> list[AnnouncedLimit]:
    out: list[AnnouncedLimit] = []
    if not isinstance(raw, list):
        issues.append(Issue("dso_limits", "must be a list"))
        return out
    for i, item in enumerate(raw):
        where = f"dso_limits[{i}]"
        if not isinstance(item, Mapping):
            issues.append(Issue(where, "must be a mapping"))
            continue
        n0 = len(issues)
        try:
            target = TargetType(str(item.get("target", "")))
        except ValueError:
            issues.append(
                Issue(f"{where}.target", f"must be site, feeder or fleet: {item.get('target')!r}")
            )
            target = None
        if target is TargetType.FEEDER and item.get("id") in (None, ""):
            issues.append(Issue(f"{where}.id", f"feeder limits need id: {feeder_id}"))
        elif target is TargetType.SITE and item.get("id") in (None, ""):
            issues.append(Issue(f"{where}.id", "site limits need the site's id"))
        start = parse_time(item.get("start"), f"{where}.start", issues)
        end = parse_time(item.get("end"), f"{where}.end", issues)
        ann = item.get("announce_at")
        announce = parse_time(ann, f"{where}.announce_at", issues) if ann is not None else None
        limit = _float(item.get("limit_kw"), f"{where}.limit_kw", issues)
        priority = _float(item.get("priority"), f"{where}.priority", issues, 0.0)
        if len(issues) > n0 or target is None or start is None or end is None:
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
                    priority=int(priority),
                    source=str(item.get("source", "scenario")),
                ),
                announce,
            )
        )
    return out


def _weights(raw: Any, issues: list[Issue]) -> PlanWeights:
    if raw is None:
        return PlanWeights()
    if not isinstance(raw, Mapping):
        issues.append(Issue("weights", "must be a mapping of PlanWeights fields"))
        return PlanWeights()
    known = {f.name for f in dataclasses.fields(PlanWeights)}
    values: dict[str, float] = {}
    for key, value in raw.items():
        if key not in known:
            msg = f"unknown key {key!r}; known: {', '.join(sorted(known))}"
            issues.append(Issue("weights", msg))
            continue
        v = _float(value, f"weights.{key}", issues)
        if math.isfinite(v) and v < 0:
            issues.append(Issue(f"weights.{key}", f"must be ≥ 0, got {v}"))
        values[str(key)] = v
    return PlanWeights(**values)


def _solver(raw: Any, issues: list[Issue]) -> str:
    name = str(raw if raw is not None else "HIGHS").upper()
    import cvxpy  # the planner needs it anyway; imported late to keep this module light

    installed = cvxpy.installed_solvers()
    if name not in installed:
        issues.append(
            Issue("solver", f"not installed: {name!r}; installed: {', '.join(installed)}")
        )
    return name


def _new(found: list[Issue], issues: list[Issue]) -> list[Issue]:
    """``found`` minus issues about a field (and ids) that ``issues`` already reports."""
    seen = {(i.field, i.ids) for i in issues}
    return [i for i in found if (i.field, i.ids) not in seen]


def load_scenario(path: Path) -> Scenario:
    """Read a scenario file; raises :class:`ConfigError` listing every problem."""
    return load_scenario_and_feeder(path)[0]


def load_scenario_and_feeder(path: Path) -> tuple[Scenario, grid.FeederModel]:
    """A scenario file and its feeder model (for grid-aware planning)."""
    issues: list[Issue] = []
    try:
        text = path.read_text(encoding="utf-8")
        doc = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError([Issue(str(path), f"cannot read: {exc}")]) from exc
    if not isinstance(doc, Mapping):
        raise ConfigError([Issue(str(path), "must be a mapping at the top level")])
    base = path.parent
    for key in ("feeder", "start", "end", "sites", "sessions"):
        if doc.get(key) in (None, ""):
            issues.append(Issue(key, "is required"))
    # the feeder: without a usable one, everything else is still checked
    model: grid.FeederModel | None = None
    feeder_spec = str(doc.get("feeder") or "")
    if feeder_spec:
        if feeder_spec.endswith(".json") and not Path(feeder_spec).is_absolute():
            feeder_spec = str(base / feeder_spec)
        try:
            model = grid.load_feeder(feeder_spec)
        except InvalidInput as exc:
            issues.extend(dataclasses.replace(i, field="feeder") for i in exc.issues)
    raw_margin = doc.get("grid_margin")  # per feeder: {loading_pct, voltage_pu}
    if raw_margin is not None and not isinstance(raw_margin, Mapping):
        issues.append(Issue("grid_margin", "must be a mapping (loading_pct, voltage_pu)"))
    elif raw_margin is not None and model is not None:
        d = grid.DEFAULT_MARGIN
        margin = grid.GridMargin(
            loading_pct=_float(
                raw_margin.get("loading_pct"), "grid_margin.loading_pct", issues, d.loading_pct
            ),
            voltage_pu=_float(
                raw_margin.get("voltage_pu"), "grid_margin.voltage_pu", issues, d.voltage_pu
            ),
        )
        issues.extend(margin.validate(grid.GridLimits()))
        model = dataclasses.replace(
            model, margin_loading_pct=margin.loading_pct, margin_voltage_pu=margin.voltage_pu
        )
    feeder_id = model.feeder_id if model is not None else feeder_spec
    placements: list[grid.SitePlacement] = []
    csms: dict[str, str] = {}
    raw_sites = doc.get("sites") or []
    if not isinstance(raw_sites, list):
        issues.append(Issue("sites", "must be a list"))
        raw_sites = []
    for i, s in enumerate(raw_sites):
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
    if model is not None:
        issues.extend(grid.validate_placements(model, placements))
    default_limit = model.limit_kw if model is not None else 1.0  # placeholder: no feeder
    feeder_limit = _float(doc.get("feeder_limit_kw"), "feeder_limit_kw", issues, default_limit)
    topo = Topology(
        feeders=(Feeder(feeder_id or "feeder", feeder_limit, feeder_spec),),
        sites=tuple(
            Site(p.site_id, feeder_id or "feeder", p.connection_limit_kw, p.bus, csms[p.site_id])
            for p in placements
        ),
        fleet_limit_kw=_float(doc.get("fleet_limit_kw"), "fleet_limit_kw", issues, math.inf),
    )
    raw_sessions = doc.get("sessions")
    sessions: list[SessionSpec] = []
    if isinstance(raw_sessions, str):
        sessions = read_sessions_csv(base / raw_sessions, issues)
    elif isinstance(raw_sessions, list):
        sessions = [
            s
            for i, row in enumerate(raw_sessions)
            if (s := _session(row, f"sessions[{i}]", issues)) is not None
        ]
    elif raw_sessions is not None:
        issues.append(Issue("sessions", "must be a CSV file name or a list of sessions"))
    limits = [] if not doc.get("dso_limits") else _limits(doc["dso_limits"], feeder_id, issues)
    freq = read_series_csv(base / doc["frequency"], "hz", issues) if doc.get("frequency") else None
    price = (
        read_series_csv(base / doc["prices"], "eur_per_mwh", issues) if doc.get("prices") else None
    )
    start = parse_time(doc["start"], "start", issues) if doc.get("start") else None
    end = parse_time(doc["end"], "end", issues) if doc.get("end") else None
    tick = doc.get("tick_s")
    scenario = Scenario(
        name=str(doc.get("name", path.stem)),
        feeder=feeder_id,
        topology=topo,
        # placeholders when a time is missing or broken (already reported): one day apart
        start=start or (end - _DAY if end else datetime(1970, 1, 1, tzinfo=UTC)),
        end=end or (start + _DAY if start else datetime(1970, 1, 2, tzinfo=UTC)),
        step_s=_float(doc.get("step_s"), "step_s", issues, 900.0),
        sessions=tuple(sessions),
        limits=tuple(limits),
        frequency_hz=freq,
        price_eur_per_mwh=price,
        reserve_kw=_float(doc.get("reserve_kw"), "reserve_kw", issues, 0.0),
        tick_s=None if tick is None else _float(tick, "tick_s", issues),
        solver=_solver(doc.get("solver"), issues),
        weights=_weights(doc.get("weights"), issues),
        csms_of_site=csms,
    )
    found = scenario.validate()
    if model is not None:  # validate_placements has reported the sites' ids and limits
        found = [i for i in found if i.field not in ("sites.site_id", "sites.connection_limit_kw")]
    issues.extend(_new(found, issues))
    if issues or model is None:
        raise ConfigError(issues)
    return scenario, model
