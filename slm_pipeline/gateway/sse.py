"""Reassemble a streamed chat completion (server-sent events) into the response it stands for.

The gateway passes the upstream's bytes to the client unchanged and feeds the same bytes here, in
whatever pieces the network delivers them. `result()` is the non-streaming `chat.completion` the
stream is equivalent to: content and tool-call deltas concatenated per choice (tool calls by their
`index`), the last `finish_reason`, and `usage` when the client asked for it
(`stream_options.include_usage`). An `error` event mid-stream becomes the result.
"""

from __future__ import annotations

from typing import Any

import orjson


class StreamAssembler:
    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []  # `data:` lines of the event being read
        self.events = 0
        self.done = False  # saw `data: [DONE]`
        self.malformed = 0  # events that were not JSON
        self._head: dict[str, Any] = {}
        self._choices: dict[int, dict[str, Any]] = {}
        self._usage: dict[str, Any] | None = None
        self._error: dict[str, Any] | None = None

    # --- bytes -> events ----------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self._line(line.removesuffix(b"\r"))

    def close(self) -> None:
        """The stream ended: an event not followed by a blank line still counts."""
        if self._buffer:
            self._line(self._buffer.removesuffix(b"\r"))
            self._buffer = b""
        self._line(b"")

    def _line(self, line: bytes) -> None:
        if not line:
            if self._data:
                self._event(b"\n".join(self._data))
                self._data = []
        elif line.startswith(b"data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(b" ") else value)
        # comments (`:`), `event:`, `id:` and `retry:` lines carry nothing we keep

    def _event(self, data: bytes) -> None:
        self.events += 1
        if data.strip() == b"[DONE]":
            self.done = True
            return
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.malformed += 1
            return
        if isinstance(event, dict):
            self._chunk(event)

    # --- events -> response -------------------------------------------------------------

    def _chunk(self, event: dict[str, Any]) -> None:
        if isinstance(event.get("error"), dict):
            self._error = event
            return
        for key in ("id", "created", "model", "system_fingerprint", "service_tier"):
            if event.get(key) is not None:
                self._head.setdefault(key, event[key])
        if isinstance(event.get("usage"), dict):
            self._usage = event["usage"]
        for choice in event.get("choices") or []:
            if isinstance(choice, dict):
                self._choice(choice)

    def _choice(self, choice: dict[str, Any]) -> None:
        index = choice.get("index", 0)
        state = self._choices.setdefault(index, {"role": None, "content": [], "refusal": [], "tools": {},
                                                 "finish_reason": None, "logprobs": None})
        delta = choice.get("delta") or {}
        if delta.get("role"):
            state["role"] = delta["role"]
        if isinstance(delta.get("content"), str):
            state["content"].append(delta["content"])
        if isinstance(delta.get("refusal"), str):
            state["refusal"].append(delta["refusal"])
        for call in delta.get("tool_calls") or []:
            if not isinstance(call, dict):
                continue
            tool = state["tools"].setdefault(call.get("index", len(state["tools"])),
                                             {"id": None, "type": "function", "name": [], "arguments": []})
            if call.get("id"):
                tool["id"] = call["id"]
            if call.get("type"):
                tool["type"] = call["type"]
            function = call.get("function") or {}
            if isinstance(function.get("name"), str):
                tool["name"].append(function["name"])
            if isinstance(function.get("arguments"), str):
                tool["arguments"].append(function["arguments"])
        if choice.get("finish_reason") is not None:
            state["finish_reason"] = choice["finish_reason"]
        if choice.get("logprobs") is not None:
            state["logprobs"] = choice["logprobs"]

    def result(self) -> dict[str, Any]:
        if self._error is not None:
            return self._error
        response: dict[str, Any] = {"id": self._head.get("id"), "object": "chat.completion", **self._head}
        response["choices"] = [self._message(index, self._choices[index]) for index in sorted(self._choices)]
        if self._usage is not None:
            response["usage"] = self._usage
        return response

    @staticmethod
    def _message(index: int, state: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {"role": state["role"] or "assistant",
                                   "content": "".join(state["content"]) if state["content"] else None}
        if state["refusal"]:
            message["refusal"] = "".join(state["refusal"])
        if state["tools"]:
            message["tool_calls"] = [
                {"id": tool["id"], "type": tool["type"],
                 "function": {"name": "".join(tool["name"]), "arguments": "".join(tool["arguments"])}}
                for _, tool in sorted(state["tools"].items())
            ]
        choice = {"index": index, "message": message, "finish_reason": state["finish_reason"]}
        if state["logprobs"] is not None:
            choice["logprobs"] = state["logprobs"]
        return choice


def completion_events(completion: dict[str, Any]) -> bytes:
    """A finished chat completion as the event stream OpenAI would have sent for it (the SLM's
    answers are validated whole before the agent sees them, then streamed in one go)."""
    import json

    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    base = {"id": completion.get("id", "chatcmpl-slm"), "object": "chat.completion.chunk",
            "created": completion.get("created", 0), "model": completion.get("model", "")}
    delta: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
    if message.get("tool_calls"):
        delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
    chunks = [{**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
              {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": choice.get("finish_reason", "stop")}],
               **({"usage": completion["usage"]} if completion.get("usage") else {})}]
    return b"".join(f"data: {json.dumps(chunk)}\n\n".encode() for chunk in chunks) + b"data: [DONE]\n\n"
