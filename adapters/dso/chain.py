"""The audit log's format and its verifier: one JSON line per entry, hash-chained.

Every line is a JSON object with

* ``seq`` — 0-based, consecutive;
* ``at`` — when it happened, ISO 8601 UTC with ``Z``;
* ``kind`` — ``limit.received``, ``limit.cancelled``, ``fallback`` …;
* ``source`` — who said so (``openadr``, ``rest:<dso>``, ``service`` …);
* ``payload`` — a JSON object;
* ``prev`` — the ``hash`` of the entry before (genesis: 64 zeros);
* ``hash`` — SHA-256 (hex) of the canonical JSON (sorted keys, no spaces, UTF-8) of all the
  other fields.

Editing an entry breaks its hash; removing, reordering or duplicating entries breaks the
sequence and the ``prev`` links; a torn write leaves a line that is not JSON.
:func:`check_log` reports *every* problem as an :class:`~aggregator.errors.Issue` whose
``ids`` name the line (1-based) and, when known, the seq, and tells the head (the hash of
the last entry) and the first line where the chain broke. Removing entries *at the end*
cannot be seen from the file alone: keep the head elsewhere (``gridflex audit head``, the
``gridflex_audit_head_info`` metric, the ``audit_head`` log line) and pass it as ``head``.

This module reads and checks; :mod:`adapters.dso.audit` writes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Final

from aggregator.errors import Issue

__all__ = [
    "GENESIS",
    "AuditEntry",
    "AuditReport",
    "canonical_json",
    "check_log",
    "entry_hash",
    "parse_entry",
    "verify",
]

GENESIS: Final = "0" * 64
"""``prev`` of the first entry."""

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


def parse_entry(line: str, where: str) -> tuple[AuditEntry | None, list[Issue]]:
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
        entry, found = parse_entry(line, where)
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
