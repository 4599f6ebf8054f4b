"""File import of the formats S1 takes besides its own JSONL: `--format auto` detects each file's format from
its first record and says what it detected.

    otlp-json      OTLP/JSON trace requests, one a line (the OpenTelemetry Collector's file exporter) or one
                   document; spans of any supported convention (GenAI, OpenLLMetry, OpenInference, Langfuse)
    openinference  Phoenix's span export: one span a line, `context.span_id`, nested or dotted `attributes`
    litellm        LiteLLM StandardLoggingPayload, one a line (or `{"standard_logging_object": ...}`)
    langfuse       Langfuse observations, one a line or `{"data": [...]}`
    dfw            NVIDIA Data Flywheel log documents (or Elasticsearch hits / search answers of them)
    canonical      this project's call records

Counting is per record (a span, a payload, an observation, a document), never per line:
read = imported + duplicate + quarantined + skipped, every skip and quarantine with its reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from slm_pipeline.core.importer import Importer, _Rejected, parse_line, to_stored_call
from slm_pipeline.core.jsonl import Line, iter_lines, open_binary
from slm_pipeline.core.quarantine import QuarantineEntry
from slm_pipeline.core.records import AGENT_ID_PATTERN
from slm_pipeline.core.trace_formats import dfw, langfuse, litellm, otlp
from slm_pipeline.core.trace_formats.calls import (
    Converted,
    Outcome,
    Rejected,
    Skipped,
    langfuse_to_record,
    litellm_to_record,
    span_to_record,
)
from slm_pipeline.core.trace_formats.spans import Span, SpanEvent, flatten, iter_spans

FORMATS = ("auto", "otlp-json", "openinference", "litellm", "langfuse", "dfw", "canonical")


def detect(value: Any) -> str | None:
    """The format of a file whose first JSON value is `value` (None: none of them)."""
    if isinstance(value, list):
        return detect(value[0]) if value else None
    if not isinstance(value, dict):
        return None
    if "resourceSpans" in value or "resource_spans" in value:
        return "otlp-json"
    if litellm.is_payload(value):
        return "litellm"
    if isinstance(value.get("hits"), dict) or dfw.is_document(value):
        return "dfw"
    if langfuse.is_observation(value) or (isinstance(value.get("data"), list) and value["data"]
                                          and langfuse.is_observation(value["data"][0])):
        return "langfuse"
    if isinstance(value.get("context"), dict) and "span_id" in value["context"]:
        return "openinference"
    if "request" in value and "response" in value:
        return "canonical"
    return None


def phoenix_span(value: dict[str, Any]) -> Span:
    """A span of Phoenix's export as a `Span` (attributes flattened to dotted keys)."""
    context = value.get("context") or {}
    attributes = flatten(value.get("attributes") or {})
    if value.get("span_kind") and "openinference.span.kind" not in attributes:
        attributes["openinference.span.kind"] = value["span_kind"]

    def nanos(stamp: Any) -> int:
        if isinstance(stamp, (int, float)):
            return int(stamp * 1e9) if stamp < 1e11 else int(stamp * 1e6) if stamp < 1e14 else int(stamp)
        if isinstance(stamp, str):
            try:
                return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1e9)
            except ValueError:
                return 0
        return 0

    return Span(trace_id=str(context.get("trace_id") or ""), span_id=str(context.get("span_id") or ""),
                name=str(value.get("name") or ""), start_unix_nano=nanos(value.get("start_time")),
                end_unix_nano=nanos(value.get("end_time")), parent_span_id=str(value.get("parent_id") or ""),
                attributes=attributes,
                events=[SpanEvent(str(e.get("name")), nanos(e.get("timestamp")), flatten(e.get("attributes") or {}))
                        for e in value.get("events") or [] if isinstance(e, dict)],
                status_code=2 if str(value.get("status_code", "")).upper() == "ERROR" else 0,
                status_message=str(value.get("status_message") or ""))


