"""A durable, bounded on-disk buffer of upstream records (telemetry, grid signals, reports).

Every record the edge sends upstream is first appended here (SQLite, WAL, one commit per
append batch) with a sequence number that only grows, also across restarts. The runner
sends :meth:`TelemetryBuffer.pending` records in order and calls :meth:`ack` with the
last sequence number upstream acknowledged; only then are they deleted. So:

* an edge restart (or crash) loses nothing that :meth:`append` returned for;
* a record is sent again only if the edge died between upstream's acknowledgement and
  :meth:`ack`, or a send was only partly confirmed — each record carries
  ``<edge id>:<seq>`` as its idempotency key (:meth:`Buffered.idempotency_key`) so
  upstream can drop such a repeat;
* the buffer is bounded (``max_records``): when full, the *oldest* records are dropped
  and counted in ``dropped`` (persisted), never the newest.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Buffered", "TelemetryBuffer"]


@dataclass(frozen=True, slots=True)
class Buffered:
    """One buffered upstream record."""

    seq: int
    topic: str
    key: str
    value: bytes

    def idempotency_key(self, edge_id: str) -> str:
        return f"{edge_id}:{self.seq}"


class TelemetryBuffer:
    """The on-disk buffer; one file, one writer (the edge process)."""

    def __init__(self, path: Path | str, *, max_records: int = 1_000_000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_records = max_records
        self._db = sqlite3.connect(str(self.path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS rec (seq INTEGER PRIMARY KEY, topic TEXT NOT NULL,"
            " key TEXT NOT NULL, value BLOB NOT NULL)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('next_seq', 1), ('dropped', 0)")
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('acked', 0)")

    def _meta(self, k: str) -> int:
        row = self._db.execute("SELECT v FROM meta WHERE k = ?", (k,)).fetchone()
        return int(row[0])

    @property
    def dropped(self) -> int:
        return self._meta("dropped")

    @property
    def acked(self) -> int:
        """The highest sequence number upstream acknowledged."""
        return self._meta("acked")

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM rec").fetchone()[0])

    def append(self, records: list[tuple[str, str, bytes]]) -> list[int]:
        """Append ``(topic, key, value)`` records durably; returns their sequence numbers."""
        if not records:
            return []
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            nxt = self._meta("next_seq")
            seqs = list(range(nxt, nxt + len(records)))
            db.executemany(
                "INSERT INTO rec VALUES (?, ?, ?, ?)",
                [(s, t, k, v) for s, (t, k, v) in zip(seqs, records, strict=True)],
            )
            db.execute("UPDATE meta SET v = ? WHERE k = 'next_seq'", (nxt + len(records),))
            over = int(db.execute("SELECT COUNT(*) FROM rec").fetchone()[0]) - self.max_records
            if over > 0:
                db.execute(
                    "DELETE FROM rec WHERE seq IN (SELECT seq FROM rec ORDER BY seq LIMIT ?)",
                    (over,),
                )
                db.execute("UPDATE meta SET v = v + ? WHERE k = 'dropped'", (over,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return seqs

    def pending(self, limit: int = 5_000) -> list[Buffered]:
        """The oldest unacknowledged records, in sequence order."""
        rows = self._db.execute(
            "SELECT seq, topic, key, value FROM rec ORDER BY seq LIMIT ?", (limit,)
        ).fetchall()
        return [Buffered(int(s), str(t), str(k), bytes(v)) for s, t, k, v in rows]

    def ack(self, up_to_seq: int) -> None:
        """Upstream acknowledged every record up to ``up_to_seq``: delete them."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        db.execute("DELETE FROM rec WHERE seq <= ?", (up_to_seq,))
        db.execute("UPDATE meta SET v = MAX(v, ?) WHERE k = 'acked'", (up_to_seq,))
        db.execute("COMMIT")

    def put_state(self, name: str, value: bytes) -> None:
        """Keep a small named value (e.g. the last applied batch) with the buffer."""
        self._db.execute("CREATE TABLE IF NOT EXISTS state (k TEXT PRIMARY KEY, v BLOB NOT NULL)")
        self._db.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (name, value))

    def get_state(self, name: str) -> bytes | None:
        self._db.execute("CREATE TABLE IF NOT EXISTS state (k TEXT PRIMARY KEY, v BLOB NOT NULL)")
        row = self._db.execute("SELECT v FROM state WHERE k = ?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    def close(self) -> None:
        self._db.close()
