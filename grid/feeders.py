"""Feeder models: load a distribution grid and describe it in gridflex terms.

This module owns the boundary between pandapower/SimBench and the core. It loads a grid
from a spec (a SimBench code, ``pandapower:<name>`` or a pandapower JSON file), summarises
it as a frozen :class:`FeederModel`, places charging sites on its buses and turns the result
into an :class:`aggregator.topology.Topology`.

Invariants:

* Units: the core speaks kW/kVA; pandapower tables speak MW/MVA. The factor 1000 is
  applied here, once, through :func:`mw_to_kw` / :func:`kw_to_mw`. Positive power =
  import from the grid (loads count positive, generators negative).
* Bus labels: a bus is named by its pandapower ``name`` when that is a non-empty string,
  unique in the bus table and not of the form ``bus<digits>`` (other than its own
  ``bus<index>``); otherwise it is ``bus<index>``. :func:`bus_name`,
  :meth:`FeederModel.bus_names`, :func:`load_buses` and :func:`bus_index` all use this one
  rule, so labels are unique and round-trip.
* Rating: ``rating_kva`` sums the ``sn_mva`` of in-service transformers (``sn_hv_mva`` of
  three-winding ones) whose HV bus is an external-grid bus or fused to one by closed
  bus-bus switches, and that no open transformer switch disconnects. Parallel units are
  summed (no n-1 reserve). Without such a transformer the rating is the thermal rating of
  the in-service lines leaving those buses (the cable heads); failing that, the external
  grid's ``s_sc_max_mva``; failing that, :class:`ConfigError`. ``limit_kw`` is
  ``rating_kva × power_factor``.
* Taps: pandapower ≥ 3 ignores tap positions unless ``tap_changer_type`` is set, and
  SimBench ships transformers with tap data but no type. Every loaded net gets
  ``tap_changer_type = "Ratio"`` where tap position and step are given and the type is
  missing, so tap positions act in power flows.
* Caching: SimBench and pandapower built-in nets are loaded once per process and every
  :func:`load_feeder` call gets its own deep copy; callers may mutate ``model.net``.
"""

from __future__ import annotations

import copy
import functools
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pandapower.topology as ppt
import simbench as sb
from numpy.typing import NDArray

from aggregator.errors import ConfigError, InvalidInput, Issue
from aggregator.topology import Feeder, Site, Topology

MW_PER_KW = 1e-3
KW_PER_MW = 1e3
DEFAULT_POWER_FACTOR = 0.95
PROFILE_STEP_MIN = 15
"""SimBench profiles: one value per 15 minutes over the leap year 2016 (35 136 steps)."""
SITE_LIMIT_STEP_KW = 5.0
PANDAPOWER_PREFIX = "pandapower:"
_KERBER: tuple[str, ...] = ("landnetz_freileitung_1", "landnetz_freileitung_2", "dorfnetz")
_KERBER += ("landnetz_kabel_1", "landnetz_kabel_2", "vorstadtnetz_kabel_1", "vorstadtnetz_kabel_2")
PANDAPOWER_NETWORKS: dict[str, str] = {
    "cigre_lv": "create_cigre_network_lv",
    "cigre_mv": "create_cigre_network_mv",
    **{f"kerber_{k}": f"create_kerber_{k}" for k in _KERBER},
}
"""Names accepted after ``pandapower:`` → the ``pandapower.networks`` function building it."""
# default margins plans keep below loading ratings (pp) and inside the voltage band (pu)
MARGIN_LOADING_PCT, MARGIN_VOLTAGE_PU = 3.0, 0.005

_FALLBACK_LABEL = re.compile(r"bus\d+")
_VOLTAGE_RTOL = 1e-6
# Power-balance sign of each element table: positive = consumption (import).
_ELEMENT_SIGNS = (("load", 1.0), ("sgen", -1.0), ("gen", -1.0), ("storage", 1.0))


