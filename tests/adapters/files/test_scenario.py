"""Tests of the scenario-file boundary: the README's example and every way to break one.

The example in ``tests/data/scenarios/rural/`` is the one README.md ("Scenario files")
points to; loading it needs the real SimBench grid (cached once per process).
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from adapters.files.scenario import SESSION_COLUMNS, load_scenario
from aggregator.errors import ConfigError, Issue
from aggregator.limits import TargetType
from aggregator.planning.request import PlanWeights
from aggregator.sim.scenario import Scenario, SessionSpec

EXAMPLE_DIR = Path(__file__).parents[2] / "data" / "scenarios" / "rural"
EXAMPLE = EXAMPLE_DIR / "scenario.yaml"
FEEDER = "1-LV-rural1--0-sw"
START = datetime(2026, 1, 14, 12, tzinfo=UTC)
END = datetime(2026, 1, 15, 8, tzinfo=UTC)


@pytest.fixture(scope="module")
def example() -> Scenario:
    return load_scenario(EXAMPLE)


def _example_doc() -> dict[str, Any]:
    doc = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def _write(folder: Path, doc: Mapping[str, Any], files: Mapping[str, str] | None = None) -> Path:
    for name, text in (files or {}).items():
        (folder / name).write_text(text, encoding="utf-8")
    path = folder / "scenario.yaml"
    path.write_text(yaml.safe_dump(dict(doc), sort_keys=False), encoding="utf-8")
    return path


def _issues(path: Path) -> tuple[Issue, ...]:
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    return info.value.issues


def _has(issues: tuple[Issue, ...], field: str, text: str = "", ids: tuple[str, ...] = ()) -> bool:
    return any(i.field == field and text in i.message and (not ids or i.ids == ids) for i in issues)


def _csv_rows(name: str) -> list[dict[str, str]]:
    with (EXAMPLE_DIR / name).open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# --- the example ---------------------------------------------------------------------------


def test_example_settings_and_topology(example: Scenario) -> None:
    assert example.name == "rural-evening"
    assert example.feeder == FEEDER
    assert (example.start, example.end) == (START, END)
    assert example.start.utcoffset() == timedelta(0) and example.end.utcoffset() == timedelta(0)
    assert example.step_s == 900.0
    assert example.tick_s == 60.0 and example.dispatch_tick_s == 60.0
    assert example.solver == "HIGHS"
    assert example.reserve_kw == 10.0
    assert example.weights == PlanWeights(peak_eur_per_kw=0.05)
    topo = example.topology
    assert [(f.feeder_id, f.limit_kw) for f in topo.feeders] == [(FEEDER, 140.0)]
    assert [(s.site_id, s.bus, s.connection_limit_kw, s.feeder_id) for s in topo.sites] == [
        ("farm", "LV1.101 Bus 4", 44.0, FEEDER),
        ("school", "LV1.101 Bus 9", 60.0, FEEDER),
    ]
    assert example.csms_of_site == {"farm": "csms-a", "school": "csms-b"}
    assert example.validate() == []


def test_example_sessions(example: Scenario) -> None:
    rows = _csv_rows("sessions.csv")
    assert len(example.sessions) == len(rows) == 20
    assert [s.evse_id for s in example.sessions] == [r["evse_id"] for r in rows]
    for s in example.sessions:
        assert s.arrival.tzinfo is not None and s.arrival.utcoffset() == timedelta(0)
        assert s.departure.utcoffset() == timedelta(0)
        assert START <= s.arrival < s.departure <= END
        assert 3.7 <= s.max_power_kw <= 11.0
        assert 0 < s.energy_kwh <= s.max_power_kw * (s.departure - s.arrival).total_seconds() / 3600
    assert {s.site_id for s in example.sessions} == {"farm", "school"}
    v2g = [s for s in example.sessions if s.min_power_kw < 0]
    assert 2 <= len(v2g) <= 3
    # an empty min_power_kw cell means no V2G
    assert sum(s.min_power_kw == 0.0 for s in example.sessions) == 20 - len(v2g)
    first = example.sessions[0]
    assert first == SessionSpec(
        "farm-1", "farm", START, START + timedelta(hours=3.5), 12.0, 11.0, 0.0
    )


def test_example_limits(example: Scenario) -> None:
    assert len(example.limits) == 2
    evening, morning = example.limits
    assert evening.limit.event_id == "evening-1"
    assert evening.limit.target_type is TargetType.FEEDER
    assert evening.limit.target_id == FEEDER
    assert (evening.limit.start, evening.limit.end) == (
        datetime(2026, 1, 14, 17, tzinfo=UTC),
        datetime(2026, 1, 14, 20, tzinfo=UTC),
    )
    assert evening.limit.limit_kw == 40.0
    assert evening.announce_at == datetime(2026, 1, 14, 13, tzinfo=UTC)
    assert evening.announce_at < evening.limit.start
    assert evening.limit.source == "scenario"
    assert morning.limit.target_type is TargetType.SITE and morning.limit.target_id == "school"
    assert morning.announce_at is None  # known from the start


def test_example_series(example: Scenario) -> None:
    freq, price = example.frequency_hz, example.price_eur_per_mwh
    assert freq is not None and price is not None
    minutes = int((END - START).total_seconds() // 60)
    assert len(freq.times_s) == len(freq.values) == minutes + 1
    assert freq.times_s[0] == START.timestamp() and freq.times_s[-1] == END.timestamp()
    assert np.all(np.diff(freq.times_s) == 60.0)
    dev = np.abs(freq.values - 50.0)
    assert np.sum(dev > 0.010) >= 5
    assert np.sum(dev > 0.200) >= 1
    assert np.all(dev < 0.5)
    assert len(price.times_s) == len(price.values) == 20
    assert np.all(np.diff(price.times_s) == 3600.0)
    assert price.times_s[0] == START.timestamp()
    assert float(price.at(START.timestamp() + 1800)) == float(price.values[0])  # step-hold


def test_json_scenario_loads_like_yaml(tmp_path: Path, example: Scenario) -> None:
    for name in ("sessions.csv", "frequency.csv", "prices.csv"):
        shutil.copy(EXAMPLE_DIR / name, tmp_path / name)
    path = tmp_path / "rural.json"
    path.write_text(json.dumps(_example_doc(), default=lambda t: t.isoformat()), "utf-8")
    loaded = load_scenario(path)
    assert loaded.sessions == example.sessions
    assert loaded.limits == example.limits
    assert loaded.topology == example.topology
    assert (loaded.start, loaded.end, loaded.name) == (example.start, example.end, example.name)
    assert loaded.frequency_hz is not None and example.frequency_hz is not None
    assert np.array_equal(loaded.frequency_hz.values, example.frequency_hz.values)


def test_inline_sessions_and_absolute_paths(tmp_path: Path) -> None:
    doc = _example_doc()
    doc["frequency"] = str(EXAMPLE_DIR / "frequency.csv")  # absolute paths stay as they are
    doc["prices"] = str(EXAMPLE_DIR / "prices.csv")
    doc["sessions"] = [
        {
            "evse_id": "farm-1",
            "site_id": "farm",
            "arrival": "2026-01-14T12:00:00Z",
            "departure": "2026-01-14T15:30:00+01:00",
            "energy_kwh": 12,
            "max_power_kw": 11,
        },
        {
            "evse_id": "school-1",
            "site_id": "school",
            "arrival": datetime(2026, 1, 14, 18, tzinfo=UTC),  # a YAML timestamp
            "departure": "2026-01-15T07:00:00Z",
            "energy_kwh": 30.5,
            "max_power_kw": 7.4,
            "min_power_kw": -7.4,
        },
    ]
    scenario = load_scenario(_write(tmp_path, doc))
    assert scenario.sessions == (
        SessionSpec("farm-1", "farm", START, START + timedelta(hours=2.5), 12.0, 11.0, 0.0),
        SessionSpec(
            "school-1",
            "school",
            datetime(2026, 1, 14, 18, tzinfo=UTC),
            datetime(2026, 1, 15, 7, tzinfo=UTC),
            30.5,
            7.4,
            -7.4,
        ),
    )
    assert scenario.frequency_hz is not None and len(scenario.frequency_hz.values) == 1201


# --- broken scenarios: every problem at once ---------------------------------------------------


def test_broken_scenario_reports_every_problem(tmp_path: Path) -> None:
    doc = _example_doc()
    doc["sites"] = [
        {"id": "farm", "bus": "LV1.101 Bus 99", "connection_limit_kw": 44},
        {"id": "school", "bus": "LV1.101 Bus 9", "connection_limit_kw": 60},
    ]
    doc["dso_limits"] = [
        {
            "target": "substation",
            "id": "x",
            "start": "2026-01-14T17:00:00Z",
            "end": "2026-01-14T20:00:00Z",
            "limit_kw": 40,
        },
        {
            "target": "site",
            "id": "pub",
            "start": "2026-01-14T17:00:00Z",
            "end": "2026-01-14T20:00:00Z",
            "limit_kw": 20,
            "event_id": "pub-1",
        },
    ]
    doc["frequency"] = str(EXAMPLE_DIR / "frequency.csv")
    sessions = (
        ",".join(SESSION_COLUMNS) + "\n"
        "ok,school,2026-01-14T12:00:00Z,2026-01-14T15:30:00Z,12,11,\n"
        "naive,school,2026-01-14T12:00:00,2026-01-14T15:30:00Z,12,11,\n"
        "neg,school,2026-01-14T12:00:00Z,2026-01-14T15:30:00Z,-5,11,\n"
        "back,school,2026-01-14T16:00:00Z,2026-01-14T15:30:00Z,5,11,\n"
    )
    prices = "time,price\n2026-01-14T12:00:00Z,50\n"  # the eur_per_mwh column is missing
    issues = _issues(_write(tmp_path, doc, {"sessions.csv": sessions, "prices.csv": prices}))
    assert _has(issues, "placements.bus", "LV1.101 Bus 99", ("farm",))
    assert _has(issues, "sessions.csv:3.arrival", "needs a UTC offset")
    assert _has(issues, "sessions.energy_kwh", "", ("neg",))
    assert _has(issues, "sessions.departure", "after arrival", ("back",))
    assert _has(issues, str(tmp_path / "prices.csv"), "eur_per_mwh")
    assert _has(issues, "dso_limits[0].target", "substation")
    assert _has(issues, "target_id", "unknown site 'pub'", ("pub-1",))
    assert len(issues) == 7, [str(i) for i in issues]  # nothing twice, nothing spurious


def test_missing_session_columns_and_files(tmp_path: Path) -> None:
    doc = _example_doc()
    doc["frequency"] = "no-such-trace.csv"
    doc["prices"] = str(EXAMPLE_DIR / "prices.csv")
    sessions = "evse_id,site_id,arrival,departure,max_power_kw\n"
    issues = _issues(_write(tmp_path, doc, {"sessions.csv": sessions}))
    assert _has(issues, str(tmp_path / "sessions.csv"), "missing columns: energy_kwh")
    assert _has(issues, str(tmp_path / "no-such-trace.csv"), "cannot read")


def test_inline_session_problems(tmp_path: Path) -> None:
    doc = _example_doc()
    for key in ("frequency", "prices"):
        doc.pop(key)
    doc["sessions"] = [
        "farm-1",
        {"evse_id": "a", "site_id": "farm", "arrival": "2026-01-14T12:00:00Z"},
        {
            "evse_id": "b",
            "site_id": "nowhere",
            "arrival": "2026-01-14T12:00:00Z",
            "departure": "2026-01-14T13:00:00Z",
            "energy_kwh": "lots",
            "max_power_kw": 11,
        },
    ]
    issues = _issues(_write(tmp_path, doc))
    assert _has(issues, "sessions[0]", "must be a mapping")
    assert _has(issues, "sessions[1]", "missing departure, energy_kwh, max_power_kw")
    assert _has(issues, "sessions[2].energy_kwh", "not a number")


def test_unknown_weights_key_is_a_config_error(tmp_path: Path) -> None:
    doc = _example_doc()
    doc["weights"] = {"peak_eur_per_kw": 0.05, "bogus_eur": 1.0, "ramp_eur_per_kw": "steep"}
    issues = _issues(_write(tmp_path, doc, _copies()))
    assert _has(issues, "weights", "unknown key 'bogus_eur'")
    assert any("peak_eur_per_kw" in i.message for i in issues)  # lists the known keys
    assert _has(issues, "weights.ramp_eur_per_kw", "not a number")


def _copies() -> dict[str, str]:
    return {
        n: (EXAMPLE_DIR / n).read_text(encoding="utf-8")
        for n in ("sessions.csv", "frequency.csv", "prices.csv")
    }


def test_settings_problems(tmp_path: Path) -> None:
    doc = _example_doc()
    doc["solver"] = "nosuchsolver"
    doc["start"] = "2026-01-14 12:00"  # no offset
    doc["dso_limits"] = [
        {
            "target": "feeder",  # without an id
            "start": "2026-01-14T17:00:00Z",
            "end": "2026-01-14T20:00:00Z",
            "limit_kw": 40,
        }
    ]
    doc["tick_s"] = 1800
    doc.pop("sites")
    issues = _issues(_write(tmp_path, doc, _copies()))
    assert _has(issues, "solver", "NOSUCHSOLVER")
    assert _has(issues, "start", "needs a UTC offset")
    assert _has(issues, "dso_limits[0].id", FEEDER)
    assert _has(issues, "tick_s", "step_s")
    assert _has(issues, "sites", "is required")
    assert _has(issues, "sessions.site_id", "unknown site 'farm'", ("farm-1",))


def test_unknown_feeder_still_checks_the_rest(tmp_path: Path) -> None:
    doc = _example_doc()
    doc["feeder"] = "no-such-grid"
    doc["reserve_kw"] = "ten"
    issues = _issues(_write(tmp_path, doc, _copies()))
    assert _has(issues, "feeder", "unknown feeder spec")
    assert _has(issues, "reserve_kw", "not a number")


@pytest.mark.parametrize(
    ("text", "message"),
    [("- just\n- a list\n", "mapping at the top level"), ("a: [unclosed\n", "cannot read")],
)
def test_unusable_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text, encoding="utf-8")
    issues = _issues(path)
    assert len(issues) == 1 and message in issues[0].message