class FormatImporter(Importer):
    """`Importer` for every format; canonical files go through `Importer` unchanged."""

    def __init__(self, *args: Any, format: str = "auto", agent_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if format not in FORMATS:
            raise ValueError(f"unknown format {format!r}: one of {', '.join(FORMATS)}")
        self.format, self.agent_id = format, agent_id

    def _import_file(self, path: Path) -> None:
        kind = self.format
        if kind == "auto":
            try:
                kind = self._detect(path)
            except OSError as exc:
                self.report.unreadable[str(path)] = exc.strerror or str(exc)
                return
            # nothing else recognised: this project's own records, each line validated (and quarantined with
            # what is wrong with it)
            kind = kind or "canonical"
            self.report.detected[str(path)] = kind
        if kind == "canonical":
            super()._import_file(path)
            return
        stream = self._open(path)
        if stream is None:
            return
        source = f"import:{kind}:{path.name}"
        values = 0
        with stream:
            try:
                for line, value in self._values(path, stream):
                    values += 1
                    if isinstance(value, _Rejected):
                        self.report.read += 1
                        self._reject(path, line, value)
                        continue
                    for outcome, excerpt in self._outcomes(kind, value):
                        self._account(path, line, source, outcome, excerpt)
            except (OSError, EOFError) as exc:
                self._quarantine_file(path, None, "read_error", f"reading stopped: {exc}")
        if values == 0:
            self._quarantine_file(path, None, "empty_file", "the file holds no record")

    def _detect(self, path: Path) -> str | None:
        with open_binary(path) as stream:
            for line, value in self._values(path, stream):
                if isinstance(value, _Rejected):
                    return None
                return detect(value)
        return None

    def _values(self, path: Path, stream: Any) -> Iterator[tuple[Line, Any]]:
        """Each JSON value of the file: one a line, or the whole file when its first line is not JSON on its own
        (a pretty-printed document)."""
        first = True
        for line in iter_lines(stream, self.max_record_bytes):
            self.on_bytes(line.size + 1)
            if not line.oversized and not line.data.strip():
                continue
            self._where = f"{path.name}, line {line.number:,}"
            if line.oversized:
                yield line, _Rejected("record_too_large", f"record of {line.size:,} bytes exceeds the limit of "
                                      f"{self.max_record_bytes:,} bytes (SLM_PIPELINE_MAX_RECORD_BYTES)")
                first = False
                continue
            try:
                value = orjson.loads(line.data)
            except orjson.JSONDecodeError as exc:
                if first and line.data.strip()[:1] in (b"{", b"["):
                    rest = stream.read(self.max_record_bytes + 1 - line.size)
                    whole = line.data + b"\n" + rest
                    if len(whole) <= self.max_record_bytes:
                        try:
                            yield Line(line.number, line.offset, whole, len(whole)), orjson.loads(whole)
                            return
                        except orjson.JSONDecodeError as whole_exc:
                            exc = whole_exc
                yield line, _Rejected("invalid_json", f"invalid JSON: {exc}")
                first = False
                continue
            first = False
            yield line, value

    def _outcomes(self, kind: str, value: Any) -> Iterator[tuple[Outcome | tuple[Any, dict[str, Any]], Any]]:
        """(outcome, what a quarantine entry keeps) for each record in one JSON value."""
        if isinstance(value, list) and kind != "otlp-json":
            for item in value:
                yield from self._outcomes(kind, item)
            return
        if kind == "otlp-json":
            try:
                request = otlp.from_json_document(value)
            except otlp.OtlpDecodeError as exc:
                yield Rejected("invalid_otlp", str(exc)), value
                return
            for span in iter_spans(request):
                yield self._span(span), span.as_json()
        elif kind == "openinference":
            if not isinstance(value, dict):
                yield Rejected("wrong_type", "a span must be a JSON object", "<record>"), value
                return
            yield self._span(phoenix_span(value)), value
        elif kind == "litellm":
            if not isinstance(value, dict):
                yield Rejected("wrong_type", "a payload must be a JSON object", "<record>"), value
                return
            yield litellm_to_record(value, self.agent_id), value
        elif kind == "langfuse":
            items = value["data"] if isinstance(value, dict) and isinstance(value.get("data"), list) else [value]
            for item in items:
                if not isinstance(item, dict):
                    yield Rejected("wrong_type", "an observation must be a JSON object", "<record>"), item
                    continue
                yield langfuse_to_record(item, self.agent_id), item
        elif kind == "dfw":
            for document in dfw.documents(value):
                if not isinstance(document, dict):
                    yield Rejected("wrong_type", "a log document must be a JSON object", "<record>"), document
                    continue
                record = dfw.to_record(document)
                if self.agent_id:
                    record["agent_id"] = self.agent_id
                try:
                    yield parse_line(orjson.dumps(record)), document
                except _Rejected as rejected:
                    yield Rejected(rejected.reason, rejected.message, rejected.field), document

    def _span(self, span: Span) -> Outcome:
        agent = self.agent_id or span.service_name
        if not agent or not re.match(AGENT_ID_PATTERN, agent):
            return Rejected("missing_field", f"{span.describe()}: no agent id (its resource has no usable "
                            "service.name; pass --agent)", "agent_id")
        return span_to_record(span, agent)

    def _account(self, path: Path, line: Line, source: str, outcome: Any, excerpt: Any) -> None:
        self.report.read += 1
        if isinstance(outcome, Skipped):
            self.report.skipped += 1
            self.report.skip_reasons[outcome.reason] = self.report.skip_reasons.get(outcome.reason, 0) + 1
            return
        if isinstance(outcome, Rejected):
            self.report.quarantined += 1
            text = orjson.dumps(excerpt, default=str).decode()[:65536]
            self.quarantine.add(QuarantineEntry(file=str(path), line=line.number, offset=line.offset,
                                                size_bytes=line.size, reason=outcome.reason, field=outcome.field,
                                                message=outcome.message, record=text))
            return
        record, raw = (outcome.record, outcome.raw) if isinstance(outcome, Converted) else outcome
        row = to_stored_call(record, raw, source, datetime.now(timezone.utc), self.key_ring)
        if row["call_id"] in self._batch:
            self.report.duplicate += 1
            return
        self._batch[row["call_id"]] = row
        if len(self._batch) >= self.batch_size:
            self._flush()


def import_any(store: Any, paths: Any, quarantine_dir: Path, **options: Any) -> Any:
    """Import files of any format into `store` (see `FormatImporter` for the options)."""
    return FormatImporter(store, quarantine_dir, **options).import_files(paths)