def kw_to_mw(power_kw: float) -> float:
    """Convert kW (gridflex) to MW (pandapower); also kVA → MVA."""
    return power_kw * MW_PER_KW


def mw_to_kw(power_mw: float) -> float:
    """Convert MW (pandapower) to kW (gridflex); also MVA → kVA."""
    return power_mw * KW_PER_MW


@dataclass(frozen=True)
class FeederModel:
    """A loaded grid with the few numbers gridflex needs; ``net`` is the pandapower net."""

    feeder_id: str
    source: str
    net: Any = field(compare=False, repr=False)
    rating_kva: float
    limit_kw: float
    voltage_level_kv: float
    buses: int
    lines: int
    margin_loading_pct: float = MARGIN_LOADING_PCT  # per feeder: grid.model.GridMargin
    margin_voltage_pu: float = MARGIN_VOLTAGE_PU

    @cached_property
    def _labels(self) -> dict[int, str]:
        return _bus_labels(self.net)

    @cached_property
    def _label_index(self) -> dict[str, int]:
        return {label: idx for idx, label in self._labels.items()}

    def bus_names(self) -> tuple[str, ...]:
        """Labels of all buses, in the order of the pandapower bus table."""
        return tuple(self._labels.values())


@dataclass(frozen=True)
class SitePlacement:
    """A charging site attached to a bus (by label) with its connection limit in kW."""

    site_id: str
    bus: str
    connection_limit_kw: float


def _bus_labels(net: Any) -> dict[int, str]:
    names = list(net.bus["name"])
    counts = Counter(n for n in names if isinstance(n, str))
    labels: dict[int, str] = {}
    for idx, name in zip((int(i) for i in net.bus.index), names, strict=True):
        own = isinstance(name, str) and name != "" and counts[name] == 1
        if own and _FALLBACK_LABEL.fullmatch(name) and name != f"bus{idx}":
            own = False  # would shadow another bus's fallback label
        labels[idx] = name if own else f"bus{idx}"
    return labels


def bus_name(net: Any, idx: int) -> str:
    """The gridflex label of pandapower bus ``idx`` (see the module docstring for the rule)."""
    if idx not in net.bus.index:
        raise InvalidInput([Issue("bus", f"no bus with index {idx}", (str(idx),))])
    return _bus_labels(net)[int(idx)]


def bus_index(model: FeederModel, name: str) -> int:
    """The pandapower bus index labelled ``name``; :class:`InvalidInput` if there is none."""
    try:
        return model._label_index[name]
    except KeyError:
        msg = f"unknown bus in feeder {model.feeder_id!r}"
        raise InvalidInput([Issue("bus", msg, (name,))]) from None


def _accepted_forms() -> str:
    names = ", ".join(sorted(PANDAPOWER_NETWORKS))
    return (
        "accepted forms: a SimBench code (e.g. '1-LV-rural1--0-sw'), "
        f"'{PANDAPOWER_PREFIX}<name>' with name one of {names}, "
        "or a path to a pandapower JSON file ending in '.json'"
    )


@functools.cache
def _simbench_codes() -> frozenset[str]:
    return frozenset(str(c) for c in sb.collect_all_simbench_codes())


@functools.lru_cache(maxsize=16)
def _pristine_net(spec: str) -> Any:
    """The shared net of a SimBench code or pandapower built-in: deep-copy before use."""
    if spec.startswith(PANDAPOWER_PREFIX):
        net = getattr(pn, PANDAPOWER_NETWORKS[spec.removeprefix(PANDAPOWER_PREFIX)])()
    else:
        net = sb.get_simbench_net(spec)
    _set_tap_changer_type(net)
    return net


