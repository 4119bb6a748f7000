"""An independent checker of published setpoint batches: is every cap held at every instant?

Role: a test-side CSMS model that trusts nothing the replicas say about themselves. It
reads the setpoints topic with its own consumer (kafka-python, group-less, from the
beginning) and, from the batches alone plus the grid the test knows (sites, feeders, their
static caps) and the DSO limits the test sent, computes what every CSMS would have in
force at any instant, and checks that against every cap in force then.

Semantics (the rules a CSMS follows, DESIGN.md "Failure is normal", IEC 63380-1 LPC):

* A batch reaches its CSMS at its record's broker timestamp (``CreateTime``: when the
  replica produced it), not when this checker happens to poll it, so the checker's own
  lag never shifts what was in force.
* Per CSMS, a batch whose ``seq`` is not above the highest ``seq`` already received is
  dropped (stale or duplicate), as a CSMS drops it.
* Per EVSE, the value in force is that of the latest accepted batch that named it: its
  ``power_kw`` until that batch's ``valid_until``, then its ``failsafe_kw`` (indefinitely:
  the failsafe duration is hours, longer than any test). An EVSE a newer batch does not
  name keeps its own older lease and failsafe — a batch must name every EVSE the previous
  batch named until that lease expired (issue 15 item 10).
* Σ failsafe values of the EVSEs known to a CSMS are checked at every instant too: they
  are what the fleet falls to if every replica dies now.

Caps in force at ``t``: per site, its connection limit; per feeder, its rating; for the
fleet, the fleet limit (if any); each tightened by every DSO limit on that target whose
window ``[start, end)`` contains ``t`` and which was not cancelled at or before ``t``. A
repeated event id replaces the earlier limit (the limit book's rule); overlapping limits
combine by the minimum (a DSO limit only tightens, whatever its priority).

Invariant checked: at every 100 ms grid instant of the observed span *and* at every
instant some input changes (batch arrival, lease end, window edge, cancellation) — the
values are step functions, so this is exact — Σ setpoints in force and Σ failsafe values
in force are ≤ every cap in force (+ ``tol_kw``). Every breach is reported with its time,
scope (site, feeder, fleet), target, kind (setpoints / failsafe), sum and cap. Batches
naming an EVSE outside the fleet, or a setpoint outside the EVSE's own [min, max], are
reported too.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "Batch",
    "Breach",
    "CapModel",
    "CheckReport",
    "Limit",
    "SetpointChecker",
    "check_batches",
]

TOL_KW = 1e-6
GRID_S = 0.1


@dataclass(frozen=True, kw_only=True)
class CapModel:
    """The grid the test built: site → feeder, static caps (kW), each EVSE's site and range."""

    site_feeder: Mapping[str, str]
    site_cap_kw: Mapping[str, float]
    feeder_cap_kw: Mapping[str, float]
    evse_site: Mapping[str, str]
    evse_max_kw: Mapping[str, float] = field(default_factory=dict)
    evse_min_kw: Mapping[str, float] = field(default_factory=dict)
    fleet_cap_kw: float | None = None


@dataclass(frozen=True, kw_only=True)
class Limit:
    """A DSO limit as the test sent it (and, if so, when it cancelled it)."""

    event_id: str
    target_type: str  # "site" | "feeder" | "fleet"
    target_id: str
    start: datetime
    end: datetime
    limit_kw: float
    cancelled_at: datetime | None = None

    def active(self, t: datetime) -> bool:
        if self.cancelled_at is not None and self.cancelled_at <= t:
            return False
        return self.start <= t < self.end


@dataclass(frozen=True, kw_only=True)
class Batch:
    """One setpoint batch as received: when it reached the CSMS, and its content."""

    received_at: datetime
    csms_id: str
    seq: int
    issued_at: datetime
    valid_until: datetime
    evse_ids: tuple[str, ...]
    power_kw: tuple[float, ...]
    failsafe_kw: tuple[float, ...]
    source_ts: datetime | None = None  # the frequency sample a batch answers, if any

    @classmethod
    def from_record(cls, value: bytes, timestamp_ms: int) -> Batch:
        d = json.loads(value)
        return cls(
            received_at=datetime.fromtimestamp(timestamp_ms / 1000, UTC),
            csms_id=str(d["csms_id"]),
            seq=int(d["seq"]),
            issued_at=_ts(d["issued_at"]),
            valid_until=_ts(d["valid_until"]),
            evse_ids=tuple(str(e) for e in d["evse_ids"]),
            power_kw=tuple(float(p) for p in d["power_kw"]),
            failsafe_kw=tuple(float(p) for p in d["failsafe_kw"]),
            source_ts=_ts(d["source_ts"]) if d.get("source_ts") else None,
        )


