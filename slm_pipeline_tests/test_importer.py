from __future__ import annotations

import gzip
import json
from pathlib import Path

import orjson

from slm_pipeline.core.importer import import_files
from slm_pipeline.core.quarantine import read_quarantine
from slm_pipeline.core.store import LogStore
from slm_pipeline_tests.test_records import record


def _lines(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().splitlines() if line]


def test_demo_traffic_imports_and_reimport_is_idempotent(store: LogStore, demo_traffic: Path, tmp_path: Path):
    first = import_files(store, [demo_traffic], tmp_path / "q")
    lines = _lines(demo_traffic)
    distinct = len({json.loads(line).get("call_id") or line for line in lines})
    assert first.read == len(lines) == 1500
    assert first.quarantined == 0 and first.quarantine_path is None
    assert first.imported == store.count() == distinct  # log lines shipped twice are stored once
    assert first.duplicate == len(lines) - distinct > 0

    again = import_files(store, [demo_traffic], tmp_path / "q")
    assert (again.read, again.imported, again.duplicate) == (1500, 0, 1500)
    assert store.count() == first.imported


def test_payloads_are_stored_exactly(store: LogStore, tmp_path: Path):
    source = tmp_path / "one.jsonl"
    raw = record(call_id="exact-1")
    source.write_bytes(orjson.dumps(raw) + b"\n")
    import_files(store, [source], tmp_path / "q")
    [[row]] = list(store.iter_calls("support-bot"))
    assert orjson.loads(row["request_payload"]) == raw["request"]
    assert orjson.loads(row["response_payload"]) == raw["response"]
    assert row["source"] == "import:one.jsonl" and row["status"] == "ok" and row["model"] == "gpt-4o"


def test_bad_input_is_quarantined_with_its_reason_and_the_rest_goes_on(store: LogStore, tmp_path: Path):
    good = [orjson.dumps(record(call_id=f"good-{i}")) for i in range(5)]
    unknown_role = record(call_id="bad-role")
    unknown_role["request"]["messages"][1]["role"] = "wizard"
    missing = record(call_id="bad-missing")
    del missing["response"]
    mistyped = record(call_id="bad-type", latency_ms="slow")
    huge = record(call_id="bad-huge")
    huge["request"]["messages"][1]["content"] = "x" * (20 * 1024 * 1024)
    lines = [
        good[0],
        b'{"timestamp": "2026-10-01T12:00:00Z", "agent_id": ',  # invalid JSON (truncated)
        good[1],
        orjson.dumps(missing),
        orjson.dumps(mistyped),
        orjson.dumps(unknown_role),
        good[2] + b"\xff\xfe",  # not UTF-8
        b"",  # a blank line is not a record
        orjson.dumps(huge),  # 20 MB
        b"[1, 2, 3]",
        good[3],
        good[3],  # duplicate line
        good[4],
    ]
    source = tmp_path / "mixed.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")

    report = import_files(store, [source, empty], tmp_path / "quarantine")

    assert (report.read, report.imported, report.duplicate, report.quarantined) == (12, 4, 1, 7)
    assert report.read == report.imported + report.duplicate + report.quarantined
    assert store.count() == 4
    entries = read_quarantine(report.quarantine_path)
    by_reason = {e["reason"]: e for e in entries}
    assert set(by_reason) == {"invalid_json", "missing_field", "wrong_type", "unknown_role", "invalid_utf8",
                              "record_too_large", "empty_file"}
    assert by_reason["invalid_json"]["line"] == 2
    assert by_reason["missing_field"]["line"] == 4 and by_reason["missing_field"]["field"] == "response"
    assert by_reason["unknown_role"]["field"] == "request.messages[1].role"
    assert by_reason["invalid_utf8"]["line"] == 7 and "0xff" in by_reason["invalid_utf8"]["message"]
    too_large = by_reason["record_too_large"]
    assert too_large["line"] == 9 and too_large["size_bytes"] > 20 * 1024 * 1024
    assert len(too_large["record"]) <= 4096  # an excerpt, never the whole 20 MB
    assert by_reason["empty_file"]["file"] == str(empty) and "line" not in by_reason["empty_file"]
    wrong_types = [e for e in entries if e["reason"] == "wrong_type"]
    assert {e["field"] for e in wrong_types} == {"latency_ms", "<record>"}
    for entry in entries:
        assert entry["file"] in (str(source), str(empty)) and entry["message"]
    assert any("empty.jsonl" in w for w in report.warnings)
    assert report.quarantine_path.stat().st_mode & 0o077 == 0  # owner-only: records may hold personal data


def test_unreadable_file_is_reported_and_others_still_import(store: LogStore, tmp_path: Path):
    good = tmp_path / "good.jsonl.gz"
    with gzip.open(good, "wb") as handle:
        handle.write(orjson.dumps(record(call_id="gz-1")) + b"\n")
    report = import_files(store, [tmp_path / "missing.jsonl", tmp_path, good], tmp_path / "q")
    assert set(report.unreadable) == {str(tmp_path / "missing.jsonl"), str(tmp_path)}
    assert report.imported == 1 and store.count() == 1


def test_truncated_gzip_keeps_what_was_read_and_quarantines_the_rest(store: LogStore, tmp_path: Path):
    payload = b"".join(orjson.dumps(record(call_id=f"z-{i}")) + b"\n" for i in range(200))
    whole = gzip.compress(payload)
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(whole[: len(whole) // 2])
    report = import_files(store, [broken], tmp_path / "q")
    assert report.reconciles and report.unreadable == {}
    assert report.quarantine_reasons.get("read_error") == 1


def test_batches_span_inserts(store: LogStore, tmp_path: Path):
    source = tmp_path / "many.jsonl"
    source.write_bytes(b"".join(orjson.dumps(record(call_id=f"m-{i % 250}")) + b"\n" for i in range(600)))
    report = import_files(store, [source], tmp_path / "q", batch_size=100)
    assert (report.imported, report.duplicate) == (250, 350)
    assert store.count() == 250
