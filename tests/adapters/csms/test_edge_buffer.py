"""The durable telemetry buffer: order, acknowledgement, bound, restart."""

from __future__ import annotations

from pathlib import Path

from adapters.csms.edge.buffer import TelemetryBuffer


def test_pending_in_order_until_acked_and_survives_reopen(tmp_path: Path) -> None:
    b = TelemetryBuffer(tmp_path / "b.sqlite3")
    seqs = b.append([("telemetry", "f1", b"one"), ("telemetry", "f1", b"two")])
    seqs += b.append([("edge_reports", "c1", b"three")])
    assert seqs == [1, 2, 3]
    b.ack(1)
    b.close()
    b2 = TelemetryBuffer(tmp_path / "b.sqlite3")
    assert [(r.seq, r.value) for r in b2.pending()] == [(2, b"two"), (3, b"three")]
    assert b2.append([("telemetry", "f1", b"four")]) == [4]  # numbers never reused
    assert b2.acked == 1 and b2.pending()[0].idempotency_key("e1") == "e1:2"
    b2.put_state("last_batch", b"{}")
    b2.close()
    assert TelemetryBuffer(tmp_path / "b.sqlite3").get_state("last_batch") == b"{}"


def test_bounded_drops_the_oldest_and_counts(tmp_path: Path) -> None:
    b = TelemetryBuffer(tmp_path / "b.sqlite3", max_records=3)
    b.append([("telemetry", "f", bytes([i])) for i in range(5)])
    assert [r.value for r in b.pending()] == [bytes([2]), bytes([3]), bytes([4])]
    assert b.dropped == 2 and len(b) == 3