def _ts(text: str) -> datetime:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError(f"naive timestamp in a batch: {text!r}")
    return t.astimezone(UTC)


@dataclass(frozen=True, kw_only=True)
class Breach:
    """A sum in force above a cap in force at ``t``."""

    t: datetime
    kind: str  # "setpoints" | "failsafe"
    scope: str  # "site" | "feeder" | "fleet"
    target_id: str
    sum_kw: float
    cap_kw: float

    def __str__(self) -> str:
        return (
            f"{self.t.isoformat(timespec='milliseconds')} {self.scope} {self.target_id}: "
            f"Σ {self.kind} {self.sum_kw:.3f} kW > cap {self.cap_kw:.3f} kW"
        )


@dataclass(frozen=True, kw_only=True)
class CheckReport:
    """What the checker saw over ``[start, end]`` and every breach it found."""

    start: datetime
    end: datetime
    instants: int
    batches: int
    stale_dropped: int
    breaches: tuple[Breach, ...]
    unknown_evses: tuple[str, ...]
    out_of_range: tuple[str, ...]
    peak_kw: Mapping[str, float]  # "feeder:f1" -> highest Σ setpoints in force seen

    @property
    def ok(self) -> bool:
        return not (self.breaches or self.unknown_evses or self.out_of_range)

    def summary(self, limit: int = 20) -> str:
        lines = [
            f"{self.instants} instants over {(self.end - self.start).total_seconds():.1f} s, "
            f"{self.batches} batches ({self.stale_dropped} stale dropped), "
            f"{len(self.breaches)} breaches"
        ]
        lines += [str(b) for b in self.breaches[:limit]]
        if len(self.breaches) > limit:
            lines.append(f"... {len(self.breaches) - limit} more")
        if self.unknown_evses:
            lines.append(f"batches name EVSEs outside the fleet: {sorted(self.unknown_evses)}")
        lines += list(self.out_of_range[:limit])
        return "\n".join(lines)


@dataclass
class _Lease:
    power_kw: float
    failsafe_kw: float
    valid_until: datetime
    csms_id: str


def _caps_at(model: CapModel, limits: Iterable[Limit], t: datetime) -> dict[str, float]:
    caps = {f"site:{s}": c for s, c in model.site_cap_kw.items()}
    caps.update({f"feeder:{f}": c for f, c in model.feeder_cap_kw.items()})
    if model.fleet_cap_kw is not None:
        caps["fleet:fleet"] = model.fleet_cap_kw
    for lim in limits:
        if lim.active(t):
            key = (
                "fleet:fleet"
                if lim.target_type == "fleet"
                else f"{lim.target_type}:{lim.target_id}"
            )
            caps[key] = min(caps.get(key, float("inf")), lim.limit_kw)
    return caps


