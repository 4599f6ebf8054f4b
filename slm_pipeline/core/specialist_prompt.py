"""The prompt a cluster's specialised SLM sees: built from the agent's request, the same way in training and serving.

Two forms, recorded in the cluster's dataset (`dataset.json` `prompt_form`) and in its route:

  compact  a short task instruction (the task, the answer's shape, and the tools the request
           offers among those the cluster calls, as signatures `name(arg: type, opt?: type = default)`
           with the first sentence of each description), then the conversation after the agent's
           system prompt, tool results marked `Tool result:`.
           A specialised SLM does not need the agent's whole system prompt or JSON schemas:
           the gateway routes only this task's calls to it.
  full     the agent's request as sent: its system prompt and its tools' JSON schemas, then
           the same conversation.

`SpecialistPrompt(form, instruction).messages(request)` is the one function the dataset
builder (`task_data`) and the SLM server (`serving/app.py`) call, so what the model was
trained on and what it is asked at serving time are the same tokens (tested).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from slm_pipeline.core.toolcalls import render_answer, teacher_answer

PromptForm = Literal["compact", "full"]
PROMPT_FORMS: tuple[str, ...] = ("compact", "full")
TOOL_RESULT = "Tool result: "


def first_sentence(text: str, limit: int = 160) -> str:
    """The first sentence of a description (at most `limit` characters)."""
    text = " ".join(str(text or "").split())
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    sentence = match.group(1) if match else text
    return sentence if len(sentence) <= limit else sentence[:limit - 1].rstrip() + "…"


# "Default is 'cm'.", "Defaults to 10", "default: true": a short value stated as the default, and nothing after it
_STATED_DEFAULT = re.compile(r"\bdefaults?(?: value)?(?: is| to|:)\s+(?:'([^']{1,30})'|\"([^\"]{1,30})\"|"
                             r"([\w.+-]{1,30}))\s*(?:[.;,)]|$)", re.IGNORECASE)


def stated_default(spec: dict[str, Any]) -> str | None:
    """An optional argument's default: the schema's `default`, or a short value its description states as one.
    The teacher fills such arguments with their defaults; a compact prompt that hid them would hide why."""
    if "default" in spec:
        return json.dumps(spec["default"], ensure_ascii=False)
    match = _STATED_DEFAULT.search(str(spec.get("description") or ""))
    return next((group for group in match.groups() if group), None) if match else None


def tool_signature(tool: dict[str, Any]) -> str:
    """`name(arg: type, optional?: type = default, choice: "a"|"b")`: a tool in a few tokens."""
    function = tool.get("function") or {}
    parameters = function.get("parameters") or {}
    required = set(parameters.get("required") or [])
    args = []
    for name, spec in (parameters.get("properties") or {}).items():
        spec = spec if isinstance(spec, dict) else {}
        kind = "|".join(json.dumps(v) for v in spec["enum"]) if spec.get("enum") else spec.get("type", "any")
        default = None if name in required else stated_default(spec)
        args.append(f"{name}{'' if name in required else '?'}: {kind}" + (f" = {default}" if default else ""))
    return f"{function.get('name')}({', '.join(args)})"


def tool_line(tool: dict[str, Any]) -> str:
    """A tool's signature and the first sentence of its description."""
    description = first_sentence((tool.get("function") or {}).get("description") or "")
    return tool_signature(tool) + (f" - {description}" if description else "")


def task_instruction(label: str, answer_kind: str, tools: list[dict[str, Any]]) -> str:
    """The task, the answer's shape, and (tool calls) the given tools, one line each."""
    head = instruction_head(label, answer_kind)
    if answer_kind == "tool_call":
        return head + "\n" + "\n".join(tool_line(t) for t in tools)
    return head


def instruction_head(label: str, answer_kind: str) -> str:
    """The compact form's fixed part: the task and the answer's shape (the tools follow, per request)."""
    if answer_kind == "tool_call":
        return f"Task: {label}. Answer with <tool_call> JSON for one of:"
    if answer_kind == "json":
        return f"Task: {label}.\nAnswer only with one JSON object."
    return f"Task: {label}.\nAnswer in plain text."


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content or "")


def conversation(request: dict[str, Any]) -> list[dict[str, str]]:
    """The messages after the system prompt, as plain role/content pairs any chat template accepts."""
    out: list[dict[str, str]] = []
    for message in request.get("messages") or []:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role in ("system", "developer"):
            continue
        if role == "assistant":
            content = render_answer(teacher_answer({"choices": [{"message": message}]}))
            out.append({"role": "assistant", "content": content})
        elif role == "tool":
            out.append({"role": "user", "content": TOOL_RESULT + _text(message.get("content"))})
        else:
            out.append({"role": "user", "content": _text(message.get("content"))})
    return out


def original_system(request: dict[str, Any]) -> str:
    """The agent's own system (or developer) prompt, or ''."""
    for message in request.get("messages") or []:
        if isinstance(message, dict) and message.get("role") in ("system", "developer"):
            return _text(message.get("content"))
    return ""


def full_system(request: dict[str, Any]) -> str:
    """The full form's system prompt: the agent's own, then the tools offered as sent (JSON schemas)."""
    system = original_system(request)
    tools = [t for t in request.get("tools") or [] if isinstance(t, dict)]
    if tools:
        schemas = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
        system = (system + "\n\n" if system else "") + f"You may call these tools:\n{schemas}"
    return system


@dataclass(frozen=True)
class SpecialistPrompt:
    """How one cluster's requests are shown to its SLM."""

    form: PromptForm = "compact"
    instruction: str = ""  # the compact form's fixed part (instruction_head); unused by `full`
    # The cluster's tools (the ones its answers call). The compact form lists those the request offers, as
    # signatures taken from the request itself; all offered ones when it offers none of them. Empty: no tool lines
    # (text and JSON tasks, and routes written before the tools were recorded, whose instruction lists them).
    tools: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.form not in PROMPT_FORMS:
            raise ValueError(f"prompt form {self.form!r} is not one of {', '.join(PROMPT_FORMS)}")

    def system(self, request: dict[str, Any]) -> str:
        if self.form == "full":
            return full_system(request)
        if not self.tools:
            return self.instruction
        offered = [t for t in request.get("tools") or [] if isinstance(t, dict)]
        known = [t for t in offered if (t.get("function") or {}).get("name") in self.tools]
        return "\n".join([self.instruction, *(tool_line(t) for t in known or offered)])

    def messages(self, request: dict[str, Any]) -> list[dict[str, str]]:
        """What the SLM sees for `request` (an OpenAI chat-completions payload), before its chat template."""
        return [{"role": "system", "content": self.system(request)}, *conversation(request)]
