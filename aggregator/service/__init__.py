"""One service replica: typed calls in (telemetry, limits, frequency, tick), typed events
and setpoint batches out. See :mod:`aggregator.service.replica`."""
