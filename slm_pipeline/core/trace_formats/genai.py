"""The OpenTelemetry GenAI semantic conventions, in the three shapes they have had.

1. Span attributes `gen_ai.prompt.N.*` / `gen_ai.completion.N.*` (tools in `llm.request.functions.N.*`), as
   OpenLLMetry's `opentelemetry-instrumentation-openai` writes them.
2. Events `gen_ai.system.message`, `gen_ai.user.message`, `gen_ai.assistant.message`, `gen_ai.tool.message` and
   `gen_ai.choice`, as `opentelemetry-instrumentation-openai-v2` emits them (with
   `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`): span events, or log records that the receiver
   attaches to their span. These record no tool definitions.
3. `gen_ai.input.messages` / `gen_ai.output.messages` / `gen_ai.system_instructions` /
   `gen_ai.tool.definitions` (JSON, "parts" messages), the conventions since 1.37.

A span is a GenAI LLM call when it has `gen_ai.operation.name` chat (or text_completion), or OpenLLMetry's
`llm.request.type` chat; without any recorded message it is an LLM call without content.
"""

from __future__ import annotations

from typing import Any

import orjson

from slm_pipeline.core.trace_formats.messages import (
    BrokenAttributeError,
    LlmCall,
    clean,
    content_of,
    json_value,
    maybe_json,
    openai_tool_calls,
    parameters,
    tool_call,
    tool_spec,
    usage,
)
from slm_pipeline.core.trace_formats.spans import Span, unflatten

CHAT_OPERATIONS = {"chat", "text_completion", "completion"}
PARAMETERS = {"gen_ai.request.temperature": "temperature", "gen_ai.request.top_p": "top_p",
              "gen_ai.request.max_tokens": "max_tokens", "gen_ai.request.frequency_penalty": "frequency_penalty",
              "gen_ai.request.presence_penalty": "presence_penalty", "gen_ai.request.seed": "seed",
              "gen_ai.request.stop_sequences": "stop", "gen_ai.request.choice.count": "n",
              "llm.request.max_tokens": "max_tokens"}
RECORDS_TOOL_DEFINITIONS = ("opentelemetry.instrumentation.openai.v0", "opentelemetry.instrumentation.openai.v1")
"""Instrumentation scopes that record the tools offered whenever there are any (OpenLLMetry's): their spans without
tool definitions had none. Other spans without them may have had tools the instrumentation left out (openai-v2
records messages only): their tools are unknown (`core/curate/tools.py` decides what to do with them)."""
FINISH_REASONS = {"tool_call": "tool_calls", "error": "error"}
"""The conventions' finish reasons where OpenAI's differ (`tool_call` is OpenAI's `tool_calls`)."""
MESSAGE_EVENTS = {"gen_ai.system.message": "system", "gen_ai.user.message": "user",
                  "gen_ai.assistant.message": "assistant", "gen_ai.tool.message": "tool",
                  "gen_ai.developer.message": "developer"}


def is_llm_span(span: Span) -> bool:
    a = span.attributes
    operation = a.get("gen_ai.operation.name") or a.get("llm.request.type")
    if operation is not None:
        return str(operation) in CHAT_OPERATIONS
    return False


def is_genai_span(span: Span) -> bool:
    a = span.attributes
    return "gen_ai.operation.name" in a or "llm.request.type" in a or "gen_ai.system" in a \
        or "gen_ai.provider.name" in a


def _generation(span: Span) -> int | None:
    a = span.attributes
    if "gen_ai.input.messages" in a or "gen_ai.output.messages" in a:
        return 3
    if any(e.name in MESSAGE_EVENTS or e.name == "gen_ai.choice" for e in span.events):
        return 2
    if "gen_ai.prompt.0.role" in a or "gen_ai.prompt.0.content" in a or "gen_ai.completion.0.role" in a:
        return 1
    return None


def has_content(span: Span) -> bool:
    return _generation(span) is not None


