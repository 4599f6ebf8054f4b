"""A span (or a LiteLLM payload, a Langfuse observation) -> this project's canonical call record.

Every input has exactly one outcome:
    Converted  a canonical record (validated as `CallRecord`), with whether the tools offered are known
    Skipped    not an LLM chat call (`not_llm_call`), or an LLM call recorded without its messages
               (`no_content`: content capture was off)
    Rejected   an LLM call that cannot become a valid record (`broken_attribute_json`, or the canonical
               record's own reasons: `missing_field`, `wrong_type`, ...), for the quarantine

The call id is derived from the trace and span ids (`otel-<trace>-<span>`), so the same span sent twice, or
received and then imported, is stored once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pydantic import ValidationError

from slm_pipeline.core.records import CallRecord, describe_validation_error
from slm_pipeline.core.trace_formats import genai, langfuse, litellm, openinference
from slm_pipeline.core.trace_formats.messages import BrokenAttributeError, LlmCall
from slm_pipeline.core.trace_formats.spans import Span

TOOLS_KNOWN_TAG = "tools_known"


@dataclass
class Converted:
    record: CallRecord
    raw: dict[str, Any]

    @property
    def tools_known(self) -> bool:
        return bool((self.raw.get("tags") or {}).get(TOOLS_KNOWN_TAG, True))


@dataclass
class Skipped:
    reason: str
    message: str


@dataclass
class Rejected:
    reason: str
    message: str
    field: str | None = None


Outcome = Converted | Skipped | Rejected


def convention(span: Span) -> str | None:
    """Which convention the span follows (None: no LLM convention)."""
    if openinference.is_openinference(span):
        return "openinference"
    if langfuse.is_langfuse_span(span):
        return "langfuse"
    if genai.is_genai_span(span):
        return "gen_ai"
    return None


def _read_span(span: Span) -> LlmCall | Skipped:
    kind = convention(span)
    if kind == "openinference":
        if not openinference.is_llm_span(span):
            return Skipped("not_llm_call", f"{span.describe()} is an OpenInference "
                           f"{span.attributes.get(openinference.KIND)} span, not an LLM call")
        call = openinference.extract(span)
    elif kind == "langfuse":
        observation = langfuse.observation_of_span(span)
        if not langfuse.is_generation(observation):
            return Skipped("not_llm_call", f"{span.describe()} is a Langfuse {observation['type'].lower()}, "
                           "not a generation")
        call = langfuse.extract(observation)
    elif kind == "gen_ai":
        if not genai.is_llm_span(span):
            operation = span.attributes.get("gen_ai.operation.name") or span.attributes.get("llm.request.type")
            return Skipped("not_llm_call", f"{span.describe()} is a GenAI {operation!s} span, not a chat call")
        call = genai.extract(span)
    else:
        return Skipped("not_llm_call", f"{span.describe()} carries no LLM convention's attributes")
    if call is None:
        return Skipped("no_content", f"{span.describe()} is an LLM call recorded without its messages "
                       "(content capture off: set OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true, or "
                       "TRACELOOP_TRACE_CONTENT=true / OPENINFERENCE_HIDE_INPUTS=false)")
    return call


def _error_response(span: Span) -> dict[str, Any]:
    error_type = span.attributes.get("error.type") or "error"
    return {"error": {"message": span.status_message or f"the call failed ({error_type})", "type": str(error_type),
                      "code": None}}


def record_of(call: LlmCall, *, agent_id: str, timestamp: Any, call_id: str | None, latency_ms: float | None,
              tags: dict[str, Any]) -> Outcome:
    """The canonical record of an extracted call, validated."""
    tags = {**tags, "source_format": call.convention, TOOLS_KNOWN_TAG: call.tools_known}
    if call.conversation_id is not None:
        tags["conversation_id"] = str(call.conversation_id)
    if call.stream is not None:
        tags["stream"] = call.stream
    raw = {"timestamp": timestamp, "agent_id": agent_id, "call_id": call_id, "latency_ms": latency_ms,
           "tags": tags, "request": call.request, "response": call.response}
    raw = {k: v for k, v in raw.items() if v is not None}
    try:
        record = CallRecord.model_validate(raw)
    except ValidationError as exc:
        reason, field, message = describe_validation_error(exc)
        return Rejected(reason, message, field)
    return Converted(record, raw)


def span_to_record(span: Span, agent_id: str, tags: dict[str, Any] | None = None) -> Outcome:
    """The canonical record of one span, for `agent_id` (the key's agent: the span cannot choose it)."""
    try:
        call = _read_span(span)
        if isinstance(call, Skipped):
            return call
    except BrokenAttributeError as exc:
        return Rejected("broken_attribute_json", f"{span.describe()}: {exc}", exc.field)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:  # attributes of unexpected shapes
        return Rejected("malformed_attributes", f"{span.describe()}: its LLM attributes do not have the "
                        f"convention's shapes ({exc.__class__.__name__}: {exc})"[:500])
    if span.status_code == 2 and "error" not in call.response:
        call.response = _error_response(span)
    start = span.start_unix_nano or span.end_unix_nano
    if not start:
        return Rejected("missing_field", f"{span.describe()} has no start time", "start_time_unix_nano")
    timestamp = datetime.fromtimestamp(start / 1e9, tz=timezone.utc).isoformat()
    latency = (span.end_unix_nano - span.start_unix_nano) / 1e6 if span.end_unix_nano >= start else None
    base = {"trace_id": span.trace_id, "span_id": span.span_id}
    if span.service_name:
        base["service_name"] = span.service_name
    base.update(tags or {})
    return record_of(call, agent_id=agent_id, timestamp=timestamp,
                     call_id=f"otel-{span.trace_id}-{span.span_id}" if span.trace_id and span.span_id else None,
                     latency_ms=latency, tags=base)


def litellm_to_record(payload: dict[str, Any], agent_id: str | None) -> Outcome:
    payload = litellm.unwrap(payload)
    if not litellm.is_chat(payload):
        return Skipped("not_llm_call", f"LiteLLM payload {payload.get('id')!s} is a {payload.get('call_type')} call")
    try:
        call = litellm.extract(payload)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
        return Rejected("malformed_payload", f"LiteLLM payload {payload.get('id')!s}: fields of unexpected shapes "
                        f"({exc.__class__.__name__}: {exc})"[:500])
    if call is None:
        return Skipped("no_content", f"LiteLLM payload {payload.get('id')!s} holds no messages or no response "
                       "(turn off LiteLLM's `turn_off_message_logging`)")
    agent = agent_id or litellm.agent_of(payload)
    start, end = payload.get("startTime"), payload.get("endTime")
    latency = (end - start) * 1000 if isinstance(start, (int, float)) and isinstance(end, (int, float)) else None
    return record_of(call, agent_id=agent or "", timestamp=start, latency_ms=latency,
                     # `id` is the provider's response id; `trace_id` LiteLLM's own, per request
                     call_id="-".join(["litellm", *(str(payload[k]) for k in ("trace_id", "id") if payload.get(k))])
                     if payload.get("id") or payload.get("trace_id") else None,
                     tags={"litellm_trace_id": payload.get("trace_id")} if payload.get("trace_id") else {})


def langfuse_to_record(observation: dict[str, Any], agent_id: str | None) -> Outcome:
    if not langfuse.is_generation(observation):
        return Skipped("not_llm_call", f"Langfuse observation {observation.get('id')!s} is a "
                       f"{str(observation.get('type')).lower()}, not a generation")
    try:
        call = langfuse.extract(observation)
    except BrokenAttributeError as exc:
        return Rejected("broken_attribute_json", str(exc), exc.field)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
        return Rejected("malformed_observation", f"Langfuse observation {observation.get('id')!s}: fields of "
                        f"unexpected shapes ({exc.__class__.__name__}: {exc})"[:500])
    if call is None:
        return Skipped("no_content", f"Langfuse observation {observation.get('id')!s} has no input or output")
    latency = None
    start, end = observation.get("startTime"), observation.get("endTime")
    if isinstance(start, str) and isinstance(end, str):
        try:
            latency = (datetime.fromisoformat(end.replace("Z", "+00:00")) -
                       datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds() * 1000
        except ValueError:
            latency = None
    agent = agent_id or (observation.get("metadata") or {}).get("agent_id") or observation.get("userId")
    return record_of(call, agent_id=agent or "", timestamp=start, latency_ms=latency,
                     call_id=f"langfuse-{observation['id']}" if observation.get("id") else None,
                     tags={"langfuse_trace_id": observation.get("traceId")})
