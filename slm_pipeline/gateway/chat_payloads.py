"""Chat payloads through the gateway, checked: a request's fields (or a 400 that says what is
wrong), and whether the upstream's answer is a chat completion or an error.

The rules are `core.records.ChatRequest` and `core.records.Response` (pydantic). Most payloads are
plainly valid, so a quick check in plain Python over orjson's parse comes first: it accepts only
what the pydantic model accepts too (tested against it, fault by fault), and anything it is not
sure of goes to pydantic, which then decides and words the error. That cuts the cost of the check
by more than half (benchmarks/RESULTS.md); the request's check is on every call's path, the
answer's in the call log's writer.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from slm_pipeline.core.records import ROLES, ChatRequest, ErrorResponse, describe_validation_error
from slm_pipeline.core.records import Response as _Response
from slm_pipeline.gateway.errors import bad_request

MAX_MODEL_CHARS = 256
_ROLES = frozenset(ROLES)


def _optional_str(value: Any) -> bool:
    return value is None or type(value) is str


def _optional_int(value: Any) -> bool:
    return value is None or type(value) is int


def _function_call(value: Any) -> bool:
    return (type(value) is dict and type(value.get("name")) is str
            and type(value.get("arguments", "")) in (str, dict))


def _tool_call(value: Any) -> bool:
    return (type(value) is dict and _optional_str(value.get("id")) and value.get("type", "function") == "function"
            and _function_call(value.get("function")))


def _message(value: Any) -> bool:
    if type(value) is not dict:
        return False
    role, content, calls = value.get("role"), value.get("content"), value.get("tool_calls")
    return (type(role) is str and role in _ROLES
            and (_optional_str(content) or (type(content) is list and all(type(part) is dict for part in content)))
            and _optional_str(value.get("name")) and _optional_str(value.get("tool_call_id"))
            and (calls is None or (type(calls) is list and all(_tool_call(call) for call in calls))))


def _tool(value: Any) -> bool:
    if type(value) is not dict or value.get("type", "function") != "function":
        return False
    function = value.get("function")
    return (type(function) is dict and type(function.get("name")) is str
            and _optional_str(function.get("description"))
            and (function.get("parameters") is None or type(function.get("parameters")) is dict))


def _choice(value: Any) -> bool:
    return (type(value) is dict and type(value.get("index", 0)) is int and _message(value.get("message"))
            and _optional_str(value.get("finish_reason")))


def _usage(value: Any) -> bool:
    return value is None or (type(value) is dict and _optional_int(value.get("prompt_tokens"))
                             and _optional_int(value.get("completion_tokens"))
                             and _optional_int(value.get("total_tokens")))


def _error(value: Any) -> bool:
    return (type(value) is dict and type(value.get("message")) is str and _optional_str(value.get("type"))
            and (value.get("code") is None or type(value.get("code")) in (str, int)))


def certainly_valid(body: bytes) -> dict[str, Any] | None:
    """The parsed body when it is a valid chat request by the quick check; None when the check is
    not sure (then `ChatRequest` decides)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict or type(data.get("model")) is not str:
        return None
    messages, tools, choice = data.get("messages"), data.get("tools"), data.get("tool_choice")
    if (type(messages) is list and messages and all(_message(message) for message in messages)
            and (tools is None or (type(tools) is list and all(_tool(tool) for tool in tools)))
            and (choice is None or type(choice) in (str, dict))):
        return data
    return None


def chat_fields(body: bytes) -> tuple[str, bool]:
    """The request's model and whether it asks for a stream; `GatewayError` (400) when it is not a
    valid chat request, saying where and what."""
    data = certainly_valid(body)
    if data is not None:
        model, stream = data["model"], data.get("stream") is True
    else:
        try:
            chat = ChatRequest.model_validate_json(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            if first["type"] == "json_invalid":
                raise bad_request(f"We could not parse the JSON body of your request: {first['msg']}.",
                                  "invalid_json") from None
            if not first["loc"]:
                raise bad_request("The request body must be a JSON object.", "invalid_json") from None
            _, where, message = describe_validation_error(exc)
            code = "missing_required_parameter" if first["type"] == "missing" else "invalid_value"
            raise bad_request(f"Invalid request: {message}.", code, where) from None
        model, stream = chat.model, (chat.model_extra or {}).get("stream") is True
    if len(model) > MAX_MODEL_CHARS:
        raise bad_request(f"Invalid request: 'model' is longer than {MAX_MODEL_CHARS} characters.", "invalid_value",
                          "model")
    return model, stream


_RESPONSE: TypeAdapter[Any] = TypeAdapter(_Response)


def certainly_a_response(body: bytes) -> str | None:
    """`"completion"` or `"error"` (OpenAI's error shape) when the upstream's body certainly is one
    by the quick check; None when the check is not sure."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict:
        return None
    if "error" in data:
        return "error" if _error(data["error"]) else None
    choices = data.get("choices")
    if (type(choices) is list and choices and all(_choice(choice) for choice in choices)
            and _optional_str(data.get("id")) and _optional_str(data.get("model")) and _usage(data.get("usage"))):
        return "completion"
    return None


def response_kind(response: bytes | dict[str, Any]) -> str:
    """`"completion"` or `"error"`: what the upstream answered (the body as it came, or what the
    gateway made of the answer). `ValidationError` when it is neither."""
    if isinstance(response, bytes):
        kind = certainly_a_response(response)
        if kind is not None:
            return kind
        parsed = _RESPONSE.validate_json(response)
    else:
        parsed = _RESPONSE.validate_python(response)
    return "error" if isinstance(parsed, ErrorResponse) else "completion"
