"""The hash-chained audit log: a good chain verifies, every kind of tampering is found."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapters.dso.audit import (
    FALLBACK,
    GENESIS,
    LIMIT_CANCELLED,
    LIMIT_RECEIVED,
    AuditLog,
    audit_app,
    canonical_json,
    check_log,
    entry_hash,
    fallback_taken,
    limit_cancelled,
    limit_received,
    verify,
)
from aggregator.errors import InvalidInput, Issue
from aggregator.limits import DsoLimit, TargetType

T0 = datetime(2026, 1, 14, 17, 0, tzinfo=UTC)


def write_chain(path: Path, n: int = 5) -> list[str]:
    """``n`` entries (limits, a cancellation, a fallback …); returns the lines."""
    with AuditLog(path, fsync=False) as log:
        for i in range(n):
            at = T0 + timedelta(minutes=i)
            if i % 3 == 0:
                lim = DsoLimit(
                    event_id=f"ev{i}",
                    target_type=TargetType.FEEDER,
                    target_id="f1",
                    start=at,
                    end=at + timedelta(hours=2),
                    limit_kw=25.0 + i,
                    source="openadr",
                )
                limit_received(log, lim, at)
            elif i % 3 == 1:
                limit_cancelled(log, f"ev{i - 1}", at, source="rest")
            else:
                fallback_taken(log, "optimizer_infeasible", at, details={"plan": i})
    return path.read_text(encoding="utf-8").splitlines()


def rewrite(path: Path, lines: list[str], *, final_newline: bool = True) -> None:
    path.write_text("\n".join(lines) + ("\n" if final_newline else ""), encoding="utf-8")


def by_field(issues: list[Issue], field: str) -> list[Issue]:
    return [i for i in issues if i.field == field]


def test_an_intact_chain_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path)
    assert verify(path) == []
    entries = [json.loads(line) for line in lines]
    assert [e["seq"] for e in entries] == [0, 1, 2, 3, 4]
    assert entries[0]["prev"] == GENESIS
    for before, after in pairwise(entries):
        assert after["prev"] == before["hash"]
    assert [e["kind"] for e in entries] == [
        LIMIT_RECEIVED,
        LIMIT_CANCELLED,
        FALLBACK,
        LIMIT_RECEIVED,
        LIMIT_CANCELLED,
    ]
    first = entries[0]
    assert first["at"] == "2026-01-14T17:00:00Z" and first["source"] == "openadr"
    assert first["payload"] == {
        "event_id": "ev0",
        "target_type": "feeder",
        "target_id": "f1",
        "start": "2026-01-14T17:00:00Z",
        "end": "2026-01-14T19:00:00Z",
        "limit_kw": 25.0,
        "priority": 0,
    }
    assert entries[2]["payload"] == {"reason": "optimizer_infeasible", "plan": 2}
    # the hash is SHA-256 over the canonical JSON of the other fields
    body = {k: v for k, v in first.items() if k != "hash"}
    assert first["hash"] == entry_hash(**body)
    assert lines[0] == canonical_json(first)  # lines are written canonically
    report = check_log(path)
    assert report.ok and report.entries == 5 and report.head == entries[-1]["hash"]


def test_an_empty_or_new_log_verifies(tmp_path: Path) -> None:
    path = tmp_path / "new.jsonl"
    AuditLog(path).close()
    assert path.exists() and verify(path) == []
    assert check_log(path).entries == 0


def test_an_edited_payload_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path)
    entry = json.loads(lines[3])
    entry["payload"]["limit_kw"] = 1000.0  # someone relaxes a DSO limit after the fact
    lines[3] = json.dumps(entry)
    rewrite(path, lines)
    issues = verify(path)
    assert issues == [
        Issue("hash", "does not match the entry's content (edited)", ("line 4", "seq 3"))
    ]


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path)
    entry = json.loads(lines[1])
    entry["source"] = "forged"
    entry["hash"] = entry_hash(**{k: v for k, v in entry.items() if k != "hash"})
    lines[1] = json.dumps(entry)
    rewrite(path, lines)
    issues = verify(path)
    assert [(i.field, i.ids) for i in issues] == [("prev", ("line 3", "seq 2"))]


def test_a_removed_middle_entry_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path)
    del lines[2]
    rewrite(path, lines)
    issues = verify(path)
    assert Issue("seq", "1 entry missing (removed): seq 2", ("file",)) in issues
    prev = by_field(issues, "prev")
    assert [i.ids for i in prev] == [("line 3", "seq 3")]
    assert not by_field(issues, "hash")


def test_a_removed_first_entry_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path)
    rewrite(path, lines[1:])
    issues = verify(path)
    assert [i.ids for i in by_field(issues, "prev")] == [("line 1", "seq 1")]
    assert "genesis" in by_field(issues, "prev")[0].message
    assert "seq 0" in by_field(issues, "seq")[0].message


def test_swapped_entries_are_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path)
    lines[1], lines[2] = lines[2], lines[1]
    rewrite(path, lines)
    issues = verify(path)
    assert Issue("seq", "seq 1 after seq 2 (entries reordered)", ("line 3", "seq 1")) in issues
    assert [i.ids for i in by_field(issues, "prev")] == [
        ("line 2", "seq 2"),
        ("line 3", "seq 1"),
        ("line 4", "seq 3"),
    ]
    assert not by_field(issues, "hash")
    assert not [i for i in issues if "missing" in i.message]


def test_a_truncated_last_line_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path)
    lines[-1] = lines[-1][: len(lines[-1]) // 2]  # a torn write
    rewrite(path, lines, final_newline=False)
    issues = verify(path)
    assert issues == [Issue("json", "not valid JSON (truncated or corrupted)", ("line 5",))]
    with pytest.raises(InvalidInput, match="incomplete"):
        AuditLog(path)  # not continued silently


def test_a_duplicated_entry_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path)
    lines.insert(3, lines[2])
    rewrite(path, lines)
    issues = verify(path)
    assert Issue("seq", "duplicate seq 2 (first on line 3)", ("line 4", "seq 2")) in issues
    assert [i.ids for i in by_field(issues, "prev")] == [("line 4", "seq 2")]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path, n=8)
    edited = json.loads(lines[1])
    edited["payload"]["event_id"] = "other"
    lines[1] = canonical_json(edited)
    del lines[4]
    lines.insert(2, "not json at all")
    lines.append('{"seq": 9}')
    rewrite(path, lines)
    fields = [i.field for i in verify(path)]
    assert {"hash", "json", "seq", "prev", "entry"} <= set(fields)


def test_a_forged_huge_seq_is_reported_cheaply(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path, n=2)
    entry = json.loads(lines[-1])
    entry["seq"] = 10**15
    lines[-1] = canonical_json(entry)
    rewrite(path, lines)
    gaps = [i for i in verify(path) if "missing" in i.message]
    assert len(gaps) == 1 and gaps[0].message.startswith(f"{10**15 - 1} entries missing")


def test_malformed_lines_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path, n=2)
    good = json.loads(lines[1])
    extra = dict(good, note="added")
    typed = dict(good, seq="1")
    hexed = dict(good, prev="XYZ")
    rewrite(path, [lines[0], "", "[1, 2]", canonical_json(extra), canonical_json(typed),
                   canonical_json(hexed)])  # fmt: skip
    issues = verify(path)
    messages = {(i.field, i.ids[0]): i.message for i in issues}
    assert messages[("json", "line 2")] == "empty line"
    assert messages[("entry", "line 3")] == "not a JSON object"
    assert messages[("entry", "line 4")] == "unknown fields: note"
    assert messages[("entry", "line 5")] == "wrong field types"
    assert messages[("prev", "line 6")] == "must be 64 lowercase hex digits"


def test_a_closed_log_refuses_appends(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.close()
    with pytest.raises(ValueError, match="closed"):
        log.append("x", {}, T0)


def test_removing_the_last_entries_needs_the_head(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path)
    head = json.loads(lines[-1])["hash"]
    assert verify(path, head=head) == []
    rewrite(path, lines[:-1])
    assert verify(path) == []  # invisible from the file alone …
    assert [i.field for i in verify(path, head=head)] == ["head"]  # … but not with the head


def test_reopening_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path, n=3)
    last = json.loads(lines[-1])
    with AuditLog(path) as log:
        assert log.next_seq == 3 and log.head == last["hash"]
        entry = fallback_taken(log, "failsafe", T0 + timedelta(hours=1))
    assert entry.seq == 3 and entry.prev == last["hash"]
    assert verify(path) == []
    assert check_log(path).entries == 4


def test_concurrent_appends_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, fsync=False) as log:

        def work(k: int) -> None:
            for i in range(25):
                log.append("test", {"thread": k, "i": i}, T0)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    report = check_log(path)
    assert report.ok and report.entries == 100


def test_bad_entries_are_refused(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit.jsonl") as log:
        with pytest.raises(InvalidInput) as exc:
            log.append("", {"x": float("nan")}, datetime(2026, 1, 1), source="")  # noqa: DTZ001
        assert {i.field for i in exc.value.issues} == {"at", "kind", "source", "payload"}
        with pytest.raises(InvalidInput):
            log.append("x", {"when": T0}, T0)  # not JSON
        assert log.next_seq == 0
        # tuples and other JSON-able values are stored as a reader will see them
        entry = log.append("x", {"pair": (1, 2)}, T0.astimezone(UTC))
        assert entry.payload == {"pair": [1, 2]}
    assert verify(tmp_path / "audit.jsonl") == []


def test_an_edited_last_entry_is_not_continued(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path, n=2)
    entry = json.loads(lines[-1])
    entry["kind"] = "nothing"
    lines[-1] = json.dumps(entry)
    rewrite(path, lines)
    with pytest.raises(InvalidInput, match="edited"):
        AuditLog(path)


def test_a_missing_file_is_a_problem(tmp_path: Path) -> None:
    issues = verify(tmp_path / "nope.jsonl")
    assert [i.field for i in issues] == ["path"]


# ------------------------------------------------------------------------------- CLI


def test_cli_verify_exits_0_on_an_intact_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_chain(path)
    result = CliRunner().invoke(audit_app, ["verify", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "ok: 5 entries"


def test_cli_verify_exits_1_and_lists_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path)
    lines[1], lines[2] = lines[2], lines[1]
    rewrite(path, lines)
    result = CliRunner().invoke(audit_app, ["verify", str(path)])
    assert result.exit_code == 1
    problems = [line for line in result.output.splitlines() if line.startswith("problem: ")]
    assert len(problems) == len(verify(path)) == 4
    assert "entries reordered" in result.output


def test_cli_verify_with_head(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path)
    rewrite(path, lines[:-1])
    head = json.loads(lines[-1])["hash"]
    result = CliRunner().invoke(audit_app, ["verify", str(path), "--head", head])
    assert result.exit_code == 1 and "head" in result.output


# ------------------------------------------------------- whole chain on open, the head


def test_a_log_tampered_in_the_middle_is_not_continued(tmp_path: Path) -> None:
    """Regression (issue 15.6): opening used to check only the last line, so serve appended
    to a chain edited in the middle."""
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path)
    entry = json.loads(lines[1])
    entry["payload"]["found"] = False
    lines[1] = json.dumps(entry)
    rewrite(path, lines)
    before = path.read_bytes()
    with pytest.raises(InvalidInput) as err:
        AuditLog(path)
    lead = err.value.issues[0]
    assert (lead.field, lead.code, lead.ids) == ("chain", "audit_chain_broken", (str(path),))
    assert "line 2" in lead.message  # where it broke
    assert err.value.issues[1:] == tuple(verify(path))
    assert path.read_bytes() == before  # nothing appended


def test_a_log_with_a_removed_middle_entry_is_not_continued(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path)
    rewrite(path, lines[:2] + lines[3:])
    with pytest.raises(InvalidInput) as err:
        AuditLog(path)
    assert err.value.issues[0].code == "audit_chain_broken"


def test_a_torn_last_line_is_not_continued(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path)
    rewrite(path, lines, final_newline=False)
    with pytest.raises(InvalidInput) as err:
        AuditLog(path)
    assert [i.code for i in err.value.issues] == ["audit_chain_broken", "torn_write"]


def test_head_listeners_and_the_metric_follow_every_append(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from adapters.dso.audit import export_head

    path = tmp_path / "audit.jsonl"
    write_chain(path, n=3)
    registry = CollectorRegistry()
    heads: list[tuple[str, int]] = []
    with AuditLog(path, fsync=False) as log:
        log.on_head(lambda h, n: heads.append((h, n)))
        export_head(log, registry)
        entry = fallback_taken(log, "x", T0)
        assert heads[-1] == (entry.hash, 4) == (log.head, log.next_seq)
        labels = {"hash": entry.hash, "path": str(path)}
        assert registry.get_sample_value("gridflex_audit_head_info", labels) == 1.0
        assert registry.get_sample_value("gridflex_audit_entries") == 4.0
    assert heads[0] == (json.loads(path.read_text().splitlines()[2])["hash"], 3)


def test_cli_head_prints_the_hash_verify_needs(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path)
    result = CliRunner().invoke(audit_app, ["head", str(path)])
    assert result.exit_code == 0, result.output
    head = result.output.strip()
    assert head == json.loads(lines[-1])["hash"]
    rewrite(path, lines[:-1])  # truncation at the end: only the head can tell
    assert CliRunner().invoke(audit_app, ["verify", str(path)]).exit_code == 0
    result = CliRunner().invoke(audit_app, ["verify", str(path), "--head", head])
    assert result.exit_code == 1 and "head" in result.output


def test_cli_head_of_an_empty_log_and_of_a_broken_one(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    AuditLog(path).close()
    result = CliRunner().invoke(audit_app, ["head", str(path)])
    assert (result.exit_code, result.output.strip()) == (0, GENESIS)
    lines = write_chain(tmp_path / "b.jsonl")
    rewrite(tmp_path / "b.jsonl", [lines[0], lines[2]])
    result = CliRunner().invoke(audit_app, ["head", str(tmp_path / "b.jsonl")])
    assert result.exit_code == 1 and "problem:" in result.output
