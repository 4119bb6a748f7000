"""AC power-flow validation of a plan over a horizon: loadings and voltages per step.

This module owns the time-series AC power flow of a :class:`~grid.feeders.FeederModel`:
loads and static generators follow their SimBench profiles (:func:`background_pq_mw`),
extra active power (EV charging) is added per bus, and one of two engines solves all steps:

* ``"pgm"``: power-grid-model, one batch call on all hardware threads (iterative current:
  one factorisation for all steps, ~1e-10 pu from Newton-Raphson, which retries any step
  it cannot solve). The net is converted once with power-grid-model-io's
  ``PandaPowerConverter`` and cached while a fingerprint of its structure is unchanged.
* ``"pandapower"``: a loop of ``pandapower.runpp(numba=False)`` on a copy of the net.

Stated tolerance (tested on three SimBench grids, with and without heavy EV load): the
engines agree within :data:`VM_TOLERANCE_PU` on voltages and :data:`LOADING_TOLERANCE_PCT`
percentage points on loadings; measured ≤ 2.3e-6 pu / 0.0011 pp up to 440 % trafo loading
and 6.7e-6 pu / 0.006 pp at 650 % (0.74 pu). The residual is pandapower's T transformer
model vs power-grid-model's π model.

Invariants:

* Units: kW in (``extra_kw``), MW in pandapower and :func:`background_pq_mw`, W in
  power-grid-model. Positive = import (load); sgen values are positive feed-in.
* Results follow pandapower table order (bus, line, two-winding trafo). Buses carry their
  gridflex labels; lines and trafos their unique non-empty ``name``, else
  ``line<index>``/``trafo<index>``. Unsupplied buses have NaN voltage and branches that
  touch one NaN loading; a step that does not converge is ``converged=False``, NaN
  everywhere and a ``not_converged`` violation.
* power-grid-model pitfalls handled: an empty ``vector_group`` (the converter fails) is
  derived from ``shift_degree`` (odd clock → ``Dyn<clock>``, even → ``YNyn<clock>``); the
  external grid gets :data:`IDEAL_SOURCE_SC_MVA` to act as pandapower's ideal source. Taps
  act in both engines because :func:`~grid.feeders.load_feeder` sets ``tap_changer_type``.
* ``gen``, ``storage`` and other elements keep their static values in both engines;
  three-winding transformers are solved but not reported.
"""

from __future__ import annotations

import copy
import functools
import math
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pandapower as pp
import pandas as pd
from numpy.typing import NDArray
from power_grid_model import CalculationMethod, ComponentType, DatasetType, PowerGridModel
from power_grid_model import initialize_array as pgm_array
from power_grid_model.errors import IterationDiverge, MaxIterationReached, SparseMatrixError
from power_grid_model_io.converters import PandaPowerConverter

from aggregator.errors import ConfigError, InvalidInput, Issue
from grid import feeders
from grid.feeders import MW_PER_KW, FeederModel, bus_index
from grid.netinfo import net_fingerprint, net_labels

__all__ = ["IDEAL_SOURCE_SC_MVA", "LOADING_TOLERANCE_PCT", "VM_TOLERANCE_PU", "GridLimits"]
__all__ += ["PowerFlowResult", "Violation", "background_pq_mw", "net_fingerprint", "run_timeseries"]

VM_TOLERANCE_PU = 1e-5
"""Stated agreement of the two engines on bus voltage magnitude (pu)."""
LOADING_TOLERANCE_PCT = 0.01
"""Stated agreement of the two engines on line/trafo loading (percentage points)."""
IDEAL_SOURCE_SC_MVA = 1e12
"""Short-circuit power given to external grids in power-grid-model (≈ ideal source)."""

Engine = Literal["pgm", "pandapower"]
ViolationKind = Literal["line_loading", "trafo_loading", "undervoltage", "overvoltage"]
FloatArray = NDArray[np.float64]
Arrays = tuple[FloatArray, FloatArray, FloatArray, NDArray[np.bool_]]
PQ = tuple[FloatArray, ...]  # p_load, q_load, p_sgen, q_sgen, p_extra, q_extra (MW)
_W_PER_MW = 1e6
_PROFILED = (("load", "p_mw", "_pload"), ("load", "q_mvar", "_qload"), ("sgen", "p_mw", ""))
_TABLES = ("line", "trafo", "bus")
_ENDS = {"line": ("from_bus", "to_bus"), "trafo": ("hv_bus", "lv_bus")}
_ZIP = ("const_z_p_percent", "const_z_q_percent", "const_i_p_percent", "const_i_q_percent")
_OUTPUT = {"node": ["u_pu", "energized"], "line": ["loading"], "transformer": ["i_from", "i_to"]}
_NOT_CONVERGED = (IterationDiverge, MaxIterationReached, SparseMatrixError)
_PGM_OPTIONS = {"threading": 0, "continue_on_batch_error": True, "output_component_types": _OUTPUT}


