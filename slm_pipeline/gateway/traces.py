"""The gateway's OTLP/HTTP trace receiver: `POST /v1/traces` (OTLP 1.x, protobuf or JSON, gzip or not).

An agent already traced with OpenTelemetry (the GenAI conventions, OpenLLMetry, OpenInference, Langfuse's SDK)
points its OTLP exporter here with its gateway key (`Authorization: Bearer <key>`). The key decides the agent;
the spans' `service.name` is kept as a tag, never trusted as identity. Each LLM span becomes one canonical call
record (`core/trace_formats/calls.py`), sealed and stored like a proxied call through the same call log (so it
spools while the store is down); the call id comes from the trace and span ids, so a span exported twice is
stored once.

Every span is accounted for (`/metrics`): received = logged + skipped + quarantined. Skipped spans are not LLM
calls, or LLM calls recorded without content; quarantined ones are LLM calls that make no valid record (broken
JSON in an attribute, a missing field), kept sealed in the quarantine folder with the reason. The answer is an
`ExportTraceServiceResponse` whose `partial_success` counts the LLM spans not stored (`rejected_spans`) and
says why (`error_message`), as the OTLP specification asks; a request with nothing to say gets an empty one.

Errors (a `google.rpc.Status` in the request's encoding): 401 bad key, 415 other content types or encodings,
400 a body that is not a trace request, 413 a body (or its inflated gzip) over the gateway's limit.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from slm_pipeline.core.crypto import KeyRing
from slm_pipeline.core.quarantine import QuarantineEntry, QuarantineFile, new_quarantine_path
from slm_pipeline.core.store.keys import ApiKey
from slm_pipeline.core.trace_formats import otlp
from slm_pipeline.core.trace_formats.calls import Converted, Rejected, Skipped, span_to_record
from slm_pipeline.core.trace_formats.spans import iter_spans
from slm_pipeline.gateway.auth import KeyCache
from slm_pipeline.gateway.calllog import CallLog, FinishedCall
from slm_pipeline.gateway.errors import GatewayError

log = logging.getLogger(__name__)
SOURCE = "otlp"
WORKLOAD_HEADER = "x-slm-workload-id"
_GRPC_CODES = {400: 3, 401: 16, 413: 8, 415: 3, 500: 13}  # INVALID_ARGUMENT, UNAUTHENTICATED, RESOURCE_EXHAUSTED


class OtlpError(Exception):
    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.status, self.message, self.reason = status, message, reason


class SpanBatch:
    """What one request's spans became (converted off the event loop)."""

    __slots__ = ("calls", "skipped", "quarantined", "spans")

    def __init__(self) -> None:
        self.calls: list[FinishedCall] = []
        self.skipped: Counter[str] = Counter()
        self.quarantined: Counter[str] = Counter()
        self.spans = 0


