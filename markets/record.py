"""The 1 s record of a pool: baseline, requested activation, setpoint sum, measured power.

SO GL Art. 158(1)(e) asks an FRR provider for time-stamped real-time measurements of its
*scheduled* and *instantaneous* active power (for FCR, Art. 154(10)-(11) asks the same kind
of data); settlement and prequalification (:mod:`markets.settlement`,
:mod:`markets.prequalify`) read nothing else. One row per whole second (UTC) per pool:

=================  ==========================================================================
``baseline_kw``    the planned pool power, the working point the activation is measured from
``requested_kw``   the activation the TSO asked for (FCR: droop of the frequency × reserve;
                   aFRR: the TSO's setpoint), kW, positive = more import
``setpoint_kw``    the sum of the setpoints the service sent
``measured_kw``    the pool's measured power
``reserve_kw``     the reserve held in that second (what the pool was paid to keep)
=================  ==========================================================================

Invariants:

* the record is *gap-free by construction of its index*: second ``i`` is ``start + i s``,
  every array has one value per second; a second with no sample is a **gap** — its values
  are NaN, :meth:`PoolRecord.gaps` reports it, and nothing ever fills it (no hold, no
  interpolation: a reader that wants a value there must say how it treats a gap);
* a second's values are those of the *last* sample taken in that second (instantaneous
  values, as Art. 158 asks; a mean would hide a step);
* ``start`` is UTC-aware and on a whole second; the record is a frozen value holding
  read-only copies.

:class:`SecondRecorder` builds a record from samples (an :class:`~aggregator.service.events.
EventSink` for :class:`~aggregator.service.events.PoolSampled` events, or direct calls);
:func:`record_to_csv` / :func:`record_from_csv` are the text form (one row per second, a gap
is a row with empty values; a missing row reads as a gap too).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from aggregator.errors import InvalidInput, Issue
from aggregator.messages import AfrrRequest, FrequencySample, FrequencySignal
from aggregator.service.events import PoolSampled, ServiceEvent
from markets.activation import fcr_activation

__all__ = [
    "COLUMNS",
    "Gap",
    "PoolRecord",
    "SecondRecorder",
    "record_from_csv",
    "record_to_csv",
    "requested_kw",
]

COLUMNS = ("baseline_kw", "requested_kw", "setpoint_kw", "measured_kw", "reserve_kw")
"""The per-second columns, in file order (after ``ts``)."""


def requested_kw(signal: FrequencySignal, reserve_kw: float) -> float:
    """The activation a signal orders (kW, + = more import), before any ramp or clipping
    by the pool: FCR — the droop of the frequency × the reserve; aFRR — the TSO's setpoint
    (an order beyond the reserve stays in the record as it was sent)."""
    if isinstance(signal, FrequencySample):
        return reserve_kw * fcr_activation(signal.hz)
    assert isinstance(signal, AfrrRequest)
    return float(signal.setpoint_kw)


@dataclass(frozen=True, slots=True)
class Gap:
    """A run of seconds with no sample: ``[start, end)``, ``seconds`` long."""

    start: datetime
    end: datetime
    seconds: int

    def __str__(self) -> str:
        return f"gap {self.start.isoformat()} – {self.end.isoformat()} ({self.seconds} s)"


@dataclass(frozen=True)
class PoolRecord:
    """One pool's 1 s record from ``start`` (second ``i`` is ``start + i`` s); NaN = gap."""

    pool_id: str
    start: datetime
    baseline_kw: NDArray[np.float64]
    requested_kw: NDArray[np.float64]
    setpoint_kw: NDArray[np.float64]
    measured_kw: NDArray[np.float64]
    reserve_kw: NDArray[np.float64]

    def __post_init__(self) -> None:
        for name in COLUMNS:
            a = np.array(getattr(self, name), dtype=np.float64)
            a.setflags(write=False)
            object.__setattr__(self, name, a)

    @property
    def seconds(self) -> int:
        return int(self.baseline_kw.size)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.seconds)

    def times(self) -> list[datetime]:
        return [self.start + timedelta(seconds=i) for i in range(self.seconds)]

    def column(self, name: str) -> NDArray[np.float64]:
        if name not in COLUMNS:
            raise KeyError(name)
        a: NDArray[np.float64] = getattr(self, name)
        return a

    @property
    def present(self) -> NDArray[np.bool_]:
        """Per second: every value was sampled (False = the second is a gap)."""
        ok = np.ones(self.seconds, dtype=bool)
        for name in COLUMNS:
            ok &= np.isfinite(self.column(name))
        return ok

    def gaps(self) -> list[Gap]:
        """Every run of missing seconds, in order (empty: the record is gap-free)."""
        out: list[Gap] = []
        for a, b in _runs(~self.present):
            out.append(
                Gap(self.start + timedelta(seconds=a), self.start + timedelta(seconds=b), b - a)
            )
        return out

    def validate(self) -> list[Issue]:
        issues: list[Issue] = []
        if self.start.tzinfo is None or self.start.utcoffset() != timedelta(0):
            issues.append(Issue(field="start", code="not_utc", message="must be UTC-aware"))
        elif self.start.microsecond:
            issues.append(
                Issue(field="start", code="not_whole_second", message="must be a whole second")
            )
        sizes = {name: self.column(name).size for name in COLUMNS}
        if len(set(sizes.values())) > 1:
            issues.append(
                Issue(
                    field="columns",
                    code="length_mismatch",
                    ids=(self.pool_id,),
                    message=f"columns differ in length: {sizes}",
                )
            )
        return issues