@dataclass(frozen=True)
class GridLimits:
    """Operating limits checked by :meth:`PowerFlowResult.violations` (EN 50160 voltages)."""

    max_line_loading_pct: float = 100.0
    max_trafo_loading_pct: float = 100.0
    v_min_pu: float = 0.90
    v_max_pu: float = 1.10

    def __post_init__(self) -> None:
        loading = (self.max_line_loading_pct, self.max_trafo_loading_pct)
        if not (all(v > 0 for v in loading) and 0 < self.v_min_pu < self.v_max_pu):
            msg = f"need loading limits > 0 and 0 < v_min_pu < v_max_pu, got {self}"
            raise InvalidInput([Issue("limits", msg)])


@dataclass(frozen=True)
class Violation:
    """One limit exceeded at one step; ``element`` is ``line:…``, ``trafo:…``, ``bus:…``."""

    step: int
    element: str
    kind: ViolationKind | Literal["not_converged"]
    value: float
    limit: float


def _nanmax(values: FloatArray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size else math.nan


@dataclass(frozen=True, eq=False)
class PowerFlowResult:
    """Per-step results (rows = steps) in pandapower element order; see the module doc."""

    line_loading_pct: FloatArray
    trafo_loading_pct: FloatArray
    vm_pu: FloatArray
    line_names: tuple[str, ...]
    trafo_names: tuple[str, ...]
    bus_names: tuple[str, ...]
    engine: str
    elapsed_s: float
    converged: NDArray[np.bool_]

    def max_line_loading_pct(self) -> float:
        """Highest line loading over all steps (NaN if there is none); NaN values ignored."""
        return _nanmax(self.line_loading_pct)

    def max_trafo_loading_pct(self) -> float:
        return _nanmax(self.trafo_loading_pct)

    def min_voltage_pu(self) -> float:
        return -_nanmax(-self.vm_pu)

    def max_voltage_pu(self) -> float:
        return _nanmax(self.vm_pu)

    def violations(self, limits: GridLimits | None = None) -> list[Violation]:
        """Every limit exceeded, ordered by step, then kind, then element order."""
        lim = limits if limits is not None else GridLimits()
        names = {"line": self.line_names, "trafo": self.trafo_names, "bus": self.bus_names}
        checks: list[tuple[ViolationKind, FloatArray, str, float, float]] = [
            ("line_loading", self.line_loading_pct, "line", lim.max_line_loading_pct, 1.0),
            ("trafo_loading", self.trafo_loading_pct, "trafo", lim.max_trafo_loading_pct, 1.0),
            ("undervoltage", self.vm_pu, "bus", lim.v_min_pu, -1.0),  # sign: below the limit
            ("overvoltage", self.vm_pu, "bus", lim.v_max_pu, 1.0),
        ]
        found = [
            (int(s), 0, 0, Violation(int(s), "grid", "not_converged", math.nan, math.nan))
            for s in np.flatnonzero(~self.converged)
        ]
        for rank, (kind, values, prefix, limit, sign) in enumerate(checks, start=1):
            for s, j in zip(*np.nonzero(sign * values > sign * limit), strict=True):  # NaN: no
                value, element = float(values[s, j]), f"{prefix}:{names[prefix][j]}"
                v = Violation(int(s), element, kind, value, limit)
                found.append((int(s), rank, int(j), v))
        return [v for *_, v in sorted(found, key=lambda f: f[:3])]


_Relative = tuple[dict[str, int], FloatArray]  # column label → column; (profile steps, columns)


def _relative_profiles(net: Any) -> dict[str, _Relative]:
    """SimBench relative profiles per element family (loads; sgens from plants + RES)."""
    profiles = net.get("profiles")
    out: dict[str, _Relative] = {}
    for element, keys in (("load", ("load",)), ("sgen", ("powerplants", "renewables"))):
        frames = [profiles[k] for k in keys] if isinstance(profiles, dict) else []
        frames = [f.drop(columns="time", errors="ignore") for f in frames if len(f)]
        if frames and len({len(f) for f in frames}) == 1:
            merged = pd.concat(frames, axis=1)
            merged = merged.loc[:, ~merged.columns.duplicated()]
            values = np.ascontiguousarray(merged.to_numpy(dtype=float))
            values.setflags(write=False)
            out[element] = ({str(c): i for i, c in enumerate(merged.columns)}, values)
    return out


@functools.lru_cache(maxsize=8)
def _simbench_relative(code: str) -> dict[str, _Relative]:
    return _relative_profiles(feeders._pristine_net(code))


def _check_times(times: Sequence[datetime]) -> None:
    naive = tuple(str(i) for i, t in enumerate(times) if t.utcoffset() is None)
    if naive:
        raise InvalidInput([Issue("times", "must be timezone-aware (UTC)", naive)])


def _absolute(
    table: Any, column: str, suffix: str, rel: _Relative | None, times: Sequence[datetime]
) -> FloatArray:
    """(T, rows): relative profile × ``column`` × ``scaling`` × ``in_service``."""
    cols = (column, "scaling", "in_service")
    base = np.prod([table[c].to_numpy(dtype=float) for c in cols], axis=0).reshape(1, -1)
    static = np.repeat(base, len(times), axis=0)
    if rel is None or "profile" not in table.columns or not len(table):
        return static
    index, values = rel
    labels = [f"{n}{suffix}" if isinstance(n, str) and n else None for n in table["profile"]]
    if any(label is not None and label not in index for label in labels):
        return static  # incomplete profiles count as static, as in background_load_kw
    pos = np.array([-1 if lb is None else index[lb] for lb in labels], dtype=np.intp)
    steps = np.array([feeders._profile_step(t, len(values)) for t in times], dtype=np.intp)
    factor = np.where(pos >= 0, values[np.ix_(steps, np.maximum(pos, 0))], 1.0)
    return np.asarray(factor * base, dtype=np.float64)


def background_pq_mw(
    model: FeederModel, times: Sequence[datetime]
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """``(p_load, q_load, p_sgen, q_sgen)`` in MW, each (T, rows of its table).

    Each value is what the element draws (loads) or feeds in (sgens, positive): relative
    SimBench profile × ``p_mw``/``q_mvar`` × ``scaling`` × ``in_service`` at the profile
    step of :func:`~grid.feeders.background_load_kw`, so ``1000 × (Σ p_load − Σ p_sgen)``
    equals it without ``gen``/``storage``. Sgen ``q_mvar`` and tables without (complete)
    profiles are static. Relative profiles are cached per SimBench code; element tables
    are read from ``model.net``."""
    _check_times(times)
    simbench = model.source in feeders._simbench_codes()
    rel = _simbench_relative(model.source) if simbench else _relative_profiles(model.net)
    net = model.net
    p_load, q_load, p_sgen = (
        _absolute(net[el], col, sfx, rel.get(el), times) for el, col, sfx in _PROFILED
    )
    return p_load, q_load, p_sgen, _absolute(net.sgen, "q_mvar", "", None, times)


@dataclass(frozen=True)
class _PgmCase:
    """A converted net: input arrays and power-grid-model ids/positions in pandapower order."""

    data: dict[Any, Any]
    node_pos: NDArray[np.intp]
    line_pos: NDArray[np.intp]
    trafo_pos: NDArray[np.intp]
    trafo_pct_per_a: FloatArray  # (K, 2) hv/lv: loading % per A = √3·u_rated·100/(sn·df)
    load_ids: tuple[NDArray[np.int32], ...]  # const power, impedance, current; -1 = dropped
    sgen_ids: NDArray[np.int32]
    next_id: int


_PGM_CACHE: dict[int, tuple[weakref.ref[Any], int, _PgmCase]] = {}


def _with_vector_groups(trafo: Any) -> Any:
    """A copy where each missing ``vector_group`` is ``Dyn<clock>`` or ``YNyn<clock>``."""
    trafo = trafo.copy()
    vector_group = trafo.get("vector_group", pd.Series(None, index=trafo.index))
    missing = ~vector_group.map(lambda v: isinstance(v, str) and v != "").astype(bool)
    clocks = np.round(trafo["shift_degree"].to_numpy(dtype=float) / 30.0).astype(int) % 12
    trafo["vector_group"] = vector_group.astype(object)
    groups = [f"Dyn{c}" if c % 2 else f"YNyn{c}" for c in clocks[missing.to_numpy()]]
    trafo.loc[missing, "vector_group"] = groups
    return trafo


def _positions(ids: NDArray[Any], wanted: NDArray[Any]) -> NDArray[np.intp]:
    return np.asarray(np.argsort(ids)[np.searchsorted(np.sort(ids), wanted)], dtype=np.intp)


def _zip_fractions(net: Any) -> list[tuple[FloatArray, FloatArray]]:
    """(p, q) share of each load that is constant power, impedance and current."""
    z_p, z_q, i_p, i_q = (
        net.load[c].to_numpy(float) / 100.0 if c in net.load else np.zeros(len(net.load))
        for c in _ZIP
    )
    return [(1.0 - z_p - i_p, 1.0 - z_q - i_q), (z_p, z_q), (i_p, i_q)]


def _convert(net: Any) -> _PgmCase:
    view = copy.copy(net)  # shallow: only the patched tables are replaced
    view["trafo"] = _with_vector_groups(net.trafo)
    view["ext_grid"] = net.ext_grid.assign(s_sc_max_mva=IDEAL_SOURCE_SC_MVA, rx_max=0.1)
    converter = PandaPowerConverter()
    try:
        data, _ = converter.load_input_data(view, make_extra_info=False)
    except (ValueError, TypeError, KeyError, RuntimeError, NotImplementedError) as exc:
        raise ConfigError([Issue("net", f"power-grid-model cannot convert it: {exc}")]) from exc

    def ids(table: str, name: str | None = None) -> NDArray[np.int32]:
        series = converter.idx.get((table, name))
        return np.zeros(0, np.int32) if series is None else series.to_numpy(dtype=np.int32)

    # ZIP rows with a zero share cost time in every step: keep only those in use.
    load_ids = [ids("load", n) for n in ("const_power", "const_impedance", "const_current")]
    for k, (fp, fq) in enumerate(_zip_fractions(net)[1:], start=1):
        load_ids[k] = np.where((fp != 0) | (fq != 0), load_ids[k], -1)
    loads = data.get(ComponentType.sym_load, pgm_array("input", "sym_load", 0))
    data[ComponentType.sym_load] = loads[np.isin(loads["id"], np.concatenate(load_ids))]
    trafos = data.get(ComponentType.transformer, pgm_array("input", "transformer", 0))
    trafo_pos = _positions(trafos["id"], ids("trafo"))
    df = net.trafo["df"].to_numpy(float) if "df" in net.trafo else np.ones(len(net.trafo))
    u_rated = np.column_stack([trafos["u1"][trafo_pos], trafos["u2"][trafo_pos]])
    return _PgmCase(
        data=data,
        node_pos=_positions(data[ComponentType.node]["id"], ids("bus")),
        line_pos=_positions(data[ComponentType.line]["id"], ids("line")),
        trafo_pos=trafo_pos,
        trafo_pct_per_a=u_rated
        * (math.sqrt(3.0) * 100.0 / (trafos["sn"][trafo_pos] * df))[:, None],
        load_ids=tuple(load_ids),
        sgen_ids=ids("sgen"),
        next_id=max(int(arr["id"].max()) for arr in data.values() if len(arr)) + 1,
    )


def _pgm_case(net: Any, sig: int | None = None) -> _PgmCase:
    """The converted input of ``net``, from the cache while its structure is unchanged."""
    key, sig = id(net), net_fingerprint(net) if sig is None else sig
    hit = _PGM_CACHE.get(key)
    if hit is not None and hit[0]() is net and hit[1] == sig:
        return hit[2]
    for k in [k for k, (ref, *_) in _PGM_CACHE.items() if ref() is None]:
        del _PGM_CACHE[k]
    _PGM_CACHE[key] = (weakref.ref(net), sig, _convert(net))
    return _PGM_CACHE[key][2]


def _update(ids: NDArray[Any], p_mw: FloatArray, q_mvar: FloatArray) -> dict[str, Any]:
    """Columnar batch update (W, var) of the elements ``ids``, the same in every step."""
    ids = np.broadcast_to(ids, p_mw.shape)
    return {"id": ids, "p_specified": p_mw * _W_PER_MW, "q_specified": q_mvar * _W_PER_MW}


def _solve(pgm: Any, update: dict[Any, Any], method: CalculationMethod) -> tuple[Any, Any]:
    """Results and the steps that did not converge; any other failure is raised."""
    out = pgm.calculate_power_flow(update_data=update, calculation_method=method, **_PGM_OPTIONS)
    error = pgm.batch_error
    if error is not None and not all(isinstance(e, _NOT_CONVERGED) for e in error.errors):
        raise error
    return out, np.asarray([] if error is None else error.failed_scenarios, dtype=np.intp)


def _run_pgm(model: FeederModel, pq: PQ, buses: NDArray[np.intp], sig: int) -> Arrays:
    p_load, q_load, p_sgen, q_sgen, p_extra, q_extra = pq
    case = _pgm_case(model.net, sig)
    extra = pgm_array(DatasetType.input, ComponentType.sym_load, len(buses))
    extra["id"] = np.arange(case.next_id, case.next_id + len(buses))
    at = case.node_pos[model.net.bus.index.get_indexer(buses)]  # bus index → pgm node
    extra["node"], extra["status"], extra["type"] = case.data["node"]["id"][at], 1, 0
    data = {**case.data, "sym_load": np.concatenate([case.data["sym_load"], extra])}
    ids, p_parts, q_parts = [extra["id"]], [p_extra], [q_extra]
    for load_ids, (fp, fq) in zip(case.load_ids, _zip_fractions(model.net), strict=True):
        kept = load_ids >= 0
        ids.append(load_ids[kept])
        p_parts.append(p_load[:, kept] * fp[kept])
        q_parts.append(q_load[:, kept] * fq[kept])
    p_all, q_all = np.concatenate(p_parts, axis=1), np.concatenate(q_parts, axis=1)
    update = {"sym_load": _update(np.concatenate(ids), p_all, q_all)}
    if case.sgen_ids.size:
        update["sym_gen"] = _update(case.sgen_ids, p_sgen, q_sgen)
    pgm = PowerGridModel(data)
    out, failed = _solve(pgm, update, CalculationMethod.iterative_current)
    if failed.size:  # retry the hard steps with Newton-Raphson
        sub = {c: {k: v[failed] for k, v in cols.items()} for c, cols in update.items()}
        retry, still = _solve(pgm, sub, CalculationMethod.newton_raphson)
        for comp, attrs in out.items():
            for name, values in attrs.items():
                values[failed] = retry[comp][name]
        failed = failed[still]
    node, line, trafo = (out[c] for c in _OUTPUT)
    vm = np.where(node["energized"] > 0, node["u_pu"], np.nan)[:, case.node_pos]
    line_pct = np.asarray(line["loading"], float)[:, case.line_pos] * 100.0
    i_ft = np.stack([trafo["i_from"], trafo["i_to"]], axis=-1)[:, case.trafo_pos]
    trafo_pct = (i_ft * case.trafo_pct_per_a).max(axis=-1)
    for pct, name in ((line_pct, "line"), (trafo_pct, "trafo")):  # NaN as in pandapower
        a, b = (model.net.bus.index.get_indexer(model.net[name][e]) for e in _ENDS[name])
        pct[np.isnan(vm[:, a]) | np.isnan(vm[:, b])] = np.nan  # touches an unsupplied bus
    return line_pct, trafo_pct, vm, ~np.isin(np.arange(len(p_load)), failed)


def _run_pandapower(model: FeederModel, pq: PQ, buses: NDArray[np.intp], sig: int) -> Arrays:
    p_load, q_load, p_sgen, q_sgen, p_extra, q_extra = pq
    net = copy.deepcopy(model.net)
    net.load["scaling"] = net.sgen["scaling"] = 1.0  # background values include it
    if len(buses):
        pp.create_loads(net, buses, p_mw=0.0, name=[f"gridflex-extra:{b}" for b in buses])
    p_all, q_all = np.hstack([p_load, p_extra]), np.hstack([q_load, q_extra])
    n_steps = len(p_load)
    line_pct, trafo_pct, vm = (np.full((n_steps, len(net[t])), np.nan) for t in _TABLES)
    converged = np.zeros(n_steps, dtype=bool)
    for t in range(n_steps):
        net.load["p_mw"], net.load["q_mvar"] = p_all[t], q_all[t]
        net.sgen["p_mw"], net.sgen["q_mvar"] = p_sgen[t], q_sgen[t]
        try:
            pp.runpp(net, numba=False)
        except pp.LoadflowNotConverged:
            continue
        converged[t] = True
        line_pct[t] = net.res_line["loading_percent"].to_numpy(float)
        trafo_pct[t] = net.res_trafo["loading_percent"].to_numpy(float)
        vm[t] = net.res_bus["vm_pu"].to_numpy(float)
    return line_pct, trafo_pct, vm, converged


def _extra_mw(
    model: FeederModel, extra_kw: Mapping[str, Any], n_steps: int, power_factor: float
) -> tuple[NDArray[np.intp], FloatArray, FloatArray]:
    issues: list[Issue] = []
    buses: list[int] = []
    columns: list[FloatArray] = []
    for name, values in extra_kw.items():
        try:
            buses.append(bus_index(model, name))
        except InvalidInput as exc:
            issues.extend(exc.issues)
        columns.append(np.asarray(values, dtype=float))
        if columns[-1].shape != (n_steps,) or not np.isfinite(columns[-1]).all():
            msg = f"need {n_steps} finite values (one per time), got shape {columns[-1].shape}"
            issues.append(Issue("extra_kw", msg, (name,)))
    if issues:
        raise InvalidInput(issues)
    p_mw = np.column_stack(columns) * MW_PER_KW if columns else np.zeros((n_steps, 0))
    return np.array(buses, dtype=np.intp), p_mw, p_mw * math.tan(math.acos(power_factor))


def run_timeseries(
    model: FeederModel,
    times: Sequence[datetime],
    extra_kw: Mapping[str, NDArray[np.float64]] | None = None,
    *,
    engine: Engine = "pgm",
    power_factor: float = 1.0,
    background: bool = True,
    fingerprint: int | None = None,
) -> PowerFlowResult:
    """AC power flow of ``model`` at each aware time, with optional extra load per bus.

    ``extra_kw`` maps a bus label to T values of extra active power in kW (positive = load,
    e.g. the EV charging at that bus); its reactive power follows ``power_factor``
    (lagging). ``background=False`` zeroes the feeder's own loads and sgens. Raises
    :class:`InvalidInput` for naive times, unknown buses, misshapen or non-finite extra
    power, a power factor outside (0, 1] or an unknown engine; :class:`ConfigError` if
    power-grid-model cannot convert the net. ``fingerprint`` (from :func:`net_fingerprint`)
    spares hashing the net's tables on every call; the caller vouches that the net has not
    changed since it was taken."""
    start = time.perf_counter()
    issues: list[Issue] = []
    if engine not in ("pgm", "pandapower"):
        issues.append(Issue("engine", f"must be 'pgm' or 'pandapower', got {engine!r}"))
    if not (math.isfinite(power_factor) and 0.0 < power_factor <= 1.0):
        issues.append(Issue("power_factor", f"must be in (0, 1], got {power_factor}"))
    if issues:
        raise InvalidInput(issues)
    _check_times(times)
    net, n_steps = model.net, len(times)
    buses, p_extra, q_extra = _extra_mw(model, extra_kw or {}, n_steps, power_factor)
    zeros = [np.zeros((n_steps, len(net[t]))) for t in ("load", "load", "sgen", "sgen")]
    pq = (*(background_pq_mw(model, times) if background else zeros), p_extra, q_extra)
    sig = net_fingerprint(net) if fingerprint is None else fingerprint
    if n_steps == 0:
        line_pct, trafo_pct, vm = (np.zeros((0, len(net[t]))) for t in _TABLES)
        converged = np.zeros(0, dtype=bool)
    else:
        run = _run_pgm if engine == "pgm" else _run_pandapower
        line_pct, trafo_pct, vm, converged = run(model, pq, buses, sig)
    for arr in (line_pct, trafo_pct, vm, converged):
        if arr.dtype != bool:
            arr[~converged] = np.nan
        arr.setflags(write=False)
    return PowerFlowResult(
        line_loading_pct=line_pct,
        trafo_loading_pct=trafo_pct,
        vm_pu=vm,
        line_names=net_labels(net, sig)[0],
        trafo_names=net_labels(net, sig)[1],
        bus_names=model.bus_names(),
        engine=engine,
        elapsed_s=time.perf_counter() - start,
        converged=converged,
    )