def _set_tap_changer_type(net: Any) -> None:
    """Mark tap changers pandapower ≥ 3 would otherwise ignore as ``"Ratio"``."""
    for table_name in ("trafo", "trafo3w"):
        table = net[table_name]
        cols = {"tap_pos", "tap_step_percent", "tap_changer_type"}
        if table.empty or not cols <= set(table.columns):
            continue
        missing = table["tap_changer_type"].isna() | (table["tap_changer_type"] == "")
        fix = missing & table["tap_pos"].notna() & table["tap_step_percent"].notna()
        if fix.any():
            table["tap_changer_type"] = table["tap_changer_type"].astype(object)
            table.loc[fix, "tap_changer_type"] = "Ratio"


def _load_net(spec: str) -> tuple[Any, str]:
    """The net for ``spec`` (caller's own copy) and the default feeder id."""
    if spec.lower().endswith(".json"):
        path = Path(spec)
        if not path.is_file():
            raise ConfigError([Issue("spec", "no such pandapower JSON file", (spec,))])
        try:
            net = pp.from_json(str(path))
        except Exception as exc:
            msg = f"cannot read pandapower JSON: {exc}"
            raise ConfigError([Issue("spec", msg, (spec,))]) from exc
        _set_tap_changer_type(net)
        return net, path.stem
    if spec.startswith(PANDAPOWER_PREFIX):
        name = spec.removeprefix(PANDAPOWER_PREFIX)
        if name in PANDAPOWER_NETWORKS:
            return copy.deepcopy(_pristine_net(spec)), name
    elif spec in _simbench_codes():
        return copy.deepcopy(_pristine_net(spec)), spec
    msg = f"unknown feeder spec; {_accepted_forms()}"
    raise ConfigError([Issue("spec", msg, (spec,))])


def _slack_buses(net: Any) -> set[int]:
    """External-grid buses plus every bus fused to them by closed bus-bus switches."""
    eg = net.ext_grid
    found = {int(b) for b in eg.loc[eg["in_service"].astype(bool), "bus"]}
    sw = net.switch
    couplers = sw[(sw["et"] == "b") & sw["closed"].astype(bool)]
    neighbours: dict[int, set[int]] = {}
    for a, b in zip(couplers["bus"], couplers["element"], strict=True):
        neighbours.setdefault(int(a), set()).add(int(b))
        neighbours.setdefault(int(b), set()).add(int(a))
    todo = list(found)
    while todo:
        for nxt in neighbours.get(todo.pop(), set()) - found:
            found.add(nxt)
            todo.append(nxt)
    return found


def _supply_rating(net: Any, spec: str) -> tuple[float, float]:
    """``(rating_mva, lv_voltage_kv)`` of the feeder; see the module docstring."""
    slack = _slack_buses(net)
    if not slack:
        raise ConfigError([Issue("spec", "the net has no in-service external grid", (spec,))])
    sw = net.switch
    open_sw = sw[~sw["closed"].astype(bool)]
    rating_mva = 0.0
    levels: list[float] = []
    for table_name, et, size_col, down_col in (
        ("trafo", "t", "sn_mva", "lv_bus"),
        ("trafo3w", "t3", "sn_hv_mva", "mv_bus"),
    ):
        table = net[table_name]
        if table.empty:
            continue
        cut = set(open_sw.loc[open_sw["et"] == et, "element"])
        mask = table["in_service"].astype(bool) & table["hv_bus"].isin(slack)
        mask &= ~table.index.isin(cut)
        rating_mva += float(table.loc[mask, size_col].sum())
        levels += [float(v) for v in net.bus.loc[table.loc[mask, down_col], "vn_kv"]]
    if rating_mva > 0:
        return rating_mva, max(levels)
    level_kv = max(float(net.bus.at[b, "vn_kv"]) for b in slack)
    ln = net.line
    at_slack = ln["from_bus"].isin(slack) | ln["to_bus"].isin(slack)
    heads = ln[ln["in_service"].astype(bool) & at_slack]
    vn_kv = net.bus.loc[heads["from_bus"], "vn_kv"].to_numpy(dtype=float)
    amps_ka = (heads["max_i_ka"] * heads["df"] * heads["parallel"]).to_numpy(dtype=float)
    rating_mva = float(np.nansum(math.sqrt(3.0) * vn_kv * amps_ka))
    if rating_mva > 0:
        return rating_mva, level_kv
    s_sc = net.ext_grid.get("s_sc_max_mva")
    if s_sc is not None and np.isfinite(s_sc.to_numpy(dtype=float)).any():
        return float(np.nansum(s_sc.to_numpy(dtype=float))), level_kv
    msg = "no supply transformer, cable head or ext_grid s_sc_max_mva to rate the feeder"
    raise ConfigError([Issue("spec", msg, (spec,))])


