"""Generated text -> an OpenAI chat completion: tool calls parsed out, whole or as server-sent events.

The SLMs answer tool calls as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`
(`slm_pipeline.core.toolcalls`). When the request offers tools and the output holds a `<tool_call>`,
it is read as tool calls; otherwise as text (or as a JSON object when the request asks for one with
`response_format`). Output that cannot be read as what it tried to be is returned as text content,
and the completion carries a top-level `slm_parse_error` with the reason: the gateway takes that as
its cue to send the call to the LLM instead.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import orjson

from slm_pipeline.core.toolcalls import ParsedAnswer, parse_answer, to_openai_message

PARSE_ERROR_FIELD = "slm_parse_error"


def read_answer(text: str, *, tools: bool, json_mode: bool = False) -> tuple[ParsedAnswer, str | None]:
    """The answer to return for `text`, and why it could not be read as what it tried to be (None: it could)."""
    as_text = ParsedAnswer("text", value=text.strip())
    if "<tool_call>" in text and not tools:
        return as_text, "the model answered with a tool call but the request offers no tools"
    expect = "tool_call" if "<tool_call>" in text else "json" if json_mode else "text"
    answer = parse_answer(text, expect)
    if answer.kind == "invalid":
        return as_text, answer.error
    return answer, None


def chat_completion(model: str, text: str, *, tools: bool, json_mode: bool = False, finish_reason: str = "stop",
                    prompt_tokens: int = 0, completion_tokens: int = 0, completion_id: str | None = None,
                    created: int | None = None) -> dict[str, Any]:
    """The `chat.completion` object for generated `text`; `finish_reason` is the generation's (stop or
    length) and becomes `tool_calls` when the answer is tool calls."""
    answer, error = read_answer(text, tools=tools, json_mode=json_mode)
    completion_id = completion_id or f"chatcmpl-{secrets.token_hex(12)}"
    message = to_openai_message(answer, call_id_prefix=f"call_{completion_id.rsplit('-', 1)[-1][:12]}")
    body: dict[str, Any] = {
        "id": completion_id, "object": "chat.completion", "created": created or int(time.time()), "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": "tool_calls" if answer.kind == "tool_call" else finish_reason}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }
    if error is not None:
        body[PARSE_ERROR_FIELD] = error
    return body


def stream_events(completion: dict[str, Any], *, include_usage: bool = False) -> list[bytes]:
    """The completion as OpenAI's `chat.completion.chunk` events: the role, the content or the tool calls
    (one event each, arguments whole), the finish reason (with `slm_parse_error` when there is one),
    the usage when asked for (`stream_options.include_usage`), then `[DONE]`."""
    head = {"id": completion["id"], "object": "chat.completion.chunk", "created": completion["created"],
            "model": completion["model"]}
    choice = completion["choices"][0]
    message = choice["message"]
    calls = message.get("tool_calls")

    def event(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        return b"data: " + orjson.dumps({**head, "choices": choices, **extra}) + b"\n\n"

    events = [event({"role": "assistant", "content": None if calls else ""})]
    if calls:
        events += [event({"tool_calls": [{"index": i, **call}]}) for i, call in enumerate(calls)]
    elif message.get("content"):
        events.append(event({"content": message["content"]}))
    extra = {PARSE_ERROR_FIELD: completion[PARSE_ERROR_FIELD]} if PARSE_ERROR_FIELD in completion else {}
    events.append(event({}, choice["finish_reason"], **extra))
    if include_usage:
        events.append(event(None, usage=completion["usage"]))
    events.append(b"data: [DONE]\n\n")
    return events
