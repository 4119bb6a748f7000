"""Streams: records to typed calls, dead letters, the Kafka runner and its transports, the
in-process bus and the state topic."""
