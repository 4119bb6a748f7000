"""Operations: health endpoints and Prometheus metrics (later: history)."""