def _sums(model: CapModel, values: Mapping[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for evse, p in values.items():
        site = model.evse_site.get(evse)
        if site is None:
            continue
        feeder = model.site_feeder[site]
        for key in (f"site:{site}", f"feeder:{feeder}", "fleet:fleet"):
            out[key] = out.get(key, 0.0) + p
    return out


def check_batches(
    batches: Iterable[Batch],
    model: CapModel,
    limits: Iterable[Limit],
    start: datetime,
    end: datetime,
    *,
    grid_s: float = GRID_S,
    tol_kw: float = TOL_KW,
) -> CheckReport:
    """Replay ``batches`` as the CSMSs would and check every cap over ``[start, end]``.

    Pure: no Kafka. Instants are the ``grid_s`` grid from ``start`` plus every instant an
    input changes inside the span.
    """
    by_limit: dict[str, Limit] = {}
    for lim in limits:
        by_limit[lim.event_id] = lim  # a repeated event id replaces the earlier limit
    lims = list(by_limit.values())
    ordered = sorted(batches, key=lambda b: (b.received_at, b.csms_id, b.seq))
    instants: set[datetime] = set()
    n = int((end - start).total_seconds() / grid_s)
    instants.update(start + timedelta(seconds=i * grid_s) for i in range(n + 1))
    for b in ordered:
        instants.update((b.received_at, b.valid_until))
    for lim in lims:
        instants.update(x for x in (lim.start, lim.end, lim.cancelled_at) if x is not None)
    grid = sorted(t for t in instants if start <= t <= end)

    leases: dict[str, _Lease] = {}
    top_seq: dict[str, int] = {}
    stale = 0
    unknown: set[str] = set()
    out_of_range: list[str] = []
    breaches: list[Breach] = []
    peak: dict[str, float] = {}
    i = 0
    for t in grid:
        while i < len(ordered) and ordered[i].received_at <= t:
            b = ordered[i]
            i += 1
            if b.seq <= top_seq.get(b.csms_id, -1):
                stale += 1
                continue
            top_seq[b.csms_id] = b.seq
            for evse, p, fs in zip(b.evse_ids, b.power_kw, b.failsafe_kw, strict=True):
                if evse not in model.evse_site:
                    unknown.add(evse)
                lo = model.evse_min_kw.get(evse, 0.0)
                hi = model.evse_max_kw.get(evse, float("inf"))
                if not lo - tol_kw <= p <= hi + tol_kw:
                    out_of_range.append(f"{b.csms_id} seq {b.seq}: {evse} {p} kW ∉ [{lo}, {hi}]")
                leases[evse] = _Lease(p, fs, b.valid_until, b.csms_id)
        power = {e: (x.power_kw if t < x.valid_until else x.failsafe_kw) for e, x in leases.items()}
        failsafe = {e: x.failsafe_kw for e, x in leases.items()}
        caps = _caps_at(model, lims, t)
        for kind, values in (("setpoints", power), ("failsafe", failsafe)):
            for key, total in _sums(model, values).items():
                if kind == "setpoints":
                    peak[key] = max(peak.get(key, float("-inf")), total)
                cap = caps.get(key, float("inf"))
                if total > cap + tol_kw:
                    scope, _, target = key.partition(":")
                    breaches.append(
                        Breach(
                            t=t, kind=kind, scope=scope, target_id=target, sum_kw=total, cap_kw=cap
                        )
                    )
    return CheckReport(
        start=start,
        end=end,
        instants=len(grid),
        batches=len(ordered),
        stale_dropped=stale,
        breaches=tuple(breaches),
        unknown_evses=tuple(sorted(unknown)),
        out_of_range=tuple(out_of_range),
        peak_kw=peak,
    )


class SetpointChecker:
    """A background consumer of the setpoints topic that keeps every batch it receives.

    ``start()`` begins reading from the beginning of every partition; ``received()`` is a
    snapshot; ``check(model, limits, start, end)`` replays them with :func:`check_batches`.
    The consumer is kafka-python, group-less and read-only: it never touches the
    replicas' group or offsets.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._batches: list[Batch] = []
        self._errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="setpoint-checker", daemon=True)
        self._assigned = threading.Event()

    def start(self, timeout_s: float = 30.0) -> SetpointChecker:
        self._thread.start()
        if not self._assigned.wait(timeout_s):
            raise AssertionError(f"checker: no partitions of {self.topic} within {timeout_s} s")
        return self

    def _run(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="gridflex-checker",
        )
        try:
            deadline = time.monotonic() + 30
            parts: set[int] = set()
            while not parts and time.monotonic() < deadline and not self._stop.is_set():
                parts = consumer.partitions_for_topic(self.topic) or set()
                if not parts:
                    consumer.topics()
                    self._stop.wait(0.1)
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            self._assigned.set()
            while not self._stop.is_set():
                for records in consumer.poll(timeout_ms=100).values():
                    got = []
                    for r in records:
                        try:
                            got.append(Batch.from_record(r.value, r.timestamp))
                        except (ValueError, KeyError, TypeError) as exc:
                            self._errors.append(f"offset {r.offset}: {exc}")
                    with self._lock:
                        self._batches.extend(got)
        finally:
            consumer.close()

    def received(self) -> list[Batch]:
        with self._lock:
            return list(self._batches)

    @property
    def errors(self) -> list[str]:
        """Records on the setpoints topic that are not a readable batch."""
        return list(self._errors)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def check(
        self,
        model: CapModel,
        limits: Iterable[Limit],
        start: datetime,
        end: datetime,
        **kw: Any,
    ) -> CheckReport:
        return check_batches(self.received(), model, limits, start, end, **kw)
