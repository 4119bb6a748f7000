"""One service replica: typed calls in (telemetry, limits, frequency, tick), setpoint batches
and typed events out.

* :mod:`~aggregator.service.replica` — :class:`Service`, the two loops on injected parts;
* :mod:`~aggregator.service.config` — :class:`ServiceConfig` and price series;
* :mod:`~aggregator.service.request` — the plan request of now;
* :mod:`~aggregator.service.jobs`, :mod:`~aggregator.service.planrunner`,
  :mod:`~aggregator.service.plans` — the slow loop off the fast path: job values, the
  runners (inline, worker process) and the desk that decides when to plan and which plan
  is used;
* :mod:`~aggregator.service.frame` — the fast loop's frame (caps of now, late starters,
  failsafe values);
* :mod:`~aggregator.service.batches` — leases, per-CSMS batches, ``valid_until``;
* :mod:`~aggregator.service.events` — the typed events and the event sink protocol.
"""