def load_feeder(
    spec: str, *, feeder_id: str | None = None, power_factor: float = DEFAULT_POWER_FACTOR
) -> FeederModel:
    """Load the grid named by ``spec`` (SimBench code, ``pandapower:<name>`` or ``*.json``).

    ``feeder_id`` defaults to the SimBench code, the pandapower network name or the JSON
    file's stem. Raises :class:`ConfigError` for an unknown spec or an unusable net.
    """
    if not (math.isfinite(power_factor) and 0.0 < power_factor <= 1.0):
        raise ConfigError([Issue("power_factor", f"must be in (0, 1], got {power_factor}")])
    net, default_id = _load_net(spec)
    rating_mva, level_kv = _supply_rating(net, spec)
    rating_kva = mw_to_kw(rating_mva)
    return FeederModel(
        feeder_id=feeder_id if feeder_id is not None else default_id,
        source=spec,
        net=net,
        rating_kva=rating_kva,
        limit_kw=rating_kva * power_factor,
        voltage_level_kv=level_kv,
        buses=len(net.bus),
        lines=len(net.line),
    )


def _load_bus_indices(net: Any) -> list[int]:
    return sorted({int(b) for b in net.load.loc[net.load["in_service"].astype(bool), "bus"]})


def load_buses(model: FeederModel) -> tuple[str, ...]:
    """Labels of buses with at least one in-service load, by ascending bus index."""
    return tuple(model._labels[b] for b in _load_bus_indices(model.net))


def _unsupplied(net: Any) -> set[int]:
    """Buses with no closed path to an external grid, plus out-of-service buses."""
    out = {int(b) for b in ppt.unsupplied_buses(net)}
    return out | {int(b) for b in net.bus.index[~net.bus["in_service"].astype(bool)]}


def _above_level(model: FeederModel, idx: int) -> bool:
    vn_kv = float(model.net.bus.at[idx, "vn_kv"])
    return vn_kv > model.voltage_level_kv * (1.0 + _VOLTAGE_RTOL)


