"""Helpers shared by the formats: OpenAI chat messages and tool calls out of loosely typed trace values."""

from __future__ import annotations

from typing import Any

import orjson


class BrokenAttributeError(ValueError):
    """An attribute that should hold JSON does not; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def json_value(value: Any, field: str) -> Any:
    """`value` parsed when it is a JSON string (trace attributes hold JSON as strings), else as is."""
    if not isinstance(value, str):
        return value
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise BrokenAttributeError(field, f"attribute '{field}' is not valid JSON: {exc}") from None


def maybe_json(value: Any) -> Any:
    """A string that is a JSON object or array, parsed; anything else as is."""
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def content_of(value: Any) -> Any:
    """Message content: a string, or a list of content parts (traces often store the list as JSON text)."""
    if isinstance(value, str) and value.startswith("[{"):
        parsed = maybe_json(value)
        if isinstance(parsed, list) and all(isinstance(p, dict) and "type" in p for p in parsed):
            return parsed
    return value


def arguments_text(value: Any) -> str:
    """Tool-call arguments as OpenAI sends them: a JSON string."""
    if value is None:
        return "{}"
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def tool_call(call_id: Any, name: Any, arguments: Any) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments_text(arguments)}}


def openai_tool_calls(calls: Any) -> list[dict[str, Any]] | None:
    """Tool calls in OpenAI's shape, from OpenAI's shape or a flat {id, name, arguments}."""
    if not isinstance(calls, list) or not calls:
        return None
    out = []
    for call in calls:
        if not isinstance(call, dict):
            continue
        function = call.get("function") if isinstance(call.get("function"), dict) else call
        out.append(tool_call(call.get("id"), function.get("name"), function.get("arguments")))
    return out or None


def tool_spec(value: Any) -> dict[str, Any] | None:
    """A tool definition in OpenAI's shape, from OpenAI's shape or a bare function {name, description,
    parameters}."""
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("function"), dict):
        function = dict(value["function"])
    elif "name" in value:
        function = {k: value[k] for k in ("name", "description", "parameters", "strict") if value.get(k) is not None}
    else:
        return None
    if isinstance(function.get("parameters"), str):
        function["parameters"] = maybe_json(function["parameters"])
    return {"type": "function", "function": function}


def clean(message: dict[str, Any]) -> dict[str, Any]:
    """A message without the keys that hold nothing (what OpenAI's client leaves out)."""
    return {k: v for k, v in message.items() if v is not None}


class LlmCall:
    """What one convention read out of a span (or a log document): the chat request and its answer.

    `request` is an OpenAI chat request (model, messages, tools when recorded, parameters); `response` an
    OpenAI chat completion, or an OpenAI error when the call failed; `tools_known` says whether the span recorded
    the tools offered (some instrumentations record messages only)."""

    __slots__ = ("convention", "request", "response", "tools_known", "conversation_id", "stream")

    def __init__(self, convention: str, request: dict[str, Any], response: dict[str, Any], *,
                 tools_known: bool = True, conversation_id: str | None = None, stream: bool | None = None) -> None:
        self.convention, self.request, self.response = convention, request, response
        self.tools_known, self.conversation_id, self.stream = tools_known, conversation_id, stream


def parameters(attributes: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """Request parameters {openai name: value} from the attributes that hold them."""
    return {name: attributes[key] for key, name in names.items() if attributes.get(key) is not None}


def usage(prompt: Any, completion: Any, total: Any = None) -> dict[str, Any] | None:
    if prompt is None and completion is None and total is None:
        return None
    if total is None and isinstance(prompt, int) and isinstance(completion, int):
        total = prompt + completion
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