class TraceReceiver:
    def __init__(self, keys: KeyCache, call_log: CallLog, quarantine_dir: Path, max_body_bytes: int) -> None:
        self.keys, self.call_log, self.max_body_bytes = keys, call_log, max_body_bytes
        self.key_ring: KeyRing | None = call_log.key_ring
        self.quarantine = QuarantineFile(new_quarantine_path(quarantine_dir, prefix="otlp"))
        self._quarantine_lock = threading.Lock()
        self.requests = 0
        self.rejected_requests: Counter[str] = Counter()
        self.spans_received = 0
        self.spans_logged = 0
        self.spans_skipped: Counter[str] = Counter()
        self.spans_quarantined: Counter[str] = Counter()

    # --- the request -----------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        self.requests += 1
        headers = request.headers
        kind = otlp.media_type(headers.get("content-type"))
        answer_kind = otlp.JSON if kind == otlp.JSON else otlp.PROTOBUF
        try:
            try:
                key = await self.keys.authenticate(headers.get("authorization"))
            except GatewayError as error:
                raise OtlpError(401, error.message, "invalid_api_key") from None
            if kind not in (otlp.PROTOBUF, otlp.JSON):
                raise OtlpError(415, f"Content-Type must be {otlp.PROTOBUF} or {otlp.JSON}, got {kind or 'none'!r}.",
                                "unsupported_media_type")
            encoding = (headers.get("content-encoding") or "identity").strip().lower()
            if encoding not in ("gzip", "identity", ""):
                raise OtlpError(415, f"Content-Encoding must be gzip or none, got {encoding!r}.",
                                "unsupported_encoding")
            workload = headers.get(WORKLOAD_HEADER)
            if workload is not None and len(workload) > 256:
                raise OtlpError(400, f"Header {WORKLOAD_HEADER} is longer than 256 characters.", "invalid_header")
            body = await self._body(request)
            result = await asyncio.to_thread(self.convert, body, kind, encoding, key, workload)
        except OtlpError as error:
            self.rejected_requests[error.reason] += 1
            return Response(otlp.encode_status(answer_kind, _GRPC_CODES.get(error.status, 2), error.message),
                            error.status, media_type=answer_kind)
        for call in result.calls:
            self.call_log.submit(call)
        self.spans_received += result.spans
        self.spans_logged += len(result.calls)
        self.spans_skipped.update(result.skipped)
        self.spans_quarantined.update(result.quarantined)
        rejected = sum(result.quarantined.values()) + result.skipped.get("no_content", 0)
        return Response(otlp.encode_response(answer_kind, rejected, self._message(result)), 200,
                        media_type=answer_kind)

    async def _body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise self._too_large()
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise self._too_large()
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self) -> OtlpError:
        return OtlpError(413, f"Request body exceeds the gateway's limit of {self.max_body_bytes:,} bytes "
                              "(SLM_PIPELINE_GATEWAY_MAX_BODY_BYTES); export smaller batches.", "request_too_large")

    @staticmethod
    def _message(result: SpanBatch) -> str:
        parts = []
        if result.quarantined:
            parts.append("quarantined (not stored): " + ", ".join(f"{n} {r}" for r, n in sorted(
                result.quarantined.items())))
        if result.skipped:
            parts.append("skipped: " + ", ".join(f"{n} {r}" for r, n in sorted(result.skipped.items())))
        if result.skipped.get("no_content"):
            parts.append("LLM spans without content: turn content capture on in the instrumentation "
                         "(OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true)")
        return "; ".join(parts)

    # --- off the event loop ----------------------------------------------------------------

    def convert(self, body: bytes, kind: str, encoding: str, key: ApiKey, workload: str | None) -> SpanBatch:
        """Decode the body and turn each span into a call, a skip or a quarantine entry."""
        try:
            request = otlp.decode_request(body, kind, encoding, self.max_body_bytes)
        except otlp.BodyTooLargeError:
            raise self._too_large() from None
        except otlp.OtlpDecodeError as exc:
            raise OtlpError(400, f"The body is not an OTLP trace request: {exc}", "malformed_request") from None
        result = SpanBatch()
        for span in iter_spans(request):
            result.spans += 1
            try:
                outcome = span_to_record(span, key.agent_id)
            except Exception as exc:  # a span no reader foresaw must not cost the others (or the receiver)
                log.exception("span %s could not be read", span.span_id)
                outcome = Rejected("unreadable_span", f"{span.describe()}: {exc.__class__.__name__}: {exc}")
            if isinstance(outcome, Skipped):
                result.skipped[outcome.reason] += 1
            elif isinstance(outcome, Rejected):
                result.quarantined[outcome.reason] += 1
                self._quarantine(key, span.describe(), f"otel-{span.trace_id}-{span.span_id}", outcome,
                                 span.as_json())
            else:
                result.calls.append(self._call(outcome, key, workload))
        return result

    @staticmethod
    def _call(converted: Converted, key: ApiKey, workload: str | None) -> FinishedCall:
        record, raw = converted.record, converted.raw
        return FinishedCall(call_id=record.call_id or "", agent_id=key.agent_id, timestamp=record.timestamp,
                            latency_ms=record.latency_ms or 0.0, human_facing=key.human_facing,
                            workload_id=workload, model=record.request.model, tags=raw.get("tags") or {},
                            request=orjson.dumps(raw["request"]), response=raw["response"], source=SOURCE)

    def _quarantine(self, key: ApiKey, where: str, entry_id: str, rejected: Rejected, span: dict[str, Any]) -> None:
        """A quarantine entry whose span is sealed like a stored call (the gateway writes no plaintext payload)."""
        data = orjson.dumps(span, default=str)
        if self.key_ring is not None:
            key_id, sealed = self.key_ring.encrypt(data, entry_id)
            record = f"sealed:{key_id}:{base64.b64encode(sealed).decode()}"
        else:
            record = data.decode()
        entry = QuarantineEntry(file=f"otlp:{key.agent_id}:{entry_id}", line=None, reason=rejected.reason,
                                field=rejected.field, message=rejected.message, record=record)
        with self._quarantine_lock:
            self.quarantine.add(entry)
            self.quarantine.flush()  # readable while the gateway runs

    def close(self) -> None:
        self.quarantine.close()

    # --- /metrics --------------------------------------------------------------------------

    def metrics(self) -> list[str]:
        return [
            "# HELP slm_gateway_otlp_requests_total POST /v1/traces requests received.",
            "# TYPE slm_gateway_otlp_requests_total counter",
            f"slm_gateway_otlp_requests_total {self.requests}",
            "# TYPE slm_gateway_otlp_requests_rejected_total counter",
            *(f'slm_gateway_otlp_requests_rejected_total{{reason="{r}"}} {n}'
              for r, n in sorted(self.rejected_requests.items())),
            "# HELP slm_gateway_spans_received_total Spans received (= logged + skipped + quarantined).",
            "# TYPE slm_gateway_spans_received_total counter",
            f"slm_gateway_spans_received_total {self.spans_received}",
            "# TYPE slm_gateway_spans_logged_total counter",
            f"slm_gateway_spans_logged_total {self.spans_logged}",
            "# TYPE slm_gateway_spans_skipped_total counter",
            *(f'slm_gateway_spans_skipped_total{{reason="{r}"}} {n}' for r, n in sorted(self.spans_skipped.items())),
            "# TYPE slm_gateway_spans_quarantined_total counter",
            *(f'slm_gateway_spans_quarantined_total{{reason="{r}"}} {n}'
              for r, n in sorted(self.spans_quarantined.items())),
        ]
