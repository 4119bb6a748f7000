"""An append-only, hash-chained audit log (JSON lines) and its verifier.

Every DSO limit received or cancelled (OpenADR, REST, later OSCP) and every fallback taken
is appended as one line: a JSON object with

* ``seq`` — 0-based, consecutive;
* ``at`` — when it happened, ISO 8601 UTC with ``Z``;
* ``kind`` — ``limit.received``, ``limit.cancelled``, ``fallback`` …;
* ``source`` — who said so (``openadr``, ``rest``, ``gridflex`` …);
* ``payload`` — a JSON object;
* ``prev`` — the ``hash`` of the entry before (genesis: 64 zeros);
* ``hash`` — SHA-256 (hex) of the canonical JSON (sorted keys, no spaces, UTF-8) of all the
  other fields.

Editing an entry breaks its hash; removing, reordering or duplicating entries breaks the
sequence and the ``prev`` links; a torn write leaves a line that is not JSON.
:func:`verify` reports *every* problem as an :class:`~aggregator.errors.Issue` whose
``ids`` name the line (1-based) and, when known, the seq. Removing entries *at the end*
cannot be seen from the file alone: keep the last hash elsewhere and pass it as ``head``.

:class:`AuditLog` appends under a lock (thread-safe within one process; one writer
process per file), flushes every line and fsyncs it by default; after a failed write the
log closes itself, since a torn line may be on disk. Reopening a log continues
its chain from the last line; a log whose last line is damaged is refused
(:class:`~aggregator.errors.InvalidInput`) rather than continued.

``audit_app`` is the ``gridflex audit`` sub-command group (``verify FILE``).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, Final, Self

import typer

from aggregator.errors import InvalidInput, Issue
from aggregator.limits import DsoLimit
from aggregator.pebc import is_utc

__all__ = [
    "FALLBACK",
    "GENESIS",
    "LIMIT_CANCELLED",
    "LIMIT_RECEIVED",
    "AuditEntry",
    "AuditLog",
    "AuditReport",
    "audit_app",
    "canonical_json",
    "check_log",
    "entry_hash",
    "fallback_taken",
    "limit_cancelled",
    "limit_received",
    "verify",
]

GENESIS: Final = "0" * 64
"""``prev`` of the first entry."""
LIMIT_RECEIVED: Final = "limit.received"
LIMIT_CANCELLED: Final = "limit.cancelled"
FALLBACK: Final = "fallback"

_FIELDS: Final = ("seq", "at", "kind", "source", "payload", "prev", "hash")
_HEX: Final = frozenset("0123456789abcdef")


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, UTF-8 characters as they are; NaN and infinities refused."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def entry_hash(
    seq: int, at: str, kind: str, source: str, payload: Mapping[str, Any], prev: str
) -> str:
    """SHA-256 (hex) of the canonical JSON of an entry's fields other than ``hash``."""
    body = {"seq": seq, "at": at, "kind": kind, "source": source, "payload": payload, "prev": prev}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the audit log."""

    seq: int
    at: str
    kind: str
    source: str
    payload: Mapping[str, Any]
    prev: str
    hash: str

    def to_json(self) -> str:
        """The line as written (canonical JSON, without the newline)."""
        return canonical_json({f: getattr(self, f) for f in _FIELDS})

    def expected_hash(self) -> str:
        return entry_hash(self.seq, self.at, self.kind, self.source, self.payload, self.prev)


# ---------------------------------------------------------------------------- writing


class AuditLog:
    """Append-only writer of one audit log file (created when missing)."""

    def __init__(self, path: Path | str, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._lock = threading.Lock()
        last = _last_entry(self.path)
        self._next_seq = 0 if last is None else last.seq + 1
        self._head = GENESIS if last is None else last.hash
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a", encoding="utf-8", newline="\n")

    @property
    def head(self) -> str:
        """The hash of the last entry (:data:`GENESIS` for an empty log)."""
        return self._head

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def append(
        self, kind: str, payload: Mapping[str, Any], at: datetime, *, source: str = "gridflex"
    ) -> AuditEntry:
        """Append one entry and return it; raises :class:`InvalidInput` for bad values."""
        issues: list[Issue] = []
        if not is_utc(at):
            issues.append(Issue("at", "must be a UTC-aware datetime"))
        if not kind:
            issues.append(Issue("kind", "must not be empty"))
        if not source:
            issues.append(Issue("source", "must not be empty"))
        body: Any = None
        try:  # normalise to what a reader will parse back (tuples → lists …)
            body = json.loads(canonical_json(dict(payload)))
        except (TypeError, ValueError) as exc:
            issues.append(Issue("payload", f"must be JSON (finite numbers, str keys): {exc}"))
        if issues:
            raise InvalidInput(issues)
        with self._lock:
            if self._fh.closed:
                raise ValueError("the audit log is closed")
            seq, prev, when = self._next_seq, self._head, _iso(at)
            digest = entry_hash(seq, when, kind, source, body, prev)
            entry = AuditEntry(seq, when, kind, source, body, prev, digest)
            try:
                self._fh.write(entry.to_json() + "\n")
                self._fh.flush()
                if self.fsync:
                    os.fsync(self._fh.fileno())
            except OSError:
                self._fh.close()  # a torn line may be on disk: never append after it
                raise
            self._next_seq, self._head = seq + 1, digest
        return entry

    def close(self) -> None:
        with self._lock:
            self._fh.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _tail_line(path: Path, chunk: int = 65_536) -> bytes | None:
    """The last non-empty line of ``path`` with its newline(s); ``None`` when there is none."""
    with path.open("rb") as fh:
        pos = fh.seek(0, os.SEEK_END)
        data = b""
        while pos > 0:
            size = min(chunk, pos)
            pos -= size
            fh.seek(pos)
            data = fh.read(size) + data
            cut = data.rstrip(b"\n").rfind(b"\n")
            if cut >= 0:
                return data[cut + 1 :]
    return data if data.rstrip(b"\n") else None


def _last_entry(path: Path) -> AuditEntry | None:
    if not path.exists():
        return None
    raw = _tail_line(path)
    if raw is None:
        return None
    where = f"{path}: last line"
    if not raw.endswith(b"\n"):
        raise InvalidInput([Issue("json", "last line is incomplete (torn write)", (where,))])
    entry, issues = _parse(raw.decode("utf-8", errors="replace"), where)
    if entry is not None and entry.hash != entry.expected_hash():
        issues.append(Issue("hash", "does not match the entry (edited)", (where,)))
    if entry is None or issues:
        raise InvalidInput(issues or [Issue("entry", "not an audit entry", (where,))])
    return entry


# ---------------------------------------------------------------------------- helpers


def limit_received(log: AuditLog, limit: DsoLimit, at: datetime) -> AuditEntry:
    """Log a DSO limit received (source: the limit's ``source``)."""
    payload = {
        "event_id": limit.event_id,
        "target_type": str(limit.target_type),
        "target_id": limit.target_id,
        "start": _iso(limit.start),
        "end": _iso(limit.end),
        "limit_kw": limit.limit_kw,
        "priority": limit.priority,
    }
    return log.append(LIMIT_RECEIVED, payload, at, source=limit.source)


def limit_cancelled(
    log: AuditLog, event_id: str, at: datetime, *, source: str = "rest", found: bool = True
) -> AuditEntry:
    """Log a DSO limit cancelled; ``found`` tells whether the limit was known."""
    return log.append(LIMIT_CANCELLED, {"event_id": event_id, "found": found}, at, source=source)


def fallback_taken(
    log: AuditLog,
    reason: str,
    at: datetime,
    *,
    details: Mapping[str, Any] | None = None,
    source: str = "gridflex",
) -> AuditEntry:
    """Log a fallback (optimizer infeasible or timed out, failsafe, proportional clip …)."""
    payload = {"reason": reason, **(details or {})}
    return log.append(FALLBACK, payload, at, source=source)


# ------------------------------------------------------------------------- verifying


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What :func:`check_log` found: entries read, every problem, and the last hash."""

    entries: int
    issues: tuple[Issue, ...]
    head: str | None

    @property
    def ok(self) -> bool:
        return not self.issues


def _parse(line: str, where: str) -> tuple[AuditEntry | None, list[Issue]]:
    ids = (where,)
    try:
        obj = json.loads(line)
    except ValueError:
        return None, [Issue("json", "not valid JSON (truncated or corrupted)", ids)]
    if not isinstance(obj, dict):
        return None, [Issue("entry", "not a JSON object", ids)]
    issues: list[Issue] = []
    missing = [f for f in _FIELDS if f not in obj]
    extra = sorted(set(obj) - set(_FIELDS))
    if missing:
        issues.append(Issue("entry", f"missing fields: {', '.join(missing)}", ids))
    if extra:
        issues.append(Issue("entry", f"unknown fields: {', '.join(extra)}", ids))
    if missing:
        return None, issues
    types_ok = (
        isinstance(obj["seq"], int)
        and not isinstance(obj["seq"], bool)
        and obj["seq"] >= 0
        and all(isinstance(obj[f], str) for f in ("at", "kind", "source", "prev", "hash"))
        and isinstance(obj["payload"], dict)
    )
    if not types_ok:
        issues.append(Issue("entry", "wrong field types", ids))
        return None, issues
    for f in ("prev", "hash"):
        if len(obj[f]) != 64 or not set(obj[f]) <= _HEX:
            issues.append(Issue(f, "must be 64 lowercase hex digits", ids))
    entry = AuditEntry(**{f: obj[f] for f in _FIELDS})
    return entry, issues


def check_log(path: Path | str, *, head: str | None = None) -> AuditReport:
    """Read and check a whole audit log; ``head`` is the expected hash of the last entry."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        return AuditReport(
            0, (Issue("path", f"cannot read: {exc.strerror or exc}", (str(p),)),), None
        )
    text = raw.decode("utf-8", errors="replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline after the last entry
    issues: list[Issue] = []
    seen: dict[int, int] = {}  # seq → first line
    max_seq = -1
    prev_hash: str | None = None  # stored hash of the previous parsed line
    last_hash: str | None = None
    entries = 0
    for n, line in enumerate(lines, start=1):
        where = f"line {n}"
        if not line.strip():
            issues.append(Issue("json", "empty line", (where,)))
            prev_hash = None
            continue
        entry, found = _parse(line, where)
        issues += found
        if entry is None:
            prev_hash = None
            continue
        entries += 1
        ids = (where, f"seq {entry.seq}")
        if entry.hash != entry.expected_hash():
            issues.append(Issue("hash", "does not match the entry's content (edited)", ids))
        expected_prev = GENESIS if n == 1 else prev_hash
        if expected_prev is not None and entry.prev != expected_prev:
            what = "genesis" if n == 1 else "hash of the entry before"
            issues.append(
                Issue("prev", f"does not match the {what} (entries removed or reordered)", ids)
            )
        if entry.seq in seen:
            issues.append(
                Issue("seq", f"duplicate seq {entry.seq} (first on line {seen[entry.seq]})", ids)
            )
        else:
            seen[entry.seq] = n
            if entry.seq < max_seq:
                issues.append(
                    Issue("seq", f"seq {entry.seq} after seq {max_seq} (entries reordered)", ids)
                )
        max_seq = max(max_seq, entry.seq)
        prev_hash = last_hash = entry.hash
    n_missing = max_seq + 1 - len(seen)  # every seq seen is in 0..max_seq
    if n_missing:
        first = islice((s for s in range(max_seq + 1) if s not in seen), 20)
        shown = ", ".join(str(s) for s in first) + (" …" if n_missing > 20 else "")
        noun = "entry" if n_missing == 1 else "entries"
        issues.append(Issue("seq", f"{n_missing} {noun} missing (removed): seq {shown}", ("file",)))
    if head is not None and head != (last_hash or GENESIS):
        issues.append(
            Issue("head", "the last entry is not the expected head (entries removed at the end)")
        )
    return AuditReport(entries, tuple(issues), last_hash)


def verify(path: Path | str, *, head: str | None = None) -> list[Issue]:
    """Every problem of the audit log at ``path`` (empty when the chain is intact)."""
    return list(check_log(path, head=head).issues)


# ---------------------------------------------------------------------------- the CLI

audit_app = typer.Typer(no_args_is_help=True, help="The hash-chained audit log.")


@audit_app.callback()
def _audit() -> None:
    """The hash-chained audit log (limits received and cancelled, fallbacks taken)."""


@audit_app.command("verify")
def verify_command(
    file: Annotated[Path, typer.Argument(help="The audit log (JSON lines)")],
    head: Annotated[
        str | None, typer.Option(help="Expected hash of the last entry, kept elsewhere")
    ] = None,
) -> None:
    """Check the hash chain: exit 0 when intact, 1 listing every problem otherwise."""
    report = check_log(file, head=head)
    if report.ok:
        typer.echo(f"ok: {report.entries} entries")
        return
    for issue in report.issues:
        typer.echo(f"problem: {issue}")
    typer.echo(f"tampered or damaged: {len(report.issues)} problems, {report.entries} entries")
    raise typer.Exit(code=1)
