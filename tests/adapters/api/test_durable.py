"""Idempotency records on their Kafka topic: the codec (the store itself runs against a
real broker in tests/integration/test_api_durable.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.api.durable import decode_record, encode_record
from adapters.api.idempotency import StoredResponse


@given(
    st.text(min_size=1, max_size=40),
    st.text(min_size=1, max_size=255),
    st.sampled_from([200, 201, 204, 409]),
    st.binary(max_size=500),
    st.integers(min_value=0, max_value=10**9),
)
def test_records_round_trip(dso: str, key: str, code: int, body: bytes, s: int) -> None:
    stored = StoredResponse(
        "ab" * 32, code, body, datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=s)
    )
    k, v = encode_record(dso, key, stored)
    assert decode_record(k, v) == (dso, key, stored)
    # the record key is the (DSO, key) pair alone: compaction keeps the newest per pair
    assert encode_record(dso, key, stored)[0] == k


@pytest.mark.parametrize(
    "key, value",
    [
        (b"", b"{}"),
        (b'["d", "k"]', b"not json"),
        (
            b'["d", "k"]',
            b'{"fingerprint": "x", "status_code": 201, "body_b64": "", '
            b'"at": "2026-01-01T00:00:00"}',
        ),
        (
            b'["d", "k"]',
            b'{"fingerprint": "x", "status_code": 201, "body_b64": "***", '
            b'"at": "2026-01-01T00:00:00Z"}',
        ),
    ],
)
def test_what_is_not_a_record_is_refused(key: bytes, value: bytes) -> None:
    with pytest.raises(ValueError):
        decode_record(key, value)