def _runs(mask: NDArray[np.bool_]) -> Iterator[tuple[int, int]]:
    """``[a, b)`` of every run of True in ``mask``."""
    if not mask.size:
        return
    d = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1)
    yield from zip(starts.tolist(), ends.tolist(), strict=True)


def _whole_second(t: datetime) -> datetime:
    return t.replace(microsecond=0)


class SecondRecorder:
    """Collects samples into the 1 s record of one pool over ``[start, end)``.

    Use it as an event sink (it keeps :class:`PoolSampled` events that carry a measurement)
    or call :meth:`sample`. A sample outside the window is counted in ``dropped``, never
    stretched in; a second without a sample stays a gap.
    """

    def __init__(self, pool_id: str, start: datetime, end: datetime) -> None:
        if start.tzinfo is None or end <= start:
            raise InvalidInput(
                [Issue(field="window", code="invalid_window", message="needs UTC start < end")]
            )
        self.pool_id = pool_id
        self.start = _whole_second(start)
        n = math.ceil((end - self.start).total_seconds())
        self._cols = {name: np.full(n, np.nan) for name in COLUMNS}
        self.dropped = 0
        self._last_requested_kw = math.nan

    def emit(self, event: ServiceEvent) -> None:
        if not isinstance(event, PoolSampled) or event.measured_kw is None:
            return
        if event.signal is not None:
            self._last_requested_kw = requested_kw(event.signal, event.reserve_kw)
        self.sample(
            event.at,
            baseline_kw=event.baseline_kw,
            requested_kw=self._last_requested_kw,
            setpoint_kw=event.setpoint_kw,
            measured_kw=event.measured_kw,
            reserve_kw=event.reserve_kw,
        )

    def sample(
        self,
        at: datetime,
        *,
        baseline_kw: float,
        requested_kw: float,
        setpoint_kw: float,
        measured_kw: float,
        reserve_kw: float,
    ) -> None:
        """Keep the values of second ``floor(at)`` (a later sample of that second wins)."""
        i = math.floor((at - self.start).total_seconds())
        n = self._cols["baseline_kw"].size
        if not 0 <= i < n:
            self.dropped += 1
            return
        values = (baseline_kw, requested_kw, setpoint_kw, measured_kw, reserve_kw)
        for name, v in zip(COLUMNS, values, strict=True):
            self._cols[name][i] = v

    def record(self) -> PoolRecord:
        """The record so far (a frozen copy; unsampled seconds are gaps)."""
        c = self._cols
        return PoolRecord(
            self.pool_id,
            self.start,
            c["baseline_kw"].copy(),
            c["requested_kw"].copy(),
            c["setpoint_kw"].copy(),
            c["measured_kw"].copy(),
            c["reserve_kw"].copy(),
        )


