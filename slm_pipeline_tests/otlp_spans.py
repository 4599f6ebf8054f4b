"""Hand-built OTLP/JSON requests for the decoder tests (the real instrumentations' spans are in
test_trace_instrumentations.py)."""

from __future__ import annotations

import itertools
from typing import Any

_ids = itertools.count(1)


def value(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, (list, tuple)):
        return {"arrayValue": {"values": [value(x) for x in v]}}
    if isinstance(v, dict):
        return {"kvlistValue": {"values": [{"key": k, "value": value(x)} for k, x in v.items()]}}
    return {"stringValue": str(v)}


def kv(attributes: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": value(v)} for k, v in attributes.items()]


def span(attributes: dict[str, Any], *, name: str = "chat gpt-4o", events: list[tuple[str, dict[str, Any]]] = (),
         status: int = 0, start: int = 1_760_000_000_000_000_000, duration_ns: int = 250_000_000) -> dict[str, Any]:
    n = next(_ids)
    return {"traceId": f"{n:032x}", "spanId": f"{n:016x}", "name": name, "kind": 3,
            "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + duration_ns),
            "attributes": kv(attributes), "status": {"code": status},
            "events": [{"name": e, "timeUnixNano": str(start), "attributes": kv(a)} for e, a in events]}


def request(*spans: dict[str, Any], service: str = "support-bot") -> dict[str, Any]:
    return {"resourceSpans": [{"resource": {"attributes": kv({"service.name": service})},
                               "scopeSpans": [{"scope": {"name": "test"}, "spans": list(spans)}]}]}


TOOL = {"type": "function", "function": {"name": "lookup_order", "description": "Find an order",
                                         "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}}}


def openllmetry(**extra: Any) -> dict[str, Any]:
    return {"gen_ai.system": "openai", "llm.request.type": "chat", "gen_ai.request.model": "gpt-4o",
            "gen_ai.request.temperature": 0.2, "gen_ai.prompt.0.role": "system", "gen_ai.prompt.0.content": "Be brief.",
            "gen_ai.prompt.1.role": "user", "gen_ai.prompt.1.content": "where is order 7?",
            "llm.request.functions.0.name": "lookup_order", "llm.request.functions.0.description": "Find an order",
            "llm.request.functions.0.parameters": '{"type": "object", "properties": {"id": {"type": "string"}}}',
            "gen_ai.response.id": "chatcmpl-1", "gen_ai.response.model": "gpt-4o-2024",
            "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.finish_reason": "tool_calls",
            "gen_ai.completion.0.tool_calls.0.id": "call_1", "gen_ai.completion.0.tool_calls.0.name": "lookup_order",
            "gen_ai.completion.0.tool_calls.0.arguments": '{"id": "7"}',
            "gen_ai.usage.prompt_tokens": 42, "gen_ai.usage.completion_tokens": 7, **extra}


def genai_events() -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    attributes = {"gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
                  "gen_ai.response.id": "chatcmpl-2", "gen_ai.response.finish_reasons": ["stop"],
                  "gen_ai.usage.input_tokens": 42, "gen_ai.usage.output_tokens": 7}
    events = [("gen_ai.system.message", {"gen_ai.system": "openai", "content": "Be brief."}),
              ("gen_ai.user.message", {"gen_ai.system": "openai", "content": "hello"}),
              ("gen_ai.choice", {"gen_ai.system": "openai", "index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "Hi."}})]
    return attributes, events


def genai_messages(**extra: Any) -> dict[str, Any]:
    return {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
            "gen_ai.conversation.id": "conv-9",
            "gen_ai.system_instructions": '[{"type": "text", "content": "Be brief."}]',
            "gen_ai.input.messages": '[{"role": "user", "parts": [{"type": "text", "content": "where is 7?"}]}]',
            "gen_ai.output.messages": '[{"role": "assistant", "finish_reason": "tool_call", "parts": [{"type": '
                                      '"tool_call", "id": "call_1", "name": "lookup_order", "arguments": {"id": "7"}}]}]',
            "gen_ai.tool.definitions": '[{"type": "function", "name": "lookup_order", "parameters": {"type": '
                                       '"object"}}]',
            "gen_ai.usage.input_tokens": 42, "gen_ai.usage.output_tokens": 7, **extra}


def openinference(**extra: Any) -> dict[str, Any]:
    return {"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o", "llm.system": "openai",
            "llm.invocation_parameters": '{"model": "gpt-4o", "temperature": 0.2}',
            "llm.input_messages.0.message.role": "user", "llm.input_messages.0.message.content": "where is 7?",
            "llm.tools.0.tool.json_schema": '{"type": "function", "function": {"name": "lookup_order", '
                                            '"parameters": {"type": "object"}}}',
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.tool_calls.0.tool_call.id": "call_1",
            "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "lookup_order",
            "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": '{"id": "7"}',
            "llm.token_count.prompt": 42, "llm.token_count.completion": 7, "session.id": "sess-1", **extra}
