"""OpenInference (Arize's conventions, `openinference-instrumentation-openai`): an LLM span has
`openinference.span.kind` LLM, messages in `llm.input_messages.N.message.*` / `llm.output_messages.N.message.*`,
tools in `llm.tools.N.tool.json_schema`, parameters in `llm.invocation_parameters` (JSON), and the raw request
and answer in `input.value` / `output.value` when their mime type is JSON.

Phoenix's span export (one JSON span a line, attributes nested) reads the same once its attributes are
flattened (`spans.flatten`).
"""

from __future__ import annotations

from typing import Any

from slm_pipeline.core.trace_formats.messages import (
    LlmCall,
    clean,
    content_of,
    json_value,
    openai_tool_calls,
    tool_call,
    tool_spec,
    usage,
)
from slm_pipeline.core.trace_formats.spans import Span, unflatten

KIND = "openinference.span.kind"


def is_openinference(span: Span) -> bool:
    return KIND in span.attributes


def is_llm_span(span: Span) -> bool:
    return str(span.attributes.get(KIND, "")).upper() == "LLM"


def has_content(span: Span) -> bool:
    a = span.attributes
    return any(k.startswith(("llm.input_messages.", "llm.output_messages.")) for k in a) or \
        _json_object(a, "input") is not None


def _json_object(a: dict[str, Any], prefix: str) -> dict[str, Any] | None:
    value = a.get(f"{prefix}.value")
    mime = str(a.get(f"{prefix}.mime_type") or "")
    if value is None or (mime and "json" not in mime):
        return None
    parsed = json_value(value, f"{prefix}.value")
    return parsed if isinstance(parsed, dict) else None


def _message(item: dict[str, Any]) -> dict[str, Any]:
    body = item.get("message") if isinstance(item.get("message"), dict) else item
    content: Any = content_of(body.get("content"))
    contents = body.get("contents")
    if content is None and isinstance(contents, list):
        parts = [c.get("message_content", c) for c in contents if isinstance(c, dict)]
        content = [clean({"type": p.get("type"), "text": p.get("text"),
                          "image_url": p.get("image", {}).get("image", {}) if p.get("type") == "image" else None})
                   for p in parts]
        if all(p.get("type") == "text" for p in content):
            content = "".join(p.get("text") or "" for p in content)
    message: dict[str, Any] = {"role": body.get("role") or "user", "content": content}
    if body.get("name") is not None:
        message["name"] = body["name"]
    calls = body.get("tool_calls")
    if isinstance(calls, list) and calls:
        message["tool_calls"] = []
        for call in calls:
            call = call.get("tool_call", call) if isinstance(call, dict) else {}
            function = call.get("function") or {}
            message["tool_calls"].append(tool_call(call.get("id"), function.get("name"), function.get("arguments")))
    if body.get("tool_call_id") is not None:
        message["tool_call_id"] = body["tool_call_id"]
    return {**clean(message), "content": message["content"]}


def _choice(choice: dict[str, Any]) -> dict[str, Any]:
    """A choice as a completion has it (a streamed one keeps the chunks' `index` in its tool calls)."""
    message = dict(choice["message"]) if isinstance(choice["message"], dict) else {}
    message.setdefault("role", "assistant")
    message.setdefault("content", None)
    if (calls := openai_tool_calls(message.get("tool_calls"))) is not None:
        message["tool_calls"] = calls
    return {**choice, "message": message}


def extract(span: Span) -> LlmCall | None:
    a = span.attributes
    if not has_content(span):
        return None
    raw_request = _json_object(a, "input")
    raw_response = _json_object(a, "output")
    parameters = json_value(a.get("llm.invocation_parameters"), "llm.invocation_parameters") or {}
    inputs = unflatten(a, "llm.input_messages") or []
    outputs = unflatten(a, "llm.output_messages") or []
    tools_flat = unflatten(a, "llm.tools") or []
    tools = [t for t in (tool_spec(json_value(item.get("tool", {}).get("json_schema"), "llm.tools.N.tool.json_schema"))
                         for item in tools_flat if isinstance(item, dict)) if t]
    if raw_request is not None and isinstance(raw_request.get("messages"), list):
        request = dict(raw_request)
    else:
        request = {"model": a.get("llm.model_name") or parameters.get("model") or "unknown",
                   "messages": [_message(m) for m in inputs if isinstance(m, dict)]}
        request.update({k: v for k, v in parameters.items() if k not in request})
    if tools and not request.get("tools"):
        request["tools"] = tools
    if not request.get("model"):
        request["model"] = a.get("llm.model_name") or "unknown"
    stream = request.get("stream") if isinstance(request.get("stream"), bool) else None
    if raw_response is not None and isinstance(raw_response.get("choices"), list) and raw_response["choices"] \
            and all(isinstance(c, dict) and "message" in c for c in raw_response["choices"]):
        response = dict(raw_response)
        if response.get("object") == "chat.completion.chunk":  # a streamed answer, its chunks accumulated
            response["object"] = "chat.completion"
        response["choices"] = [_choice(c) for c in response["choices"]]
    else:
        choices = [{"index": i, "message": _message(m), "finish_reason": None}
                   for i, m in enumerate(m for m in outputs if isinstance(m, dict))]
        if raw_response is not None:  # a streamed answer: OpenInference keeps the chunks' fields
            finish = [c.get("finish_reason") for c in raw_response.get("choices") or [] if isinstance(c, dict)]
            for choice, reason in zip(choices, finish):
                choice["finish_reason"] = reason
        response = clean({"id": (raw_response or {}).get("id"), "object": "chat.completion",
                          "model": (raw_response or {}).get("model") or request["model"], "choices": choices})
        if (tokens := usage(a.get("llm.token_count.prompt"), a.get("llm.token_count.completion"),
                            a.get("llm.token_count.total"))) is not None:
            response["usage"] = tokens
        if raw_response is not None and isinstance(raw_response.get("usage"), dict):
            response["usage"] = raw_response["usage"]
    tools_known = bool(request.get("tools")) or "llm.tools.0.tool.json_schema" in a or (
        raw_request is not None and "messages" in raw_request)
    return LlmCall("openinference", request, response, tools_known=tools_known,
                   conversation_id=a.get("session.id"), stream=stream)