def place_sites(
    model: FeederModel,
    n_sites: int,
    *,
    seed: int = 0,
    connection_limit_kw: tuple[float, float] = (50.0, 200.0),
    prefix: str = "site",
) -> tuple[SitePlacement, ...]:
    """Place ``n_sites`` sites on load buses, deterministically for a given ``seed``.

    Candidates are the load buses that :func:`validate_placements` accepts (supplied, at or
    below the feeder's voltage level). Buses are drawn without replacement while possible;
    beyond that each further round is a fresh permutation. Limits are uniform in
    ``connection_limit_kw`` and rounded to a multiple of 5 kW (kept inside the range when
    it contains one). Ids are ``<prefix>-001``, ``<prefix>-002``, ...
    """
    lo, hi = connection_limit_kw
    issues: list[Issue] = []
    if n_sites < 0:
        issues.append(Issue("n_sites", f"must be ≥ 0, got {n_sites}"))
    if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 < lo <= hi):
        issues.append(Issue("connection_limit_kw", f"need finite 0 < low ≤ high, got {lo, hi}"))
    dead = _unsupplied(model.net)
    buses = _load_bus_indices(model.net)
    candidates = [b for b in buses if b not in dead and not _above_level(model, b)]
    if n_sites > 0 and not candidates:
        issues.append(Issue("n_sites", "the feeder has no supplied load bus to place sites on"))
    if issues:
        raise InvalidInput(issues)
    rng = np.random.default_rng(seed)
    picks: list[int] = []
    while len(picks) < n_sites:
        take = min(n_sites - len(picks), len(candidates))
        picks += [candidates[i] for i in rng.choice(len(candidates), size=take, replace=False)]
    limits_kw = (
        np.round(rng.uniform(lo, hi, size=n_sites) / SITE_LIMIT_STEP_KW) * SITE_LIMIT_STEP_KW
    )
    lo_step = math.ceil(lo / SITE_LIMIT_STEP_KW) * SITE_LIMIT_STEP_KW
    hi_step = math.floor(hi / SITE_LIMIT_STEP_KW) * SITE_LIMIT_STEP_KW
    if lo_step <= hi_step:
        limits_kw = np.clip(limits_kw, lo_step, hi_step)
    limits_kw = np.maximum(limits_kw, SITE_LIMIT_STEP_KW)
    return tuple(
        SitePlacement(f"{prefix}-{i + 1:03d}", model._labels[bus], float(limit))
        for i, (bus, limit) in enumerate(zip(picks, limits_kw, strict=True))
    )


def validate_placements(model: FeederModel, placements: Sequence[SitePlacement]) -> list[Issue]:
    """Every problem with ``placements`` on ``model``, as values (empty list = usable).

    Reports empty or duplicate site ids, non-finite or non-positive limits, unknown bus
    labels, buses with no path to the external grid and buses above the feeder's voltage
    level (upstream of its supply transformer).
    """
    issues: list[Issue] = []
    seen: set[str] = set()
    on_known_bus: list[tuple[SitePlacement, int]] = []
    for p in placements:
        ids = (p.site_id,)
        if not p.site_id:
            issues.append(Issue("placements.site_id", "must not be empty"))
        elif p.site_id in seen:
            issues.append(Issue("placements.site_id", "duplicate site id", ids))
        seen.add(p.site_id)
        if not (math.isfinite(p.connection_limit_kw) and p.connection_limit_kw > 0):
            msg = f"must be finite and > 0, got {p.connection_limit_kw}"
            issues.append(Issue("placements.connection_limit_kw", msg, ids))
        idx = model._label_index.get(p.bus)
        if idx is None:
            msg = f"unknown bus {p.bus!r} in feeder {model.feeder_id!r}"
            issues.append(Issue("placements.bus", msg, ids))
        else:
            on_known_bus.append((p, idx))
    if on_known_bus:
        unsupplied = _unsupplied(model.net)
        for p, idx in on_known_bus:
            if idx in unsupplied:
                msg = f"bus {p.bus!r} has no path to the external grid"
                issues.append(Issue("placements.bus", msg, (p.site_id,)))
            if _above_level(model, idx):
                msg = f"bus {p.bus!r} is above the feeder's {model.voltage_level_kv} kV level"
                issues.append(Issue("placements.bus", msg, (p.site_id,)))
    return issues


def to_topology(
    model: FeederModel, placements: Sequence[SitePlacement], *, csms_id: str = "csms"
) -> Topology:
    """One :class:`Feeder` (limit ``model.limit_kw``) and the placed sites, with buses."""
    feeder = Feeder(model.feeder_id, model.limit_kw, name=model.source)
    sites = tuple(
        Site(p.site_id, model.feeder_id, p.connection_limit_kw, bus=p.bus, csms_id=csms_id)
        for p in placements
    )
    return Topology(feeders=(feeder,), sites=sites)


