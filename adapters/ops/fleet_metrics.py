"""Gauges an operator's dashboard and alerts need beyond the event counters.

* ``gridflex_power_kw{level,id}`` — measured power of the live sessions per site, feeder
  and the fleet; ``gridflex_limit_kw{level,id}`` — the import cap in force now (topology
  limit or a DSO limit, whichever is lower); both set by :meth:`FleetGauges.observe` from
  the service loop (once a second);
* ``gridflex_lease_age_seconds{csms}`` / ``gridflex_lease_remaining_seconds{csms}`` — how
  old the last delivered setpoint batch per CSMS is and how long its lease still holds,
  computed at scrape time from the batches a :meth:`FleetGauges.leases` sink saw (a CSMS
  whose lease runs out falls back to its failsafe power);
* ``gridflex_consumer_lag_records{topic,partition}`` — records behind the partition's end
  (Kafka mode, :meth:`FleetGauges.set_consumer_lag`).

Invariants: the setpoint-sink wrapper only stores two floats per CSMS (no lock, no I/O);
the lease gauges are computed against the wall clock when scraped, so a stalled service
shows a growing age instead of a frozen one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from aggregator.interfaces import SetpointSink
from aggregator.messages import SetpointBatch

if TYPE_CHECKING:
    from aggregator.service.replica import Service

__all__ = ["FleetGauges"]


class _LeaseSink:
    """A setpoint sink that notes issue time and lease end of each delivered batch."""

    def __init__(self, inner: SetpointSink, seen: dict[str, tuple[float, float]]) -> None:
        self._inner = inner
        self._seen = seen

    def publish(self, batch: SetpointBatch) -> bool | None:
        ok = self._inner.publish(batch)
        if ok is not False:
            self._seen[batch.csms_id] = (
                batch.issued_at.timestamp(),
                batch.valid_until.timestamp(),
            )
        return ok


class _LeaseCollector(Collector):
    def __init__(self, seen: Mapping[str, tuple[float, float]], now: Callable[[], float]) -> None:
        self._seen = seen
        self._now = now

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self._now()
        age = GaugeMetricFamily(
            "gridflex_lease_age_seconds",
            "Seconds since the last delivered setpoint batch per CSMS",
            labels=["csms"],
        )
        left = GaugeMetricFamily(
            "gridflex_lease_remaining_seconds",
            "Seconds until the last delivered batch's lease ends per CSMS (< 0: failsafe)",
            labels=["csms"],
        )
        for csms, (issued_s, until_s) in sorted(self._seen.items()):
            age.add_metric([csms], now - issued_s)
            left.add_metric([csms], until_s - now)
        yield age
        yield left


class FleetGauges:
    """Power, caps, leases and consumer lag of one replica, in its metrics registry."""

    def __init__(self, registry: CollectorRegistry, now: Callable[[], float] = time.time) -> None:
        self.power = Gauge(
            "gridflex_power_kw",
            "Measured power of live sessions",
            ["level", "id"],
            registry=registry,
        )
        self.cap = Gauge(
            "gridflex_limit_kw",
            "Import cap in force (topology or DSO)",
            ["level", "id"],
            registry=registry,
        )
        self.lag = Gauge(
            "gridflex_consumer_lag_records",
            "Records between the group's position and the partition end",
            ["topic", "partition"],
            registry=registry,
        )
        self._seen: dict[str, tuple[float, float]] = {}
        registry.register(_LeaseCollector(self._seen, now))

    def leases(self, sink: SetpointSink) -> SetpointSink:
        """``sink``, with each delivered batch's lease noted for the lease gauges."""
        return _LeaseSink(sink, self._seen)

    def observe(self, service: Service | None) -> dict[str, float]:
        """Set power and caps from the service (on its loop); returns the headroom per
        feeder (cap now minus the limit-safe base) for the headroom gauge."""
        if service is None:
            return {}
        topo = service.topology
        kw = service.measured_power_kw()
        caps = service.limits.caps_at(service.clock.now())
        for i, s in enumerate(topo.sites):
            self.power.labels("site", s.site_id).set(kw.get(s.site_id, 0.0))
            self.cap.labels("site", s.site_id).set(float(caps.site_kw[i]))
        for i, f in enumerate(topo.feeders):
            self.power.labels("feeder", f.feeder_id).set(kw.get(f.feeder_id, 0.0))
            self.cap.labels("feeder", f.feeder_id).set(float(caps.feeder_kw[i]))
        self.power.labels("fleet", "fleet").set(kw.get("fleet", 0.0))
        fleet_cap = float(caps.fleet_kw)
        if math.isfinite(fleet_cap):
            self.cap.labels("fleet", "fleet").set(fleet_cap)
        return service.feeder_headroom_kw()

    def set_consumer_lag(self, lag: Mapping[tuple[str, int], int]) -> None:
        for (topic, partition), n in lag.items():
            self.lag.labels(topic, str(partition)).set(n)
