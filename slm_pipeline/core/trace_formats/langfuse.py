"""Langfuse: its observations export (the public API's `GET /api/public/observations`, one observation a line
or `{"data": [...]}`), and the attributes its SDK (v3+) writes on OpenTelemetry spans
(`langfuse.observation.*`), which are the same observation. A GENERATION is an LLM call; its `input` is the
messages (or `{"messages", "tools"}`), its `output` the assistant message (or a completion).
"""

from __future__ import annotations

from typing import Any

from slm_pipeline.core.trace_formats.messages import (
    LlmCall,
    clean,
    json_value,
    maybe_json,
    openai_tool_calls,
    tool_spec,
    usage,
)
from slm_pipeline.core.trace_formats.spans import Span

TYPE = "langfuse.observation.type"


def is_observation(document: Any) -> bool:
    return isinstance(document, dict) and "type" in document and ("traceId" in document or "trace_id" in document) \
        and ("input" in document or "output" in document or "startTime" in document)


def is_langfuse_span(span: Span) -> bool:
    return TYPE in span.attributes


def observation_of_span(span: Span) -> dict[str, Any]:
    """A span's `langfuse.observation.*` attributes as the observation the export would show."""
    a = span.attributes

    def field(name: str) -> Any:
        return json_value(a.get(f"langfuse.observation.{name}"), f"langfuse.observation.{name}")

    # input and output are JSON when the SDK could serialise them, else their text (a streamed answer's)
    finish = a.get("langfuse.observation.metadata.finish_reason")
    if isinstance(finish, str) and finish.startswith('"'):  # metadata values are JSON-encoded
        finish = finish.strip('"')
    return {"id": span.span_id, "traceId": span.trace_id, "type": str(a.get(TYPE, "")).upper(),
            "name": span.name, "input": maybe_json(a.get("langfuse.observation.input")),
            "output": maybe_json(a.get("langfuse.observation.output")),
            "metadata": {"finish_reason": finish} if isinstance(finish, str) else {},
            "model": a.get("langfuse.observation.model.name") or a.get("gen_ai.request.model"),
            "modelParameters": field("model.parameters") or {}, "usageDetails": field("usage_details") or {},
            "level": a.get("langfuse.observation.level"), "statusMessage": a.get("langfuse.observation.status_message"),
            "sessionId": a.get("langfuse.session.id") or a.get("session.id")}


def is_generation(observation: dict[str, Any]) -> bool:
    return str(observation.get("type") or "").upper() == "GENERATION"


def has_content(observation: dict[str, Any]) -> bool:
    return observation.get("input") is not None and observation.get("output") is not None


def _message(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"role": "assistant", "content": value}
    message = dict(value) if isinstance(value, dict) else {}
    message.setdefault("role", "assistant")
    message.setdefault("content", None)
    if (calls := openai_tool_calls(message.get("tool_calls"))) is not None:
        message["tool_calls"] = calls
    else:
        message.pop("tool_calls", None)
    return {k: v for k, v in message.items() if v is not None or k == "content"}


def extract(observation: dict[str, Any]) -> LlmCall | None:
    if not has_content(observation):
        return None
    given = maybe_json(observation["input"])
    tools = None
    if isinstance(given, dict):
        messages = given.get("messages") or []
        tools = given.get("tools")
    else:
        messages = given if isinstance(given, list) else [{"role": "user", "content": str(given)}]
    parameters = observation.get("modelParameters") or {}
    request: dict[str, Any] = {"model": observation.get("model") or "unknown", "messages": messages}
    # Langfuse's OpenAI integration fills in OpenAI's defaults; an unset max_tokens reads "Infinity"
    request.update({k: maybe_json(v) for k, v in parameters.items()
                    if k not in request and v is not None and v not in ("Infinity", "inf")})
    if isinstance(tools, list) and tools:
        request["tools"] = [t for t in (tool_spec(x) for x in tools) if t]
    output = maybe_json(observation["output"])
    if str(observation.get("level") or "").upper() == "ERROR":
        response: dict[str, Any] = {"error": {"message": str(observation.get("statusMessage") or "the call failed"),
                                              "type": "langfuse_error"}}
    elif isinstance(output, dict) and isinstance(output.get("choices"), list):
        response = output
    else:
        message = _message(output)
        finish_reason = (observation.get("metadata") or {}).get("finish_reason") or (
            "tool_calls" if message.get("tool_calls") else "stop")
        response = clean({"id": observation.get("id"), "object": "chat.completion", "model": request["model"],
                          "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}]})
        details = observation.get("usageDetails") or observation.get("usage") or {}
        if isinstance(details, dict) and details:
            tokens = usage(details.get("input", details.get("prompt_tokens", details.get("promptTokens"))),
                           details.get("output", details.get("completion_tokens", details.get("completionTokens"))),
                           details.get("total", details.get("total_tokens", details.get("totalTokens"))))
            if tokens is not None:
                response["usage"] = tokens
    # Langfuse's OpenAI integration records {"tools", "messages"} whenever tools are offered: a bare list had none
    return LlmCall("langfuse", request, response, tools_known=isinstance(given, (dict, list)),
                   conversation_id=observation.get("sessionId"))
