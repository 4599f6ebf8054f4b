"""OTLP/HTTP trace requests (`ExportTraceServiceRequest`), from their protobuf or JSON encoding, gzip or not.

The JSON encoding is protobuf's JSON mapping with OTLP's exceptions: trace and span ids are hex strings (not
base64), and enum values may be integers. Everything else is left to protobuf's own parser, so a body either
decodes into the request message or raises `OtlpDecodeError` with what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


class OtlpDecodeError(ValueError):
    """A body that is not an ExportTraceServiceRequest; the message says why."""


class BodyTooLargeError(OtlpDecodeError):
    """A body that inflates past the size limit."""


def gunzip(body: bytes, limit: int) -> bytes:
    """`body` inflated, refusing more than `limit` bytes (a gzip bomb stops at the limit)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise OtlpDecodeError(f"the body is not valid gzip: {exc}") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise BodyTooLargeError(f"the body inflates to more than {limit:,} bytes")
    if not inflater.eof:
        raise OtlpDecodeError("the gzip stream is truncated")
    return data


def _hex_to_base64(value: Any, where: str) -> Any:
    if not isinstance(value, str) or not value:
        return value
    try:
        return base64.b64encode(bytes.fromhex(value)).decode()
    except ValueError:
        try:  # some exporters write protobuf's default mapping (base64) instead of OTLP's hex
            base64.b64decode(value, validate=True)
            return value
        except (binascii.Error, ValueError):
            raise OtlpDecodeError(f"{where} is neither hex nor base64: {value[:40]!r}") from None


def _fix_ids(document: dict[str, Any]) -> dict[str, Any]:
    for resource_spans in document.get("resourceSpans") or document.get("resource_spans") or []:
        if not isinstance(resource_spans, dict):
            continue
        for scope_spans in resource_spans.get("scopeSpans") or resource_spans.get("scope_spans") or []:
            if not isinstance(scope_spans, dict):
                continue
            for span in scope_spans.get("spans") or []:
                if not isinstance(span, dict):
                    continue
                for name in _ID_FIELDS:
                    if name in span:
                        span[name] = _hex_to_base64(span[name], f"span {name}")
                for link in span.get("links") or []:
                    if isinstance(link, dict):
                        for name in ("traceId", "spanId"):
                            if name in link:
                                link[name] = _hex_to_base64(link[name], f"link {name}")
    return document


def from_json_document(document: Any) -> ExportTraceServiceRequest:
    """An OTLP/JSON request already parsed as JSON."""
    if not isinstance(document, dict):
        raise OtlpDecodeError(f"an OTLP/JSON request is a JSON object, got {type(document).__name__}")
    try:
        return json_format.ParseDict(_fix_ids(document), ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError, RecursionError) as exc:
        raise OtlpDecodeError(f"not an OTLP/JSON trace request: {str(exc)[:300]}") from None


def from_json(body: bytes) -> ExportTraceServiceRequest:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise OtlpDecodeError(f"invalid JSON: {exc}") from None
    return from_json_document(document)


def from_protobuf(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, RecursionError, ValueError) as exc:
        raise OtlpDecodeError(f"malformed protobuf: {str(exc)[:300] or exc.__class__.__name__}") from None
    return request


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def decode_request(body: bytes, content_type: str | None, content_encoding: str | None = None,
                   max_bytes: int = 8 * 1024 * 1024) -> ExportTraceServiceRequest:
    """The trace request of an OTLP/HTTP body. Raises `OtlpDecodeError` (or `BodyTooLargeError`)."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "gzip":
        body = gunzip(body, max_bytes)
    elif encoding not in ("identity", ""):
        raise OtlpDecodeError(f"unsupported Content-Encoding {encoding!r} (gzip or none)")
    kind = media_type(content_type)
    if kind == PROTOBUF:
        return from_protobuf(body)
    if kind == JSON:
        return from_json(body)
    raise OtlpDecodeError(f"unsupported Content-Type {kind!r} ({PROTOBUF} or {JSON})")


def encode_response(kind: str, rejected_spans: int = 0, error_message: str = "") -> bytes:
    """ExportTraceServiceResponse in the request's encoding, with `partial_success` when something was rejected
    or there is something to say (OTLP: rejected 0 with a message is a warning)."""
    response = ExportTraceServiceResponse()
    if rejected_spans or error_message:
        response.partial_success.rejected_spans = rejected_spans
        response.partial_success.error_message = error_message
    if kind == JSON:
        body: dict[str, Any] = {}
        if rejected_spans or error_message:
            body["partialSuccess"] = {"rejectedSpans": str(rejected_spans) if rejected_spans else "0",
                                      "errorMessage": error_message}
        return orjson.dumps(body)
    return response.SerializeToString()


def encode_status(kind: str, code: int, message: str) -> bytes:
    """A `google.rpc.Status` (OTLP's error body): protobuf by hand (two fields), or its JSON mapping."""
    if kind == JSON:
        return orjson.dumps({"code": code, "message": message})
    text = message.encode("utf-8")
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)

