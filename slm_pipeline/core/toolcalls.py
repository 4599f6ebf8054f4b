"""The SLM's answer format, and turning its text back into an OpenAI-shaped answer.

A specialised SLM answers in one of three shapes, the same the teacher used:

- tool calls, each `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (the Hermes/Qwen
  convention most tool-calling SLMs already know);
- a JSON object, as compact JSON;
- plain text.

`render_answer` writes a teacher response in that format (the fine-tuning target);
`parse_answer` reads model output back, never raising: what it cannot read is `invalid`
with the reason, so the gateway can fall back to the LLM.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

_TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ParsedAnswer:
    kind: Literal["tool_call", "json", "text", "invalid"]
    tool_calls: list[ToolCall] = field(default_factory=list)
    value: Any = None  # the JSON object, or the text
    error: str | None = None


def _loads(text: str) -> Any:
    """`json.loads` for model output, raising JSONDecodeError too for what an agent could not use: NaN,
    Infinity and numbers out of range, integers past Python's 4,300 digits, nesting past the recursion
    limit, lone surrogate escapes (the answer could not be sent as UTF-8)."""
    try:
        value = json.loads(text)
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode()
    except json.JSONDecodeError:
        raise
    except (ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        reason = ("a lone surrogate escape" if isinstance(exc, UnicodeEncodeError) else
                  "nesting too deep" if isinstance(exc, RecursionError) else "NaN, Infinity or too long a number")
        raise json.JSONDecodeError(reason, text, 0) from None
    return value


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def teacher_answer(response: dict[str, Any]) -> ParsedAnswer:
    """The teacher's answer from an OpenAI chat-completion response."""
    choices = response.get("choices") or [{}]
    message = choices[0].get("message") or {}
    calls = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = _loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError:
                name = str(function.get("name"))[:64]  # the model's text: bounded in a reason that gets logged
                return ParsedAnswer("invalid", error=f"tool call {name!r} has arguments that are not JSON")
        calls.append(ToolCall(str(function.get("name")), arguments if isinstance(arguments, dict) else {}))
    if calls:
        return ParsedAnswer("tool_call", tool_calls=calls)
    content = message.get("content") or ""
    try:
        value = _loads(content)
    except (json.JSONDecodeError, TypeError):
        return ParsedAnswer("text", value=content)
    if isinstance(value, dict):
        return ParsedAnswer("json", value=value)
    return ParsedAnswer("text", value=content)


def render_answer(answer: ParsedAnswer) -> str:
    """The fine-tuning target for a teacher answer."""
    if answer.kind == "tool_call":
        return "".join(f"<tool_call>{_dumps({'name': c.name, 'arguments': c.arguments})}</tool_call>"
                       for c in answer.tool_calls)
    if answer.kind == "json":
        return _dumps(answer.value)
    return str(answer.value or "")


def parse_answer(text: str, expect: Literal["tool_call", "json", "text"] | None = None) -> ParsedAnswer:
    """Read model output; `expect` says which shape the task wants (None: whichever is there)."""
    text = text.strip()
    if "<tool_call>" in text or expect == "tool_call":
        blocks = _TOOL_CALL.findall(text)
        if not blocks:
            return ParsedAnswer("invalid", error="no <tool_call> block in the output")
        calls = []
        for i, block in enumerate(blocks):
            try:
                data = _loads(block)
            except json.JSONDecodeError as exc:
                return ParsedAnswer("invalid", error=f"tool call {i + 1} is not JSON ({exc.msg})")
            if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"]:
                return ParsedAnswer("invalid", error=f"tool call {i + 1} has no function name")
            arguments = data.get("arguments", {})
            if isinstance(arguments, str):
                try:
                    arguments = _loads(arguments)
                except json.JSONDecodeError:
                    return ParsedAnswer("invalid", error=f"tool call {i + 1} has arguments that are not JSON")
            if not isinstance(arguments, dict):
                return ParsedAnswer("invalid", error=f"tool call {i + 1} has arguments that are not an object")
            calls.append(ToolCall(data["name"], arguments))
        return ParsedAnswer("tool_call", tool_calls=calls)
    if expect == "json" or (expect is None and text.startswith("{")):
        try:
            value = _loads(text)
        except json.JSONDecodeError as exc:
            return ParsedAnswer("invalid", error=f"the output is not JSON ({exc.msg})")
        if not isinstance(value, dict):
            return ParsedAnswer("invalid", error="the output is JSON but not an object")
        return ParsedAnswer("json", value=value)
    return ParsedAnswer("text", value=text)


def to_openai_message(answer: ParsedAnswer, call_id_prefix: str = "call") -> dict[str, Any]:
    """An OpenAI assistant message for a parsed answer (what the gateway returns)."""
    if answer.kind == "tool_call":
        return {"role": "assistant", "content": None, "tool_calls": [
            {"id": f"{call_id_prefix}_{i}", "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
            for i, c in enumerate(answer.tool_calls)]}
    if answer.kind == "json":
        return {"role": "assistant", "content": json.dumps(answer.value, ensure_ascii=False)}
    return {"role": "assistant", "content": answer.value}


def canonical(value: Any) -> Any:
    """Values compared the way a tool would see them: 12 == 12.0, keys unordered, strings trimmed."""
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return round(float(value), 6) if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value.strip()
    return value


@dataclass(frozen=True)
class AnswerScore:
    valid: bool  # the output could be read in the task's shape
    name_match: bool  # same tool names in the same order (tool calls); same shape otherwise
    exact_match: bool  # names and arguments (tool calls), the object (JSON), the text


def score_answer(predicted: ParsedAnswer, reference: ParsedAnswer) -> AnswerScore:
    valid = predicted.kind == reference.kind
    if not valid:
        return AnswerScore(False, False, False)
    if reference.kind == "tool_call":
        names = [c.name for c in predicted.tool_calls] == [c.name for c in reference.tool_calls]
        exact = names and all(canonical(p.arguments) == canonical(r.arguments)
                              for p, r in zip(predicted.tool_calls, reference.tool_calls))
        return AnswerScore(True, names, exact)
    if reference.kind == "json":
        return AnswerScore(True, True, canonical(predicted.value) == canonical(reference.value))
    return AnswerScore(True, True, " ".join(str(predicted.value).split()) == " ".join(str(reference.value).split()))