def _profiled_mw(net: Any, element: str, table: Any) -> NDArray[np.float64] | None:
    """Σ of SimBench absolute ``p_mw`` profiles of ``table``'s rows per step, or None."""
    view = copy.copy(net)  # shallow: only this element table is swapped
    view[element] = table
    try:
        frame = sb.get_absolute_profiles_from_relative_profiles(view, element, "p_mw")
    except (KeyError, ValueError):  # no (complete) profiles for this element type
        return None
    return np.asarray(frame.to_numpy(dtype=float).sum(axis=1)) if len(frame) else None


def _net_series_kw(net: Any) -> NDArray[np.float64]:
    """Net import (kW) per profile step (one step when the net has no profiles).

    Rows are first summed per profile name (weighted by sign, ``in_service``, ``scaling``),
    so SimBench scales one row per profile: identical result, memory steps × profiles
    instead of steps × elements (~3 GB per table for the 10 000-bus MVLV grids). Rows and
    element types without a profile contribute their static ``p_mw`` at every step.
    """
    static_mw = 0.0
    parts: list[NDArray[np.float64]] = []
    profiles = isinstance(net.get("profiles"), dict)
    for element, sign in _ELEMENT_SIGNS:
        table = net[element]
        if table.empty:
            continue
        cols = ("p_mw", "in_service", "scaling")
        p_mw = sign * np.prod([table[c].to_numpy(dtype=float) for c in cols], axis=0)
        names = table["profile"] if profiles and "profile" in table.columns else [None] * len(p_mw)
        per_profile: dict[str, float] = {}
        first_row: dict[str, Any] = {}
        for row, name, value in zip(table.index, names, p_mw, strict=True):
            if isinstance(name, str) and name:
                per_profile[name] = per_profile.get(name, 0.0) + float(value)
                first_row.setdefault(name, row)
            else:
                static_mw += float(value)
        if per_profile:
            grouped = table.loc[list(first_row.values())].copy()
            grouped["p_mw"] = list(per_profile.values())
            series = _profiled_mw(net, element, grouped)
            if series is None:
                static_mw += sum(per_profile.values())
            else:
                parts.append(series)
    n_steps = max((len(a) for a in parts), default=1)
    if any(len(a) != n_steps for a in parts):
        raise ConfigError([Issue("profiles", "profile tables differ in length")])
    return (np.full(n_steps, static_mw) + sum(parts, np.zeros(n_steps))) * KW_PER_MW


@functools.lru_cache(maxsize=8)
def _simbench_series_kw(code: str) -> NDArray[np.float64]:
    series = _net_series_kw(_pristine_net(code))
    series.setflags(write=False)
    return series


def _profile_step(t: datetime, n_steps: int) -> int:
    utc = t.astimezone(UTC)
    minute_of_year = (utc.timetuple().tm_yday - 1) * 1440 + utc.hour * 60 + utc.minute
    return (minute_of_year // PROFILE_STEP_MIN) % n_steps


def background_load_kw(model: FeederModel, times: Sequence[datetime]) -> NDArray[np.float64]:
    """Net import (kW) of the feeder's own loads and generation at each aware time.

    SimBench nets use their 15-min profiles of 2016: a time maps to step
    ``(minute-of-year // 15) mod n_steps`` by its UTC day-of-year and time of day (year
    ignored: in other years dates from March on meet the profile of the previous date).
    The series of a SimBench code is computed once per process from the pristine net, so
    later edits of ``model.net`` do not change it; JSON nets with profiles are computed
    per call; nets without profiles give the static ``p_mw`` balance at every time.
    """
    naive = tuple(str(i) for i, t in enumerate(times) if t.utcoffset() is None)
    if naive:
        raise InvalidInput([Issue("times", "must be timezone-aware", naive)])
    if model.source in _simbench_codes():
        series = _simbench_series_kw(model.source)
    else:
        series = _net_series_kw(model.net)
    steps = np.array([_profile_step(t, len(series)) for t in times], dtype=np.intp)
    return np.asarray(series[steps], dtype=np.float64)