def _usage(a: dict[str, Any]) -> dict[str, Any] | None:
    prompt = a.get("gen_ai.usage.input_tokens", a.get("gen_ai.usage.prompt_tokens"))
    completion = a.get("gen_ai.usage.output_tokens", a.get("gen_ai.usage.completion_tokens"))
    return usage(prompt, completion, a.get("gen_ai.usage.total_tokens", a.get("llm.usage.total_tokens")))


def _response(span: Span, choices: list[dict[str, Any]], model: str) -> dict[str, Any]:
    a = span.attributes
    finish = a.get("gen_ai.response.finish_reasons")
    for index, choice in enumerate(choices):
        if choice.get("finish_reason") is None and isinstance(finish, list) and index < len(finish):
            choice["finish_reason"] = FINISH_REASONS.get(finish[index], finish[index])
    response: dict[str, Any] = {"id": a.get("gen_ai.response.id"), "object": "chat.completion",
                                "model": a.get("gen_ai.response.model") or model, "choices": choices}
    if (tokens := _usage(a)) is not None:
        response["usage"] = tokens
    return clean(response)


def _request(span: Span, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> dict[str, Any]:
    a = span.attributes
    request: dict[str, Any] = {"model": a.get("gen_ai.request.model") or a.get("gen_ai.response.model") or "unknown",
                               "messages": messages}
    if tools:
        request["tools"] = tools
    request.update(parameters(a, PARAMETERS))
    if "stop" in request and isinstance(request["stop"], tuple):
        request["stop"] = list(request["stop"])
    return request


# --- 1. span attributes (OpenLLMetry) --------------------------------------------------------

def _attribute_message(item: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": item.get("role") or "user", "content": content_of(item.get("content"))}
    calls = item.get("tool_calls")
    if isinstance(calls, list):
        message["tool_calls"] = [tool_call(c.get("id"), c.get("name"), c.get("arguments")) for c in calls
                                 if isinstance(c, dict)] or None
    if item.get("tool_call_id") is not None:
        message["tool_call_id"] = item["tool_call_id"]
    if message["role"] == "assistant" and message.get("tool_calls") and message["content"] in ("", None):
        message["content"] = None
    return clean(message) if message.get("content") is not None else {**clean(message), "content": None}


def _from_attributes(span: Span) -> LlmCall:
    a = span.attributes
    prompts = unflatten(a, "gen_ai.prompt") or []
    completions = unflatten(a, "gen_ai.completion") or []
    messages = [_attribute_message(p) for p in prompts if isinstance(p, dict)]
    choices = []
    for index, item in enumerate(c for c in completions if isinstance(c, dict)):
        message = _attribute_message({**item, "role": item.get("role") or "assistant"})
        choices.append({"index": index, "message": message, "finish_reason": item.get("finish_reason")})
    functions = unflatten(a, "llm.request.functions") or []
    tools = [t for t in (tool_spec(f) for f in functions if isinstance(f, dict)) if t]
    model = str(a.get("gen_ai.request.model") or "")
    return LlmCall("gen_ai.attributes", _request(span, messages, tools), _response(span, choices, model),
                   tools_known=bool(tools) or span.scope_name.startswith(RECORDS_TOOL_DEFINITIONS),
                   stream=a.get("llm.is_streaming") if isinstance(a.get("llm.is_streaming"), bool) else None)


# --- 2. events (opentelemetry-instrumentation-openai-v2) --------------------------------------

def _event_message(role: str, body: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": body.get("role") or role, "content": content_of(body.get("content"))}
    if (calls := openai_tool_calls(maybe_json(body.get("tool_calls")))) is not None:
        message["tool_calls"] = calls
    if role == "tool" and body.get("id") is not None:
        message["tool_call_id"] = body["id"]
    return {**clean(message), "content": message.get("content")}


def _from_events(span: Span) -> LlmCall:
    messages: list[dict[str, Any]] = []
    choices: list[dict[str, Any]] = []
    for event in span.events:
        body = event.attributes
        if event.name in MESSAGE_EVENTS:
            messages.append(_event_message(MESSAGE_EVENTS[event.name], body))
        elif event.name == "gen_ai.choice":
            message = maybe_json(body.get("message")) or {}
            choices.append({"index": int(body.get("index") or 0),
                            "message": _event_message("assistant", message if isinstance(message, dict) else {}),
                            "finish_reason": body.get("finish_reason")})
    choices.sort(key=lambda c: c["index"])
    model = str(span.attributes.get("gen_ai.request.model") or "")
    return LlmCall("gen_ai.events", _request(span, messages, None), _response(span, choices, model),
                   tools_known=False)


# --- 3. gen_ai.input.messages / gen_ai.output.messages ----------------------------------------

def _parts_message(item: dict[str, Any]) -> dict[str, Any]:
    role = item.get("role") or "user"
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    tool_call_id = None
    for part in item.get("parts") or []:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            texts.append(str(part.get("content") or ""))
        elif kind == "tool_call":
            calls.append(tool_call(part.get("id"), part.get("name"), part.get("arguments")))
        elif kind == "tool_call_response":
            tool_call_id = part.get("id")
            response = part.get("response")
            texts.append(response if isinstance(response, str) else json_text(response))
    content = "".join(texts) if texts else None
    message: dict[str, Any] = {"role": role, "content": None if calls and not content else content}
    if calls:
        message["tool_calls"] = calls
    if tool_call_id is not None:
        message["role"], message["tool_call_id"] = "tool", tool_call_id
    return message


def json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def json_list(value: Any, field: str) -> list[Any]:
    parsed = json_value(value, field)
    if parsed is None:
        return []
    if not isinstance(parsed, list):
        raise BrokenAttributeError(field, f"attribute '{field}' is not a JSON array of messages")
    return parsed


def _from_messages(span: Span) -> LlmCall:
    a = span.attributes
    inputs = json_list(a.get("gen_ai.input.messages", "[]"), "gen_ai.input.messages")
    outputs = json_list(a.get("gen_ai.output.messages", "[]"), "gen_ai.output.messages")
    system = json_value(a.get("gen_ai.system_instructions"), "gen_ai.system_instructions")
    messages: list[dict[str, Any]] = []
    if system:
        parts = system if isinstance(system, list) else [{"type": "text", "content": str(system)}]
        messages.append(_parts_message({"role": "system", "parts": parts}))
    messages += [_parts_message(m) for m in inputs if isinstance(m, dict)]
    choices = [{"index": i, "message": {**_parts_message({**m, "role": m.get("role") or "assistant"})},
                "finish_reason": FINISH_REASONS.get(m.get("finish_reason"), m.get("finish_reason"))}
               for i, m in enumerate(outputs) if isinstance(m, dict)]
    definitions = json_value(a.get("gen_ai.tool.definitions"), "gen_ai.tool.definitions")
    tools = [t for t in (tool_spec(d) for d in definitions or []) if t] if isinstance(definitions, list) else None
    model = str(a.get("gen_ai.request.model") or "")
    streaming = a.get("gen_ai.is_streaming", a.get("llm.is_streaming"))
    return LlmCall("gen_ai.messages", _request(span, messages, tools), _response(span, choices, model),
                   tools_known=definitions is not None or span.scope_name.startswith(RECORDS_TOOL_DEFINITIONS),
                   conversation_id=a.get("gen_ai.conversation.id"),
                   stream=streaming if isinstance(streaming, bool) else None)


def extract(span: Span) -> LlmCall | None:
    """The call the span records, or None when it recorded no content."""
    generation = _generation(span)
    if generation is None:
        return None
    call = {1: _from_attributes, 2: _from_events, 3: _from_messages}[generation](span)
    if call.conversation_id is None:
        call.conversation_id = span.attributes.get("gen_ai.conversation.id")
    return call