# --------------------------------------------------------------------------- text form


def _fmt(v: float) -> str:
    return repr(v) if math.isfinite(v) else ""  # repr: the float reads back exactly


def record_to_csv(record: PoolRecord) -> str:
    """The record as CSV text: a ``# pool=`` line, a header, one row per second (a gap is a
    row with its timestamp and empty values)."""
    buf = io.StringIO()
    buf.write(f"# pool={record.pool_id}\n")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("ts", *COLUMNS))
    cols = [record.column(name) for name in COLUMNS]
    for i, t in enumerate(record.times()):
        w.writerow((t.strftime("%Y-%m-%dT%H:%M:%SZ"), *(_fmt(float(c[i])) for c in cols)))
    return buf.getvalue()


def _parse_ts(text: str) -> datetime:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError("naive timestamp")
    return t.astimezone(UTC)


def record_from_csv(text: str, pool_id: str | None = None) -> PoolRecord:
    """Parse :func:`record_to_csv` text. Seconds with no row, or with an empty or
    non-finite value, are gaps. Raises :class:`InvalidInput` with every problem (bad
    timestamps, times not increasing or not on whole seconds, unknown columns)."""
    lines = text.splitlines()
    pool = pool_id or "pool"
    body: list[str] = []
    for line in lines:
        if line.startswith("#"):
            if pool_id is None and line[1:].strip().startswith("pool="):
                pool = line[1:].strip()[5:]
            continue
        if line.strip():
            body.append(line)
    issues: list[Issue] = []
    rows = list(csv.reader(body))
    if not rows:
        raise InvalidInput([Issue(field="record", code="empty", message="no header, no rows")])
    header = [h.strip() for h in rows[0]]
    missing = [c for c in ("ts", *COLUMNS) if c not in header]
    if missing:
        raise InvalidInput(
            [Issue(field="header", code="missing_columns", ids=tuple(missing), message="missing")]
        )
    idx = {name: header.index(name) for name in ("ts", *COLUMNS)}
    times: list[datetime] = []
    values: list[list[float]] = []
    for k, row in enumerate(rows[1:], start=2):
        try:
            t = _parse_ts(row[idx["ts"]])
        except (ValueError, IndexError):
            issues.append(Issue(field="ts", code="bad_timestamp", ids=(str(k),), message="row"))
            continue
        if t.microsecond:
            issues.append(Issue(field="ts", code="not_whole_second", ids=(str(k),), message=""))
        if times and t <= times[-1]:
            issues.append(Issue(field="ts", code="not_increasing", ids=(str(k),), message=""))
        vals: list[float] = []
        for name in COLUMNS:
            cell = row[idx[name]].strip() if idx[name] < len(row) else ""
            try:
                vals.append(float(cell) if cell else math.nan)
            except ValueError:
                issues.append(Issue(field=name, code="not_a_number", ids=(str(k),), message=cell))
                vals.append(math.nan)
        times.append(t)
        values.append(vals)
    if issues:
        raise InvalidInput(issues)
    if not times:
        raise InvalidInput([Issue(field="record", code="empty", message="no rows")])
    start = times[0]
    n = int((times[-1] - start).total_seconds()) + 1
    cols = np.full((len(COLUMNS), n), np.nan)
    for t, vals in zip(times, values, strict=True):
        cols[:, int((t - start).total_seconds())] = vals
    cols[~np.isfinite(cols)] = np.nan
    return PoolRecord(pool, start, cols[0], cols[1], cols[2], cols[3], cols[4])
