"""S1 import: JSON Lines of canonical call records into the log store.

Every line is accounted for: it is imported, counted as a duplicate (its
`call_id` is already stored), or quarantined with a reason that names the file,
line and field. Bad records never stop an import; only a file that cannot be
opened at all is reported as unreadable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from pydantic import ValidationError

from slm_pipeline.core.crypto import KeyRing
from slm_pipeline.core.jsonl import Line, iter_lines, open_binary
from slm_pipeline.core.quarantine import QuarantineEntry, QuarantineFile, new_quarantine_path
from slm_pipeline.core.records import CallRecord, call_id_of, describe_validation_error
from slm_pipeline.core.store import LogStore, StoredCall

DEFAULT_BATCH_SIZE = 2000


@dataclass
class ImportReport:
    """What an import did. `read == imported + duplicate + quarantined + skipped` always holds (skipped: records
    of another format that are not LLM calls, or hold no content; see `core/trace_formats`)."""

    read: int = 0
    imported: int = 0
    duplicate: int = 0
    quarantined: int = 0
    skipped: int = 0
    skip_reasons: dict[str, int] = field(default_factory=dict)
    detected: dict[str, str] = field(default_factory=dict)  # file -> the format `--format auto` detected
    quarantine_path: Path | None = None
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)  # file -> why it could not be opened
    warnings: list[str] = field(default_factory=list)

    @property
    def reconciles(self) -> bool:
        return self.read == self.imported + self.duplicate + self.quarantined + self.skipped

    def as_json(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "imported": self.imported,
            "duplicate": self.duplicate,
            "quarantined": self.quarantined,
            "skipped": self.skipped,
            "skip_reasons": self.skip_reasons,
            "detected": self.detected,
            "quarantine_path": str(self.quarantine_path) if self.quarantine_path else None,
        }


class StoreUnavailableError(RuntimeError):
    """The log store stopped answering during an import (server restarted, connection lost).

    Batches committed before stay stored; re-running the same import is safe and completes it,
    since records already stored count as duplicates (inserts are idempotent on `call_id`)."""

    def __init__(self, message: str, report: ImportReport) -> None:
        super().__init__(message)
        self.report = report


class _Rejected(Exception):
    def __init__(self, reason: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.reason, self.message, self.field = reason, message, field


def parse_line(data: bytes) -> tuple[CallRecord, dict[str, Any]]:
    """Decode and validate one line; raise `_Rejected` with a quarantine reason."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Rejected(
            "invalid_utf8", f"not UTF-8: byte 0x{data[exc.start]:02x} at position {exc.start}"
        ) from None
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise _Rejected("invalid_json", f"invalid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise _Rejected("wrong_type", f"a record must be a JSON object, got {type(raw).__name__}", "<record>")
    try:
        return CallRecord.model_validate(raw), raw
    except ValidationError as exc:
        reason, field_path, message = describe_validation_error(exc)
        raise _Rejected(reason, message, field_path) from None


def seal_payloads(call_id: str, request: bytes, response: bytes,
                  key_ring: KeyRing | None) -> tuple[str | None, bytes, bytes]:
    """(key id, request, response): encrypted with the ring's active key, bound to the call id; as given without a ring."""
    if key_ring is None:
        return None, request, response
    key_id, request = key_ring.encrypt(request, call_id)
    return key_id, request, key_ring.encrypt(response, call_id)[1]


def to_stored_call(record: CallRecord, raw: dict[str, Any], source: str, now: datetime,
                   key_ring: KeyRing | None = None) -> StoredCall:
    """A store row; the payloads are sealed with the key ring's active key when one is configured."""
    call_id = call_id_of(record, raw)
    key_id, request, response = seal_payloads(call_id, orjson.dumps(raw["request"]), orjson.dumps(raw["response"]),
                                              key_ring)
    return StoredCall(
        call_id=call_id,
        agent_id=record.agent_id,
        workload_id=record.workload_id,
        timestamp=record.timestamp,
        latency_ms=record.latency_ms,
        human_facing=record.human_facing,
        status="error" if record.failed else "ok",
        model=record.request.model,
        tags=record.tags,
        request_payload=request,
        response_payload=response,
        payload_key_id=key_id,
        source=source,
        ingested_at=now,
    )


class Importer:
    """Imports files into a store, batching inserts and quarantining bad records."""

    def __init__(
        self,
        store: LogStore,
        quarantine_dir: Path,
        *,
        max_record_bytes: int = 8 * 1024 * 1024,
        batch_size: int = DEFAULT_BATCH_SIZE,
        on_bytes: Callable[[int], None] | None = None,
        key_ring: KeyRing | None = None,
    ) -> None:
        self.store = store
        self.key_ring = key_ring if key_ring is not None else KeyRing.from_environment()
        self.max_record_bytes = max_record_bytes
        self.batch_size = batch_size
        self.on_bytes = on_bytes or (lambda _n: None)
        self.quarantine = QuarantineFile(new_quarantine_path(quarantine_dir))
        self.report = ImportReport()
        self._batch: dict[str, StoredCall] = {}
        self._where = ""  # the file and line last read, for an error message

    def import_files(self, paths: Iterable[Path]) -> ImportReport:
        try:
            for path in paths:
                self._import_file(Path(path))
            self._flush()
        finally:
            self.quarantine.close()
        self.report.quarantine_reasons = dict(self.quarantine.counts)
        if self.quarantine.counts:
            self.report.quarantine_path = self.quarantine.path
        assert self.report.reconciles, self.report
        return self.report

    def _open(self, path: Path):
        """The file's byte stream, or None with the reason recorded as unreadable."""
        try:
            return open_binary(path)
        except OSError as exc:
            self.report.unreadable[str(path)] = exc.strerror or str(exc)
            return None

    def _import_file(self, path: Path) -> None:
        stream = self._open(path)
        if stream is None:
            return
        source = f"import:{path.name}"
        records = 0
        last_line = 0
        with stream:
            try:
                for line in iter_lines(stream, self.max_record_bytes):
                    last_line = line.number
                    self.on_bytes(line.size + 1)
                    if not line.oversized and not line.data.strip():
                        continue  # a blank line is not a record
                    records += 1
                    self._take(path, line, source)
            except (OSError, EOFError) as exc:  # a truncated gzip stream, a vanished file, ...
                self._quarantine_file(path, last_line + 1, "read_error", f"reading stopped: {exc}")
        if records == 0 and last_line == 0 and str(path) not in self.report.unreadable:
            self._quarantine_file(path, None, "empty_file", "the file holds no record")

    def _take(self, path: Path, line: Line, source: str) -> None:
        self.report.read += 1
        self._where = f"{path.name}, line {line.number:,}"
        if line.oversized:
            self._reject(path, line, _Rejected(
                "record_too_large",
                f"record of {line.size:,} bytes exceeds the limit of {self.max_record_bytes:,} bytes "
                "(SLM_PIPELINE_MAX_RECORD_BYTES)",
            ))
            return
        try:
            record, raw = parse_line(line.data)
        except _Rejected as rejected:
            self._reject(path, line, rejected)
            return
        row = to_stored_call(record, raw, source, datetime.now(timezone.utc), self.key_ring)
        if row["call_id"] in self._batch:
            self.report.duplicate += 1
            return
        self._batch[row["call_id"]] = row
        if len(self._batch) >= self.batch_size:
            self._flush()

    def _flush(self) -> None:
        if not self._batch:
            return
        try:
            inserted = self.store.insert(list(self._batch.values()))
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:  # the server went away, not a bad row
            reason = str(exc.orig or exc).strip().splitlines()[0][:300]
            raise StoreUnavailableError(
                f"the log store stopped answering during the import (at {self._where}): {reason}. "
                f"{self.report.imported:,} records were stored before; re-run the same import once the store "
                "answers: records already stored count as duplicates, none is stored twice.", self.report,
            ) from exc
        self.report.imported += len(inserted)
        self.report.duplicate += len(self._batch) - len(inserted)
        self._batch.clear()

    def _reject(self, path: Path, line: Line, rejected: _Rejected) -> None:
        self.report.quarantined += 1
        record = line.data.decode("utf-8", errors="replace")  # an oversized line keeps its excerpt
        self.quarantine.add(QuarantineEntry(
            file=str(path), line=line.number, offset=line.offset, size_bytes=line.size,
            reason=rejected.reason, field=rejected.field, message=rejected.message, record=record,
        ))

    def _quarantine_file(self, path: Path, line: int | None, reason: str, message: str) -> None:
        entry = QuarantineEntry(file=str(path), line=line, reason=reason, message=message)
        self.quarantine.add(entry)
        self.report.warnings.append(entry.describe())


def import_files(store: LogStore, paths: Iterable[Path], quarantine_dir: Path, **options: Any) -> ImportReport:
    """Import JSONL files into `store`; see `Importer` for the options."""
    return Importer(store, quarantine_dir, **options).import_files(paths)

