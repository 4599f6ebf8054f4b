"""LiteLLM's `StandardLoggingPayload` (what its proxy hands every logging callback, and writes to its logs): one
payload a line, or wrapped as `{"standard_logging_object": {...}}`.

Read: `messages`, `model_parameters` (tools and sampling parameters), `response` (the model response as a
dict), `status`/`error_str`, `startTime`/`endTime` (epoch seconds), `model`, `id`, `trace_id`, `stream`, and the
agent from `metadata.user_api_key_alias` (else `end_user`, else `metadata.user_api_key_team_alias`).
"""

from __future__ import annotations

from typing import Any

from slm_pipeline.core.trace_formats.messages import LlmCall, maybe_json, usage

CHAT_CALL_TYPES = {"completion", "acompletion", "text_completion", "atext_completion"}


def unwrap(document: Any) -> Any:
    if isinstance(document, dict) and isinstance(document.get("standard_logging_object"), dict):
        return document["standard_logging_object"]
    return document


def is_payload(document: Any) -> bool:
    document = unwrap(document)
    return isinstance(document, dict) and "call_type" in document and "messages" in document \
        and ("model_parameters" in document or "response" in document)


def is_chat(payload: dict[str, Any]) -> bool:
    return str(payload.get("call_type") or "completion") in CHAT_CALL_TYPES


def agent_of(payload: dict[str, Any]) -> str | None:
    metadata = payload.get("metadata") or {}
    return metadata.get("user_api_key_alias") or payload.get("end_user") or metadata.get("user_api_key_team_alias") \
        or None


_LITELLM_ONLY = ("provider_specific_fields",)


def _openai_response(response: dict[str, Any]) -> dict[str, Any]:
    """LiteLLM's ModelResponse as OpenAI's completion: its own fields and unset (null) ones left out."""
    out = {k: v for k, v in response.items() if v is not None and k not in _LITELLM_ONLY}
    choices = []
    for choice in out.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        choice = {k: v for k, v in choice.items() if k not in _LITELLM_ONLY}
        if isinstance(choice.get("message"), dict):
            message = {k: v for k, v in choice["message"].items() if v is not None and k not in _LITELLM_ONLY}
            choice["message"] = {"content": None, **message}
        choices.append(choice)
    out["choices"] = choices
    return out


def extract(payload: dict[str, Any]) -> LlmCall | None:
    messages = maybe_json(payload.get("messages"))
    if not messages:
        return None
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    parameters = payload.get("model_parameters") or {}
    request: dict[str, Any] = {"model": payload.get("model") or payload.get("model_group") or "unknown",
                               "messages": messages}
    request.update({k: v for k, v in parameters.items() if k not in request and v is not None})
    response = maybe_json(payload.get("response"))
    if str(payload.get("status")) == "failure" or payload.get("error_str"):
        info = payload.get("error_information") or {}
        response = {"error": {"message": str(payload.get("error_str") or info.get("error_message") or "failed"),
                              "type": info.get("error_class") or "litellm_error", "code": info.get("error_code")}}
    elif not isinstance(response, dict):
        return None
    else:
        response = _openai_response(response)
        if response.get("usage") is None:
            tokens = usage(payload.get("prompt_tokens"), payload.get("completion_tokens"), payload.get("total_tokens"))
            if tokens is not None:
                response["usage"] = tokens
    return LlmCall("litellm", request, response, tools_known="tools" in parameters or "functions" in parameters,
                   conversation_id=(payload.get("metadata") or {}).get("session_id") or payload.get("trace_id"),
                   stream=payload.get("stream") if isinstance(payload.get("stream"), bool) else None)
